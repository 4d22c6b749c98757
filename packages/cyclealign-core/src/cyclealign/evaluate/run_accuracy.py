"""The oracle's ranking accuracy on a run's own candidates, over training: the paper's Figure 4.

The paper checks the black-box oracle on the white-box model's responses as they
shift during training, but does not say what the oracle is checked against.  The
reading that can be reproduced: a reward model scores the candidates of every
recorded interaction, and the oracle is right on a pair of candidates when it puts
the one with the higher reward first.  Accuracy is correct pairs over compared
pairs (pairs the reward model scores equally are left out and counted as ties),
per interval of ``every`` interactions in the order the run made them.
Interactions whose oracle gave no ranking are counted as failures, not as wrong.

Everything is read from ``RUN/interactions.jsonl`` (``candidates`` and
``oracle.order``, candidate indices best first), so this costs no oracle call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from cyclealign.errors import ConfigError, RunDirError
from cyclealign.protocols import Message, Prompt

RESULT_NAME = "oracle_accuracy_training"
TITLE = "Oracle ranking accuracy on the run's own candidates, against a reward model (Figure 4)"
HEADER = ["interactions", "ranked", "oracle failures", "pairs", "correct", "tied", "accuracy %", "top-1 %"]
_TURN = re.compile(r"^(Human|Assistant|System): ", re.MULTILINE)
_ROLES = {"Human": "user", "Assistant": "assistant", "System": "system"}


@dataclass(frozen=True)
class Interval:
    """One interval of interactions (1-based positions in the run's journal, both ends included)."""

    start: int
    end: int
    ranked: int = 0
    failures: int = 0
    pairs: int = 0
    correct: int = 0
    tied: int = 0
    top1_correct: int = 0

    @property
    def accuracy(self) -> float | None:
        """Correct among compared pairs; None when no pair could be compared."""
        return self.correct / self.pairs if self.pairs else None

    @property
    def top1(self) -> float | None:
        """How often the oracle's best candidate is the reward model's best (unique maxima only)."""
        return self.top1_correct / self.ranked if self.ranked else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy": self.accuracy, "top1": self.top1}


def prompt_of(record: dict[str, Any]) -> Prompt:
    """The interaction's dialogue, rebuilt from the record's ``prompt`` text (``Prompt.text``'s layout)."""
    text = str(record.get("prompt", ""))
    cuts = list(_TURN.finditer(text))
    if not cuts or cuts[0].start() != 0:
        return Prompt.from_text(str(record.get("prompt_id", "")), text)
    messages = []
    for m, nxt in zip(cuts, [*cuts[1:], None], strict=True):
        body = text[m.end() : nxt.start() if nxt else len(text)].rstrip("\n")
        messages.append(Message(_ROLES[m.group(1)], body))
    return Prompt(id=str(record.get("prompt_id", "")), messages=tuple(messages))


def pair_outcomes(order: Sequence[int], scores: Sequence[float]) -> tuple[int, int, int]:
    """(compared, correct, tied) over all pairs of candidates, for an oracle order (best first)."""
    rank = {c: r for r, c in enumerate(order)}
    compared = correct = tied = 0
    for i, j in combinations(range(len(scores)), 2):
        if scores[i] == scores[j]:
            tied += 1
            continue
        compared += 1
        better, worse = (i, j) if scores[i] > scores[j] else (j, i)
        correct += rank[better] < rank[worse]
    return compared, correct, tied


def _checked(records: Sequence[dict[str, Any]], path: Path) -> list[tuple[list[str], list[int] | None]]:
    """(candidates, oracle order or None) per record; a record that cannot be read is named."""
    out = []
    for n, r in enumerate(records, 1):
        cands, oracle = r.get("candidates"), r.get("oracle")
        if not isinstance(cands, list) or not all(isinstance(c, str) for c in cands) or not isinstance(oracle, dict):
            raise RunDirError(f"{path}:{n}: an interaction record needs 'candidates' (texts) and 'oracle'")
        order = oracle.get("order")
        if order is not None and sorted(order) != list(range(len(cands))):
            raise RunDirError(f"{path}:{n}: oracle.order {order} is not a ranking of {len(cands)} candidates")
        out.append((cands, order))
    return out


def score_intervals(
    rows: Sequence[tuple[list[str], list[int] | None]], scores: Sequence[Sequence[float]], every: int
) -> list[Interval]:
    """Per-interval counts from each interaction's candidates, oracle order and reward scores."""
    if every < 1:
        raise ConfigError(f"--every must be at least 1, got {every}")
    intervals = []
    for start in range(0, len(rows), every):
        end = min(start + every, len(rows))
        counts = dict(ranked=0, failures=0, pairs=0, correct=0, tied=0, top1_correct=0)
        for (_, order), s in zip(rows[start:end], scores[start:end], strict=True):
            if order is None:
                counts["failures"] += 1
                continue
            compared, correct, tied = pair_outcomes(order, s)
            counts["ranked"] += 1
            counts["pairs"] += compared
            counts["correct"] += correct
            counts["tied"] += tied
            best = max(s)
            counts["top1_correct"] += sum(x == best for x in s) == 1 and s[order[0]] == best
        intervals.append(Interval(start + 1, end, **counts))
    return intervals


def total(intervals: Sequence[Interval]) -> Interval:
    fields = ("ranked", "failures", "pairs", "correct", "tied", "top1_correct")
    sums = {f: sum(getattr(i, f) for i in intervals) for f in fields}
    return Interval(1, intervals[-1].end if intervals else 0, **sums)


def table_rows(intervals: Sequence[Interval]) -> list[list[object]]:
    pct = lambda x: "" if x is None else round(100 * x, 1)  # noqa: E731
    rows: list[list[object]] = []
    for iv, label in [*((i, f"{i.start}-{i.end}") for i in intervals), (total(intervals), "total")]:
        rows.append([label, iv.ranked, iv.failures, iv.pairs, iv.correct, iv.tied, pct(iv.accuracy), pct(iv.top1)])
    return rows


def read_journal(run_dir: Path) -> tuple[list[dict[str, Any]], list[tuple[list[str], list[int] | None]]]:
    """A run's interactions and, for each, its candidates and the oracle's order (None: not ranked)."""
    from cyclealign.infra.store import read_jsonl

    journal = run_dir / "interactions.jsonl"
    if not journal.is_file():
        raise RunDirError(f"--run: {run_dir} has no interactions.jsonl (is it a run directory?)")
    records = read_jsonl(journal)
    if not records:
        raise RunDirError(f"--run: {journal} holds no interaction yet")
    return records, _checked(records, journal)


def score_candidates(
    scorer: Any,
    records: Sequence[dict[str, Any]],
    rows: Sequence[tuple[list[str], list[int] | None]],
    batch_size: int,
    console: Any,
) -> list[list[float]]:
    """Every interaction's candidates scored by the reward model, in large batches across interactions."""
    from rich.progress import track

    contexts = [prompt_of(r) for r, (cands, _) in zip(records, rows, strict=True) for _ in cands]
    answers = [c for cands, _ in rows for c in cands]
    flat: list[float] = []
    step = max(1, batch_size) * 8
    for i in track(range(0, len(answers), step), description="scoring candidates", console=console):
        flat += scorer.score(contexts[i : i + step], answers[i : i + step])
    scores, at = [], 0
    for cands, _ in rows:
        scores.append(flat[at : at + len(cands)])
        at += len(cands)
    return scores


def run_oracle_accuracy(
    *,
    run_dir: str | Path,
    reward_model: str | Path,
    reward_kind: str = "classifier",
    every: int = 50,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "auto",
    out_dir: Path | None = None,
    console: Any = None,
) -> dict[str, Any]:
    """Score every interaction's candidates with the reward model; write the per-interval table and JSON."""
    from rich.console import Console

    from cyclealign.evaluate.reward_model import RewardScorer
    from cyclealign.evaluate.tables import print_table, write_table
    from cyclealign.infra.store import atomic_write_json, atomic_write_jsonl

    console = console or Console()
    if every < 1:
        raise ConfigError(f"--every must be at least 1, got {every}")
    run_dir = Path(run_dir)
    records, rows = read_journal(run_dir)
    scorer = RewardScorer(reward_model, reward_kind, batch_size=batch_size, device=device, dtype=dtype)
    scores = score_candidates(scorer, records, rows, batch_size, console)
    intervals = score_intervals(rows, scores, every)
    out_dir = Path(out_dir or run_dir / "eval")
    result = {
        "run": run_dir.resolve().name,
        "reward_model": str(reward_model),
        "reward_kind": reward_kind,
        "every": every,
        "interactions": len(records),
        "intervals": [i.as_dict() for i in intervals],
        "total": total(intervals).as_dict(),
    }
    atomic_write_json(out_dir / f"{RESULT_NAME}.json", result)
    atomic_write_jsonl(
        out_dir / f"{RESULT_NAME}_items.jsonl",
        [
            {
                "position": n,
                "prompt_id": r.get("prompt_id"),
                "interaction": r.get("interaction"),
                "scores": s,
                "oracle_order": order,
            }
            for n, (r, (_, order), s) in enumerate(zip(records, rows, scores, strict=True), 1)
        ],
    )
    write_table(out_dir, RESULT_NAME, TITLE, HEADER, table_rows(intervals))
    print_table(console, TITLE, HEADER, table_rows(intervals))
    return {**result, "path": out_dir / f"{RESULT_NAME}.json"}


def load_curve(run_dir: str | Path) -> tuple[str, list[float], list[float]]:
    """(run name, interval ends, accuracy %) from a run's ``eval/oracle_accuracy_training.json``."""
    import json

    path = Path(run_dir) / "eval" / f"{RESULT_NAME}.json"
    if not path.is_file():
        raise RunDirError(
            f"{path}: missing; measure it first with `cyclealign eval oracle-accuracy --run {run_dir} "
            "--reward-model RM`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        points = [(float(i["end"]), 100 * i["accuracy"]) for i in data["intervals"] if i.get("accuracy") is not None]
    except (ValueError, KeyError, TypeError) as e:
        raise RunDirError(f"{path}: not an oracle-accuracy result ({e})") from None
    return str(data.get("run") or Path(run_dir).name), [p[0] for p in points], [p[1] for p in points]
