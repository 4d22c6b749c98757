"""`cyclealign eval …`: reward-model scores, LLM-judge win rates, oracle ranking accuracy.

Thin wrappers: each command parses its options and calls the function of the same
name in ``cyclealign.evaluate.commands``; errors in the user's input exit with code 2
and one line naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cyclealign.config import Config, load_config
from cyclealign.errors import ConfigError

eval_app = typer.Typer(
    help="Evaluate as in the paper: reward-model scores (Table 1), LLM-judge win rates (Tables 2-3), "
    "oracle ranking accuracy (Figure 4, Table 4).",
    no_args_is_help=True,
)

DataOpt = Annotated[
    str, typer.Option("--data", help="HH-RLHF folder (<subset>/<split>.jsonl.gz) or 'hub' (Anthropic/hh-rlhf).")
]
SubsetOpt = Annotated[list[str] | None, typer.Option("--subset", help="Subset(s) to use (default: all present).")]
SplitOpt = Annotated[str, typer.Option(help="HH-RLHF split: test or train.")]
KOpt = Annotated[int, typer.Option("--k", help="Pairs sampled stratified across subsets (seeded by --seed).")]
RewardKOpt = Annotated[
    int | None,
    typer.Option(
        "--k",
        help="Score only a stratified subsample of K prompts (default: every row of each subset's split, as the "
        "paper's Table 1; the total still weighs subsets by their full split's size).",
    ),
]
LenientOpt = Annotated[bool, typer.Option(help="Skip (and count) malformed rows instead of stopping at the first.")]
ConfigOpt = Annotated[Path | None, typer.Option(help="YAML config whose oracle section is used (e.g. a run's).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Config overrides, e.g. oracle.name=gpt-4 or oracle.concurrency=4."),
]


def _config(config: Path | None, sets: list[str] | None) -> Config:
    try:
        return load_config(config, sets or [])
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from None


def _run(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Call an evaluation function; bad input becomes one red line and exit code 2, not a traceback."""
    from cyclealign.cli_common import guarded

    return guarded(fn, **kwargs)


@eval_app.command("reward")
def reward_command(
    reward_model: Annotated[Path, typer.Option("--reward-model", help="Local reward model directory.")],
    data: DataOpt,
    run: Annotated[Path | None, typer.Option("--run", help="A run directory (base model + trained weights).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Or a plain model directory (a baseline).")] = None,
    name: Annotated[str | None, typer.Option(help="System name in the table (default: run/model folder).")] = None,
    reward_kind: Annotated[str, typer.Option("--reward-kind", help="classifier | oasst-pythia")] = "classifier",
    subset: SubsetOpt = None,
    split: SplitOpt = "test",
    k: RewardKOpt = None,
    seed: int = 0,
    max_new_tokens: int = 128,
    batch_size: Annotated[int, typer.Option(help="Prompts per generate call and answers per scoring pass.")] = 8,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, …")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bfloat16 on GPU), float32, bfloat16, float16")] = "auto",
    prompt_format: Annotated[
        str | None,
        typer.Option(
            help="auto | chat_template | hh | alpaca (default: the run's whitebox.prompt_format, or auto: the "
            "chat template, else HH-RLHF turns with answers cut at an invented Human: turn).",
        ),
    ] = None,
    lenient: LenientOpt = False,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: RUN/eval, or ./eval).")] = None,
    table: Annotated[
        Path | None, typer.Option(help="Also merge this system's row into a shared table CSV (one row per system).")
    ] = None,
) -> None:
    """Generate answers on the test split and score them with a reward model: Table 1.

    Every test row is scored unless --k asks for a subsample; the total weighs each subset by
    its split's size, as the paper's Totals do, with the unweighted mean of subsets beside it.

    Example: cyclealign eval reward --model /models/llama-7b --reward-model /models/oasst-rm
    --reward-kind oasst-pythia --data /data/hh-rlhf --table eval/table1.csv
    """
    from cyclealign.evaluate.commands import eval_reward

    _run(
        eval_reward,
        data=data,
        reward_model=reward_model,
        reward_kind=reward_kind,
        run_dir=run,
        model=model,
        system=name,
        subsets=subset,
        split=split,
        k=k,
        seed=seed,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        prompt_format=prompt_format,
        lenient=lenient,
        out_dir=out,
        table=table,
    )


@eval_app.command("judge")
def judge_command(
    answers_a: Annotated[Path, typer.Argument(help="answers.jsonl of system A (from `eval reward`).")],
    answers_b: Annotated[Path, typer.Argument(help="answers.jsonl of system B.")],
    name_a: str = "A",
    name_b: str = "B",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    seed: int = 0,
    randomize: Annotated[bool, typer.Option(help="Randomise which answer is shown first (recommended).")] = True,
    max_tokens: Annotated[
        int,
        typer.Option(
            min=16,
            help="The judge's reply limit: its reasoning comes first, so too low a limit cuts verdicts off "
            "(counted as truncated). oracle.max_tokens stays the ranking's.",
        ),
    ] = 1024,
    out: Path = Path("eval"),
) -> None:
    """Pairwise LLM judge with a reasoning step, order randomised and mapped back: Table 2."""
    from cyclealign.evaluate.commands import eval_judge

    _run(
        eval_judge,
        answers_a=answers_a,
        answers_b=answers_b,
        oracle=_config(config, set_).oracle,
        name_a=name_a,
        name_b=name_b,
        seed=seed,
        randomize=randomize,
        max_tokens=max_tokens,
        out_dir=out,
    )


@eval_app.command("oracle-accuracy")
def oracle_accuracy_command(
    data: DataOpt,
    mode: Annotated[
        list[str] | None, typer.Option("--mode", help="none | static | dynamic | dynamic@M (repeatable).")
    ] = None,
    at: Annotated[
        list[int] | None,
        typer.Option("--at", help="Also dynamic@M: only the run's first M demonstrations (repeatable; Figure 4)."),
    ] = None,
    demos: Annotated[Path | None, typer.Option(help="A run directory or its demos.jsonl (for dynamic).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    subset: SubsetOpt = None,
    split: SplitOpt = "test",
    k: KOpt = 40,
    seed: int = 0,
    lenient: LenientOpt = False,
    out: Path = Path("eval"),
) -> None:
    """How often the oracle ranks the human-chosen reply first, per demonstration setting: Figure 4, Table 4."""
    from cyclealign.evaluate.commands import eval_oracle_accuracy

    cfg = _config(config, set_)
    modes = list(mode or ["none", "static", "dynamic"]) + [f"dynamic@{m}" for m in at or []]
    _run(
        eval_oracle_accuracy,
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
