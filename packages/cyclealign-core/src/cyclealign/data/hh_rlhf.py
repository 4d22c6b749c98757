"""HH-RLHF: the four subsets, parsed into (context, chosen reply, rejected reply), filtered, sampled.

Each upstream row is ``{"chosen": str, "rejected": str}``, two dialogues of
``"\\n\\nHuman: …"`` / ``"\\n\\nAssistant: …"`` turns that share everything but
the last Assistant turn.  The filter follows the OpenAssistant reward-model data
code the paper cites, stated here as explicit rules, each counted in a report:

- ``unparsable``: the dialogue does not start with a Human turn, does not
  alternate Human/Assistant, or does not end with an Assistant turn;
- ``context_mismatch``: chosen and rejected differ before their last turn;
- ``empty_reply``: the chosen or the rejected final reply is empty;
- ``identical_replies``: the two final replies are the same (no preference).
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cyclealign.data.jsonl import DataError
from cyclealign.protocols import Message, Prompt

SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
HUB_ID = "Anthropic/hh-rlhf"
_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


@dataclass(frozen=True)
class HHExample:
    """One preference pair: the dialogue to answer, and the human-preferred and -rejected replies."""

    id: str
    subset: str
    prompt: Prompt
    chosen: str
    rejected: str
    source: str  # file:line


@dataclass
class FilterReport:
    """How many rows were read, kept, and dropped for which reason (per subset too)."""

    read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    malformed_skipped: int = 0
    per_subset: dict[str, Counter] = field(default_factory=dict)

    def add(self, subset: str, outcome: str) -> None:
        self.per_subset.setdefault(subset, Counter())[outcome] += 1

    def summary(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.dropped.items())) or "none"
        return f"read {self.read}, kept {self.kept}, dropped {sum(self.dropped.values())} ({reasons})"


def split_dialogue(text: str) -> list[tuple[str, str]] | None:
    """``[("Human", …), ("Assistant", …), …]`` or None when the text is not such a dialogue."""
    if not text.startswith("\n\nHuman:"):
        return None
    parts = _TURN.split(text)
    # parts: ["", role, content, role, content, ...]
    if parts[0].strip():
        return None
    turns = [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]
    expected = ("Human", "Assistant")
    if any(role != expected[i % 2] for i, (role, _) in enumerate(turns)):
        return None
    return turns


def parse_pair(chosen: str, rejected: str) -> tuple[list[tuple[str, str]], str, str] | str:
    """(context turns, chosen reply, rejected reply), or the name of the filter rule that drops the pair."""
    c, r = split_dialogue(chosen), split_dialogue(rejected)
    if c is None or r is None or len(c) < 2 or len(r) < 2 or c[-1][0] != "Assistant" or r[-1][0] != "Assistant":
        return "unparsable"
    if c[:-1] != r[:-1]:
        return "context_mismatch"
    if not c[-1][1] or not r[-1][1]:
        return "empty_reply"
    if c[-1][1] == r[-1][1]:
        return "identical_replies"
    return c[:-1], c[-1][1], r[-1][1]


def _prompt(pid: str, context: Sequence[tuple[str, str]]) -> Prompt:
    roles = {"Human": "user", "Assistant": "assistant"}
    return Prompt(pid, tuple(Message(roles[role], content) for role, content in context))


def _read_rows(path: Path, lenient: bool, report: FilterReport) -> Iterable[tuple[int, dict]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict) or not isinstance(row.get("chosen"), str):
                        raise ValueError('expected an object with string fields "chosen" and "rejected"')
                    if not isinstance(row.get("rejected"), str):
                        raise ValueError('expected an object with string fields "chosen" and "rejected"')
                except ValueError as e:
                    if lenient:
                        report.malformed_skipped += 1
                        continue
                    msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
                    raise DataError(f"{path}:{n}: {msg} (use lenient loading to skip such rows)") from None
                yield n, row
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot be read ({e})") from None


def load_hh_rlhf(
    root: str | Path,
    *,
    subsets: Sequence[str] = SUBSETS,
    split: str = "test",
    lenient: bool = False,
) -> tuple[list[HHExample], FilterReport]:
    """Examples from a folder laid out like the upstream repository: ``<subset>/<split>.jsonl.gz``.

    Subsets missing from the folder are skipped (the report lists what was read);
    none present is an error.  ``root="hub"`` loads from the Hugging Face hub instead.
    """
    report = FilterReport()
    examples: list[HHExample] = []
    if str(root) == "hub":
        return _load_from_hub(subsets, split, report)
    root = Path(root)
    found = False
    for subset in subsets:
        if subset not in SUBSETS:
            raise DataError(f"unknown HH-RLHF subset {subset!r}; known: {', '.join(SUBSETS)}")
        path = root / subset / f"{split}.jsonl.gz"
        if not path.exists():
            continue
        found = True
        for n, row in _read_rows(path, lenient, report):
            _add(examples, report, subset, f"{path}:{n}", f"{subset}-{split}-{n}", row["chosen"], row["rejected"])
    if not found:
        raise DataError(f"{root}: no HH-RLHF subset found (expected e.g. {root}/harmless-base/{split}.jsonl.gz)")
    return examples, report


def _add(examples: list, report: FilterReport, subset: str, source: str, pid: str, chosen: str, rejected: str):
    report.read += 1
    parsed = parse_pair(chosen, rejected)
    if isinstance(parsed, str):
        report.dropped[parsed] += 1
        report.add(subset, parsed)
        return
    context, good, bad = parsed
    examples.append(HHExample(pid, subset, _prompt(pid, context), good, bad, source))
    report.kept += 1
    report.add(subset, "kept")


def _load_from_hub(subsets: Sequence[str], split: str, report: FilterReport) -> tuple[list[HHExample], FilterReport]:
    try:
        from datasets import load_dataset
    except ImportError:
        raise DataError('loading HH-RLHF from the hub needs datasets: pip install "cyclealign-core[data]"') from None
    examples: list[HHExample] = []
    for subset in subsets:
        ds = load_dataset(HUB_ID, data_dir=subset, split=split)
        for n, row in enumerate(ds, 1):
            _add(
                examples,
                report,
                subset,
                f"{HUB_ID}/{subset}:{n}",
                f"{subset}-{split}-{n}",
                row["chosen"],
                row["rejected"],
            )
    return examples, report


def stratified_sample(examples: Sequence[HHExample], k: int | None, seed: int) -> list[HHExample]:
    """k examples spread evenly over the subsets present (seeded); the remainder goes to the largest."""
    if k is None or k >= len(examples):
        out = list(examples)
        random.Random(seed).shuffle(out)
        return out
    by_subset: dict[str, list[HHExample]] = {}
    for ex in examples:
        by_subset.setdefault(ex.subset, []).append(ex)
    rng = random.Random(seed)
    names = sorted(by_subset)
    quota = {s: min(len(by_subset[s]), k // len(names)) for s in names}
    left = k - sum(quota.values())
    for s in sorted(names, key=lambda s: -len(by_subset[s])):
        extra = min(left, len(by_subset[s]) - quota[s])
        quota[s] += extra
        left -= extra
    picked = [ex for s in names for ex in rng.sample(by_subset[s], quota[s])]
    rng.shuffle(picked)
    return picked


def hh_rlhf_prompts(root: str, k: int | None, seed: int, split: str = "train") -> list[Prompt]:
    """Training prompts (the contexts) for ``data.source = hh-rlhf:<dir>``."""
    examples, _ = load_hh_rlhf(root, split=split)
    return [ex.prompt for ex in stratified_sample(examples, k, seed)]
