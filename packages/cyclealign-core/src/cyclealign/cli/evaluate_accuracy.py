"""`cyclealign eval oracle-accuracy` (Figure 4, on a run's own candidates) and
`cyclealign eval human-pair-accuracy` (the fixed HH-RLHF pairs measurement).

Thin wrappers over ``run_accuracy.run_oracle_accuracy`` and
``pair_accuracy.eval_human_pair_accuracy``.  ``oracle-accuracy`` once measured the
fixed pairs; its old options now stop with a line naming the new command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cyclealign.cli.common import fail, guarded

MOVED = (
    "`eval oracle-accuracy` now measures the paper's Figure 4 on a run's own candidates "
    "(--run RUN --reward-model RM); the fixed human-labelled pairs measurement (--data/--mode/--at/--demos) "
    "is `cyclealign eval human-pair-accuracy` with the same options"
)


def oracle_accuracy_command(
    run: Annotated[Path | None, typer.Option("--run", help="A run directory (its interactions.jsonl).")] = None,
    reward_model: Annotated[
        Path | None, typer.Option("--reward-model", help="Local reward model directory: the reference order.")
    ] = None,
    reward_kind: Annotated[str, typer.Option("--reward-kind", help="classifier | oasst-pythia")] = "classifier",
    every: Annotated[int, typer.Option(help="Interactions per point of the curve (journal order).")] = 50,
    batch_size: Annotated[int, typer.Option(help="Candidates per scoring pass.")] = 8,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, …")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bfloat16 on GPU), float32, bfloat16, float16")] = "auto",
    out: Annotated[Path | None, typer.Option(help="Output folder (default: RUN/eval).")] = None,
    data: Annotated[str | None, typer.Option("--data", hidden=True)] = None,
    mode: Annotated[list[str] | None, typer.Option("--mode", hidden=True)] = None,
    at: Annotated[list[int] | None, typer.Option("--at", hidden=True)] = None,
    demos: Annotated[Path | None, typer.Option("--demos", hidden=True)] = None,
) -> None:
    """The oracle's ranking accuracy on a run's own candidates during training, against a reward model: Figure 4.

    Scores every recorded interaction's candidates with the reward model (no oracle call is made).

    The oracle is right on a pair when it ranked the higher-reward candidate first; one row per --every interactions.

    Writes RUN/eval/oracle_accuracy_training.{json,csv,md}; `cyclealign report A B C --out fig4` draws the curves.

    Example:

      cyclealign eval oracle-accuracy --run runs/x --reward-model /models/rm --reward-kind oasst-pythia --every 50
    """
    if run is None and (data or mode or at or demos):
        fail(MOVED)
    if run is None or reward_model is None:
        fail("give --run RUN and --reward-model RM (see --help); " + MOVED.split("; ")[1])
    from cyclealign.evaluate.run_accuracy import run_oracle_accuracy

    guarded(
        run_oracle_accuracy,
        run_dir=run,
        reward_model=reward_model,
        reward_kind=reward_kind,
        every=every,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        out_dir=out,
    )


def human_pair_accuracy_command(
    data: Annotated[
        str, typer.Option("--data", help="HH-RLHF folder (<subset>/<split>.jsonl.gz) or 'hub' (Anthropic/hh-rlhf).")
    ],
    mode: Annotated[
        list[str] | None, typer.Option("--mode", help="none | static | dynamic | dynamic@M (repeatable).")
    ] = None,
    at: Annotated[
        list[int] | None, typer.Option("--at", help="Also dynamic@M: only the run's first M demonstrations.")
    ] = None,
    demos: Annotated[Path | None, typer.Option(help="A run directory or its demos.jsonl (for dynamic).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config whose oracle and cycle sections are used.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="Config overrides, e.g. oracle.name=gpt-4.")
    ] = None,
    subset: Annotated[
        list[str] | None, typer.Option("--subset", help="Subset(s) to use (default: all present).")
    ] = None,
    split: Annotated[str, typer.Option(help="HH-RLHF split: test or train.")] = "test",
    k: Annotated[int, typer.Option("--k", help="Pairs sampled stratified across subsets.")] = 40,
    seed: int = 0,
    lenient: Annotated[bool, typer.Option(help="Skip (and count) malformed rows.")] = False,
    out: Path = Path("eval"),
) -> None:
    """How often the oracle ranks the human-chosen reply of fixed HH-RLHF pairs first, per demonstration setting.

    none: no ICL; static: the static demonstration only; dynamic: plus a run's demonstrations (--demos).

    A yardstick for oracles and demonstration settings, not the paper's Figure 4 (that is `eval oracle-accuracy`).

    Example:

      cyclealign eval human-pair-accuracy --data /data/hh-rlhf --k 200 --demos runs/x --config runs/x/config.yaml
    """
    from cyclealign.config import load_config
    from cyclealign.evaluate.pair_accuracy import eval_human_pair_accuracy

    cfg = guarded(load_config, path=config, overrides=set_ or [])
    modes = list(mode or ["none", "static", "dynamic"]) + [f"dynamic@{m}" for m in at or []]
    guarded(
        eval_human_pair_accuracy,
        data=data,
        oracle=cfg.oracle,
        modes=modes,
        demos=demos,
        cycle=cfg.cycle,
        subsets=subset,
        split=split,
        k=k,
        seed=seed,
        lenient=lenient,
        out_dir=out,
    )
