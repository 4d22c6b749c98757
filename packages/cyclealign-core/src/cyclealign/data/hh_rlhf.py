"""HH-RLHF: the four subsets, parsed into (context, chosen reply, rejected reply), filtered, sampled.

Each upstream row is ``{"chosen": str, "rejected": str}``: two dialogues of
``"\\n\\nHuman: …"`` / ``"\\n\\nAssistant: …"`` turns that should share everything
but the last Assistant turn.  The paper filters the data "referring to
OpenAssistant's code"; that code's rules are applied here as named, counted rules
(``FILTER_RULES``), followed by a few checks of our own that keep a pair usable as
an evaluation item.  docs/data.md lists them with the counts on the real data.
"""

from __future__ import annotations

import random
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cyclealign.errors import DataError
from cyclealign.jsonl import JsonlReader
from cyclealign.protocols import Message, Prompt

SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
HUB_ID = "Anthropic/hh-rlhf"
INSTALL_HINT = 'pip install "cyclealign-core[eval]" (or "cyclealign-core[data]" for loading only)'
_MARKER = re.compile(r"\n\n(Human|Assistant):")
ROLES = {"Human": "user", "Assistant": "assistant"}  # HH-RLHF speaker -> chat role

# Drop reasons, in the order they are checked: the first that applies is counted.
FILTER_RULES: dict[str, str] = {
    "no_assistant_turn": "OpenAssistant: a dialogue without any Assistant turn",
    "not_human_first": "OpenAssistant: a dialogue that does not open with a Human turn",
    "turn_count_mismatch": "OpenAssistant: chosen and rejected have different numbers of turns",
    "ends_with_human": "ours: the last turn is not the Assistant's, so there are no replies to compare",
    "context_mismatch": "ours: chosen and rejected differ before their last turn",
    "empty_reply": "ours: the chosen or the rejected reply is empty",
    "identical_replies": "ours: both replies are the same text, so there is no preference",
}


@dataclass(frozen=True)
class HHExample:
    """One preference pair: the dialogue to answer, and the human-preferred and -rejected replies."""

    id: str
    subset: str
    prompt: Prompt  # user/assistant messages, ending with the user's (Human's) turn
    chosen: str
    rejected: str
    source: str  # file:line (or hub id/subset:row)

    def render(self, tokenizer: Any) -> str:
        """The context through the white-box model's chat template, assistant turn opened."""
        from cyclealign.whitebox import render_prompt

        return render_prompt(tokenizer, self.prompt)


@dataclass
class FilterReport:
    """How many rows were read, kept, and dropped for which reason (per subset too)."""

    read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    merged_turns: int = 0  # kept or not: rows where consecutive same-speaker turns were joined
    malformed_skipped: int = 0
    per_subset: dict[str, Counter] = field(default_factory=dict)

    def add(self, subset: str, outcome: str) -> None:
        self.per_subset.setdefault(subset, Counter())[outcome] += 1

    def summary(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.dropped.items())) or "none"
        text = f"read {self.read}, kept {self.kept}, dropped {sum(self.dropped.values())} ({reasons})"
        if self.malformed_skipped:
            text += f", malformed rows skipped {self.malformed_skipped}"
        return text


def split_dialogue(text: str) -> tuple[list[tuple[str, str]], bool] | None:
    """``([("Human", …), ("Assistant", …), …], merged)``, or None when text precedes the first turn.

    A turn starts at a blank line followed by ``Human:`` or ``Assistant:``.  Paragraphs
    without such a tag stay inside the current turn (OpenAssistant's code drops them;
    we keep the words).  Consecutive turns of one speaker are joined, as
    OpenAssistant does, and ``merged`` says whether that happened.
    """
    parts = _MARKER.split(text)
    if parts[0].strip():
        return None
    turns: list[tuple[str, str]] = []
    merged = False
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        content = content.strip()
        if turns and turns[-1][0] == role:
            turns[-1] = (role, f"{turns[-1][1]}\n{content}".strip())
            merged = True
        else:
            turns.append((role, content))
    return turns, merged


def parse_pair(chosen: str, rejected: str) -> tuple[list[tuple[str, str]], str, str, bool] | str:
    """(context turns, chosen reply, rejected reply, merged), or the ``FILTER_RULES`` name that drops the pair."""
    c_split, r_split = split_dialogue(chosen), split_dialogue(rejected)
    if c_split is None or r_split is None:
        return "not_human_first"
    (c, c_merged), (r, r_merged) = c_split, r_split
    if not any(role == "Assistant" for role, _ in c) or not any(role == "Assistant" for role, _ in r):
        return "no_assistant_turn"
    if c[0][0] != "Human" or r[0][0] != "Human":
        return "not_human_first"
    if len(c) != len(r):
        return "turn_count_mismatch"
    if c[-1][0] != "Assistant":
        return "ends_with_human"
    if c[:-1] != r[:-1]:
        return "context_mismatch"
    if not c[-1][1] or not r[-1][1]:
        return "empty_reply"
    if c[-1][1] == r[-1][1]:
        return "identical_replies"
    return c[:-1], c[-1][1], r[-1][1], c_merged or r_merged


def _prompt(pid: str, context: Sequence[tuple[str, str]]) -> Prompt:
    return Prompt(pid, tuple(Message(ROLES[role], content) for role, content in context))


