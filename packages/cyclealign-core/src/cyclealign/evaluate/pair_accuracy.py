"""How often an oracle's ranking agrees with human labels on fixed HH-RLHF pairs (``eval human-pair-accuracy``).

This is not the paper's Figure 4, which checks the oracle on the white-box model's own,
shifting candidates during training (``evaluate/run_accuracy.py``); it is a fixed,
human-labelled yardstick for comparing demonstration settings and oracles.

Candidates are HH-RLHF chosen/rejected pairs, shown in a seeded random order; the
oracle is right when it ranks the human-chosen reply first.  Demonstration settings:

- ``none``: no demonstrations at all (the paper's "w/o ICL");
- ``static``: the static demonstration only ("w/o D2");
- ``dynamic``: static plus dynamic demonstrations from a run's ``demos.jsonl`` (the full method);
- ``dynamic@M``: the same, but only the first M demonstrations the run collected are
  available: the oracle's prompt as it was after M agreements.

Which dynamic demonstrations are shown follows the run's cycle settings
(``max_dynamic_demos``, ``demo_selection``, ``demo_token_budget``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from cyclealign.config import CycleConfig, OracleConfig
from cyclealign.data.hh_rlhf import HHExample
from cyclealign.errors import ConfigError, MissingPathError
from cyclealign.evaluate.tables import print_table, write_table
from cyclealign.infra.store import atomic_write_jsonl, atomic_write_text
from cyclealign.oracle.demos import DemoPool
from cyclealign.protocols import Demonstration, OracleRequest, OracleVerdict

MODES = ("none", "static", "dynamic")
RESULT_NAME = "human_pair_accuracy"


@dataclass(frozen=True)
class AccuracyResult:
    mode: str
    pairs: int
    valid: int
    correct: int
    failures: int

    @property
    def accuracy(self) -> float:
        """Correct among valid verdicts."""
        return self.correct / self.valid if self.valid else 0.0

    @property
    def accuracy_all(self) -> float:
        """Correct among all pairs: failures counted as wrong."""
        return self.correct / self.pairs if self.pairs else 0.0


def parse_mode(mode: str) -> tuple[str, int | None]:
    """``("dynamic", 100)`` for ``"dynamic@100"``; ``(mode, None)`` for the plain settings."""
    kind, at, upto = mode.partition("@")
    if kind not in MODES or (at and (kind != "dynamic" or not upto.isdigit())):
        raise ConfigError(f"--mode: {mode!r} is not one of {', '.join(MODES)} or dynamic@<count>")
    return kind, int(upto) if at else None


def build_requests(
    examples: Sequence[HHExample],
    mode: str,
    demos: Sequence[Demonstration],
    static: Demonstration,
    seed: int,
    cycle: CycleConfig | None = None,
) -> tuple[list[OracleRequest], list[int]]:
    """Requests and, for each, the shown position of the human-chosen reply.

    The shown order depends only on ``seed`` and the example's position, so every
    demonstration setting sees the same pairs in the same order: differences between
    settings are the demonstrations' doing.
    """
    kind, upto = parse_mode(mode)
    if kind == "dynamic" and not demos:
        raise ConfigError(f"--mode {mode} needs --demos pointing at a run's demos.jsonl with demonstrations in it")
    cycle = cycle or CycleConfig()
    pool = DemoPool(
        static,
        use_static=kind != "none",
        use_dynamic=kind == "dynamic",
        max_dynamic=cycle.max_dynamic_demos,
        selection=cycle.demo_selection,
        token_budget=cycle.demo_token_budget,
    )
    pool.extend(demos if upto is None else demos[:upto])
    rng = random.Random(seed)
    requests, chosen_at = [], []
    for ex in examples:
        chosen_first = rng.random() < 0.5
        responses = (ex.chosen, ex.rejected) if chosen_first else (ex.rejected, ex.chosen)
        requests.append(OracleRequest(ex.prompt.text, responses, pool.select(ex.prompt.text)))
        chosen_at.append(0 if chosen_first else 1)
    return requests, chosen_at


def score_verdicts(mode: str, verdicts: Sequence[OracleVerdict], chosen_at: Sequence[int]) -> AccuracyResult:
    """Count valid verdicts and those that put the human-chosen reply first."""
    valid = [(v, c) for v, c in zip(verdicts, chosen_at, strict=True) if v.ok]
    correct = sum(v.order[0] == c for v, c in valid)
    return AccuracyResult(mode, len(chosen_at), len(valid), correct, len(chosen_at) - len(valid))


def pair_accuracy(
    examples: Sequence[HHExample],
    oracle: Any,
    mode: str,
    demos: Sequence[Demonstration] = (),
    seed: int = 0,
    cycle: CycleConfig | None = None,
    static: Demonstration | None = None,
) -> tuple[AccuracyResult, list[dict[str, Any]]]:
    """The accuracy for one setting, and one record per pair (for inspection); ``static``: the built-in one."""
    from cyclealign.oracle.static_demo import load_static_demo

    requests, chosen_at = build_requests(examples, mode, demos, static or load_static_demo(None), seed, cycle)
    verdicts = oracle.rank_many(requests)
    records = [
        {
            "id": ex.id,
            "subset": ex.subset,
            "mode": mode,
            "chosen_shown_at": c,
            "order": list(v.order) if v.ok else None,
            "correct": bool(v.ok and v.order[0] == c),
            "error": v.error,
        }
        for ex, v, c in zip(examples, verdicts, chosen_at, strict=True)
    ]
    return score_verdicts(mode, verdicts, chosen_at), records


def load_demos_file(path: str | Path | None) -> list[Demonstration]:
    """Demonstrations from a run directory or its ``demos.jsonl``, in the order the run collected them."""
    if path is None:
        return []
    from cyclealign.infra.store import load_demos

    p = Path(path)
    if p.is_dir():
        p = p / "demos.jsonl"
    if not p.exists():
        raise MissingPathError(f"--demos: {p} does not exist")
    return load_demos(p)


def eval_human_pair_accuracy(
    *,
    data: str | Path,
    oracle: OracleConfig,
    modes: Sequence[str] = ("none", "static", "dynamic"),
    demos: str | Path | None = None,
    cycle: CycleConfig | None = None,
    subsets: Sequence[str] | None = None,
    split: str = "test",
    k: int | None = 40,
    seed: int = 0,
    lenient: bool = False,
    out_dir: Path = Path("eval"),
    console: Console | None = None,
) -> dict[str, Any]:
    """Oracle ranking accuracy against human labels on fixed HH-RLHF pairs, per demonstration setting.

    Modes that need dynamic demonstrations are left out (with a note) when ``demos`` has none.
    Writes ``human_pair_accuracy.{csv,md,json}`` and ``human_pair_accuracy_items.jsonl``.
    """
    from cyclealign.evaluate.sample import examples_and_sizes, open_oracle
    from cyclealign.oracle.static_demo import load_static_demo

    console = console or Console()
    for mode in modes:
        parse_mode(mode)  # bad modes fail before any data is read or call is paid
    static = load_static_demo(oracle.static_demo_file)  # oracle.static_demo_file, as in the run
    examples = examples_and_sizes(data, subsets, split, k, seed, lenient, console)[0]
    dynamic = load_demos_file(demos)
    kept = [m for m in modes if parse_mode(m)[0] != "dynamic" or dynamic]
    if len(kept) < len(modes):
        console.print("no dynamic demonstrations given (--demos): dynamic settings left out", highlight=False)
    out_dir = Path(out_dir)
    ranker = open_oracle(oracle, out_dir)
    results, records = [], []
    try:
        for mode in kept:
            with console.status(f"ranking {len(examples)} pairs ({mode} demonstrations)…"):
                result, items = pair_accuracy(examples, ranker, mode, dynamic, seed, cycle, static)
            results.append(result)
            records += items
    finally:
        ranker.close()
    title = "Oracle ranking accuracy against human labels on fixed HH-RLHF pairs"
    header = ["demonstrations", "pairs", "valid", "correct", "failures", "accuracy %", "accuracy (failures wrong) %"]
    rows = [
        [r.mode, r.pairs, r.valid, r.correct, r.failures, round(100 * r.accuracy, 1), round(100 * r.accuracy_all, 1)]
        for r in results
    ]
    write_table(out_dir, RESULT_NAME, title, header, rows)
    atomic_write_jsonl(out_dir / f"{RESULT_NAME}_items.jsonl", records)
    atomic_write_text(
        out_dir / f"{RESULT_NAME}.json",
        json.dumps([{**asdict(r), "accuracy": r.accuracy, "accuracy_all": r.accuracy_all} for r in results], indent=2),
    )
    print_table(console, title, header, rows)
    return {"header": header, "rows": rows, "results": results}
