"""`cyclealign eval …`: reward-model scores, LLM-judge win rates, oracle ranking accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cyclealign.config import ConfigError, load_config

eval_app = typer.Typer(help="Evaluate as in the paper: reward scores, LLM-judge win rates, oracle accuracy.")

DataOpt = Annotated[str, typer.Option("--data", help="HH-RLHF folder (<subset>/<split>.jsonl.gz) or 'hub'.")]
SubsetOpt = Annotated[list[str] | None, typer.Option("--subset", help="Subset(s) to use (default: all present).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Oracle/judge settings as oracle.key=value, e.g. oracle.name=gpt-4."),
]


def _oracle_config(config: Path | None, sets: list[str] | None):
    try:
        return load_config(config, sets or []).oracle
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from None


@eval_app.command("reward")
def reward_command(
    reward_model: Annotated[Path, typer.Option("--reward-model", help="Local reward model directory.")],
    data: DataOpt,
    run: Annotated[Path | None, typer.Option("--run", help="A run directory (base model + trained adapter).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Or a plain model directory.")] = None,
    reward_kind: Annotated[str, typer.Option("--reward-kind", help="classifier | oasst-pythia")] = "classifier",
    subset: SubsetOpt = None,
    split: Annotated[str, typer.Option(help="train or test")] = "test",
    k: Annotated[int, typer.Option("--k", help="Prompts sampled across subsets (the paper: 1000).")] = 40,
    seed: int = 0,
    max_new_tokens: int = 128,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: RUN/eval).")] = None,
) -> None:
    """Generate answers and score them with a reward model: Table 1 (mean 100·sigmoid per subset)."""
    from cyclealign.evaluate.commands import eval_reward

    eval_reward(
        data=data,
        reward_model=reward_model,
        reward_kind=reward_kind,
        run_dir=run,
        model=model,
        subsets=subset,
        split=split,
        k=k,
        seed=seed,
        max_new_tokens=max_new_tokens,
        out_dir=out,
    )


@eval_app.command("judge")
def judge_command(
    answers_a: Annotated[Path, typer.Argument(help="answers.jsonl of system A (from `eval reward`).")],
    answers_b: Annotated[Path, typer.Argument(help="answers.jsonl of system B.")],
    name_a: str = "A",
    name_b: str = "B",
    config: Annotated[Path | None, typer.Option(help="YAML config whose oracle section is the judge.")] = None,
    set_: SetOpt = None,
    seed: int = 0,
    randomize: Annotated[bool, typer.Option(help="Randomise which answer is shown first (recommended).")] = True,
    out: Path = Path("eval"),
) -> None:
    """Pairwise LLM judge with a reasoning step; order randomised and mapped back: Table 2."""
    from cyclealign.evaluate.commands import eval_judge

    eval_judge(
        answers_a=answers_a,
        answers_b=answers_b,
        oracle=_oracle_config(config, set_),
        name_a=name_a,
        name_b=name_b,
        seed=seed,
        randomize=randomize,
        out_dir=out,
    )


@eval_app.command("oracle-accuracy")
def oracle_accuracy_command(
    data: DataOpt,
    mode: Annotated[list[str] | None, typer.Option("--mode", help="none | static | dynamic (repeatable).")] = None,
    demos: Annotated[Path | None, typer.Option(help="A run directory or its demos.jsonl (for dynamic).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config whose oracle section is ranked.")] = None,
    set_: SetOpt = None,
    subset: SubsetOpt = None,
    split: str = "test",
    k: int = 40,
    seed: int = 0,
    out: Path = Path("eval"),
) -> None:
    """How often the oracle ranks the human-chosen reply first, per demonstration setting (Figure 4)."""
    from cyclealign.evaluate.commands import eval_oracle_accuracy

    eval_oracle_accuracy(
        data=data,
        oracle=_oracle_config(config, set_),
        modes=mode or ["none", "static", "dynamic"],
        demos=demos,
        subsets=subset,
        split=split,
        k=k,
        seed=seed,
        out_dir=out,
    )
