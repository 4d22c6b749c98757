"""How often an oracle's ranking agrees with human labels (the paper's Figure 4 / Table 4 axes).

Candidates are HH-RLHF chosen/rejected pairs, shown in a seeded random order; the
oracle is right when it ranks the human-chosen reply first.  Three settings:
``none`` (no demonstrations: "w/o ICL"), ``static`` (the static demonstration only:
"w/o D2") and ``dynamic`` (static plus dynamic demonstrations from a run's demos.jsonl).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cyclealign.data.hh_rlhf import HHExample
from cyclealign.demos import DemoPool
from cyclealign.protocols import Demonstration, OracleRequest

MODES = ("none", "static", "dynamic")


@dataclass(frozen=True)
class AccuracyResult:
    mode: str
    pairs: int
    valid: int
    correct: int
    failures: int

    @property
    def accuracy(self) -> float:
        """Among valid verdicts."""
        return self.correct / self.valid if self.valid else 0.0

    @property
    def accuracy_all(self) -> float:
        """Failures counted as wrong."""
        return self.correct / self.pairs if self.pairs else 0.0


def build_requests(
    examples: Sequence[HHExample],
    mode: str,
    demos: Sequence[Demonstration],
    static: Demonstration,
    seed: int,
    max_dynamic: int = 3,
) -> tuple[list[OracleRequest], list[int]]:
    """Requests and, for each, the shown position of the human-chosen reply."""
    if mode not in MODES:
        raise ValueError(f"--mode: {mode!r} is not one of {', '.join(MODES)}")
    if mode == "dynamic" and not demos:
        raise ValueError("--mode dynamic needs --demos pointing at a run's demos.jsonl with at least one demonstration")
    pool = DemoPool(static, use_static=mode != "none", use_dynamic=mode == "dynamic", max_dynamic=max_dynamic)
    pool.extend(demos)
    rng = random.Random(seed)
    requests, chosen_at = [], []
    for ex in examples:
        chosen_first = rng.random() < 0.5
        responses = (ex.chosen, ex.rejected) if chosen_first else (ex.rejected, ex.chosen)
        requests.append(OracleRequest(ex.prompt.text, responses, pool.select(ex.prompt.text)))
        chosen_at.append(0 if chosen_first else 1)
    return requests, chosen_at


def oracle_accuracy(
    examples: Sequence[HHExample], oracle: Any, mode: str, demos: Sequence[Demonstration] = (), seed: int = 0
) -> AccuracyResult:
    from cyclealign.prompts import STATIC_DEMONSTRATION

    requests, chosen_at = build_requests(examples, mode, demos, STATIC_DEMONSTRATION, seed)
    verdicts = oracle.rank_many(requests)
    valid = [(v, c) for v, c in zip(verdicts, chosen_at, strict=True) if v.ok]
    correct = sum(v.order[0] == c for v, c in valid)
    return AccuracyResult(mode, len(requests), len(valid), correct, len(requests) - len(valid))


def load_demos_file(path: str | Path | None) -> list[Demonstration]:
    if path is None:
        return []
    from cyclealign.store import load_demos

    p = Path(path)
    if p.is_dir():
        p = p / "demos.jsonl"
    if not p.exists():
        raise FileNotFoundError(f"--demos: {p} does not exist")
    return load_demos(p)