def dialogue_text(prompt: Prompt | str) -> str:
    """A dialogue in HH-RLHF's turn format (``Human: …`` / ``Assistant: …`` paragraphs, as ``split_dialogue`` reads).

    A single turn is its text alone.  This is the question as pair-input reward models
    and the judge see it, and as ``answers.jsonl`` stores it; the oracle's rendering of
    a prompt is ``Prompt.text``.
    """
    if isinstance(prompt, str):
        return prompt
    if len(prompt.messages) == 1:
        return prompt.messages[0].content
    return "\n\n".join(f"{'Human' if m.role == 'user' else 'Assistant'}: {m.content}" for m in prompt.messages)


def _read_rows(path: Path, lenient: bool, report: FilterReport) -> Iterable[tuple[int, dict]]:
    """Rows with their 1-based line numbers; a malformed row raises naming file:line, or is counted."""
    rows = JsonlReader(path, lenient=lenient, hint="lenient loading skips and counts such rows")
    for n, row in rows:
        if isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ("chosen", "rejected")):
            yield n, row
        else:
            rows.reject(n, 'expected an object with string fields "chosen" and "rejected"')
    report.malformed_skipped += rows.skipped


def load_hh_rlhf(
    root: str | Path,
    *,
    subsets: Sequence[str] = SUBSETS,
    split: str = "test",
    lenient: bool = False,
) -> tuple[list[HHExample], FilterReport]:
    """Filtered examples from a folder laid out like the upstream repository: ``<subset>/<split>.jsonl.gz``.

    Subsets missing from the folder are skipped (``report.per_subset`` shows what was
    read); none present is an error.  ``root="hub"`` loads ``Anthropic/hh-rlhf`` with
    ``datasets`` instead (online, or from its local cache).
    """
    for subset in subsets:
        if subset not in SUBSETS:
            raise DataError(f"unknown HH-RLHF subset {subset!r}; known: {', '.join(SUBSETS)}")
    if split not in ("train", "test"):
        raise DataError(f"HH-RLHF split must be train or test, got {split!r}")
    report = FilterReport()
    examples: list[HHExample] = []
    if str(root) == "hub":
        for subset in subsets:
            for n, row in enumerate(_hub_rows(subset, split), 1):
                _add(examples, report, subset, f"{HUB_ID}/{subset}/{split}:{n}", f"{subset}-{split}-{n}", row)
        return examples, report
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such HH-RLHF folder (expected <subset>/{split}.jsonl.gz inside, or 'hub')")
    found = False
    for subset in subsets:
        path = root / subset / f"{split}.jsonl.gz"
        if not path.exists():
            continue
        found = True
        for n, row in _read_rows(path, lenient, report):
            _add(examples, report, subset, f"{path}:{n}", f"{subset}-{split}-{n}", row)
    if not found:
        raise DataError(f"{root}: no HH-RLHF subset found (expected e.g. {root}/harmless-base/{split}.jsonl.gz)")
    return examples, report


def _add(examples: list[HHExample], report: FilterReport, subset: str, source: str, pid: str, row: dict) -> None:
    report.read += 1
    parsed = parse_pair(row["chosen"], row["rejected"])
    if isinstance(parsed, str):
        report.dropped[parsed] += 1
        report.add(subset, parsed)
        return
    context, good, bad, merged = parsed
    report.merged_turns += merged
    examples.append(HHExample(pid, subset, _prompt(pid, context), good, bad, source))
    report.kept += 1
    report.add(subset, "kept")


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError(f"this needs the datasets library: {INSTALL_HINT}") from None
    return datasets


def _hub_rows(subset: str, split: str) -> Iterable[dict]:
    """One subset of ``Anthropic/hh-rlhf`` through ``datasets`` (its cache works offline)."""
    try:
        return _datasets().load_dataset(HUB_ID, data_dir=subset, split=split)
    except DataError:
        raise
    except Exception as e:  # no network, no cache: say what to do instead
        raise DataError(
            f"{HUB_ID} ({subset}/{split}) could not be loaded from the hub ({type(e).__name__}: {e}); "
            "download the repository and pass its folder instead"
        ) from None


def to_dataset(examples: Sequence[HHExample]) -> Any:
    """The examples as a ``datasets.Dataset`` (columns id, subset, messages, chosen, rejected, source)."""
    return _datasets().Dataset.from_list(
        [
            {
                "id": ex.id,
                "subset": ex.subset,
                "messages": [{"role": m.role, "content": m.content} for m in ex.prompt.messages],
                "chosen": ex.chosen,
                "rejected": ex.rejected,
                "source": ex.source,
            }
            for ex in examples
        ]
    )


def stratified_sample(examples: Sequence[HHExample], k: int | None, seed: int) -> list[HHExample]:
    """k examples spread evenly over the subsets present (seeded); leftovers go to the larger subsets.

    The paper samples 1000 contexts "across the four subsets": 250 from each when all
    four have enough rows.  The result is shuffled (seeded), so any prefix is mixed too.
    """
    rng = random.Random(seed)
    if k is None or k >= len(examples):
        out = list(examples)
        rng.shuffle(out)
        return out
    by_subset: dict[str, list[HHExample]] = {}
    for ex in examples:
        by_subset.setdefault(ex.subset, []).append(ex)
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


def hh_rlhf_prompts(root: str, k: int | None, seed: int, split: str = "train", lenient: bool = False) -> list[Prompt]:
    """Training prompts (the contexts) for ``data.source = hh-rlhf:<dir>``; skipped rows are warned about."""
    examples, report = load_hh_rlhf(root, split=split, lenient=lenient)
    if report.malformed_skipped:
        warnings.warn(f"HH-RLHF {root} ({split}): {report.summary()}", stacklevel=2)
    return [ex.prompt for ex in stratified_sample(examples, k, seed)]
