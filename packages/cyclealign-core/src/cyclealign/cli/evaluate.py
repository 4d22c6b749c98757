"""`cyclealign eval …`: reward-model scores, LLM-judge win rates, oracle ranking accuracy, human sheets.

Thin wrappers: each command parses its options and calls one function of
``cyclealign.evaluate`` (``eval reward`` → ``reward.eval_reward``, ``eval judge`` →
``judge.eval_judge``, ``eval generate`` → ``generate.eval_generate``); errors in the
user's input exit with code 2 and one line naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cyclealign.config import Config, load_config

eval_app = typer.Typer(
    help="Evaluate as in the paper: reward-model scores (Tables 1 and 4, Figure 5), LLM-judge win rates "
    "(Table 2), human evaluation sheets (Table 3), oracle ranking accuracy during training (Figure 4).",
    no_args_is_help=True,
)

DataOpt = Annotated[
    str, typer.Option("--data", help="HH-RLHF folder (<subset>/<split>.jsonl.gz) or 'hub' (Anthropic/hh-rlhf).")
]
ColumnOpt = Annotated[
    str | None,
    typer.Option("--column", help="Which answer of a corrected file (aligner correct): original or corrected."),
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
    """The config whose oracle section a command uses; a ConfigError goes to the app's one error boundary."""
    return load_config(config, sets or [])


def _sample_and_model(
    subset: list[str] | None,
    split: str,
    k: int | None,
    seed: int,
    lenient: bool,
    max_new_tokens: int,
    batch_size: int,
    device: str,
    dtype: str,
) -> dict[str, Any]:
    """What `eval reward` and `eval generate` share (the sample, the local model), named as their functions take it."""
    sample = {"subsets": subset, "split": split, "k": k, "seed": seed, "lenient": lenient}
    return {**sample, "max_new_tokens": max_new_tokens, "batch_size": batch_size, "device": device, "dtype": dtype}


def _run(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Call an evaluation function; bad input becomes one red line and exit code 2, not a traceback."""
    from cyclealign.cli.common import guarded

    return guarded(fn, **kwargs)


RewardModelOpt = Annotated[Path, typer.Option("--reward-model", help="Local reward model directory.")]
RewardDataOpt = Annotated[
    str | None,
    typer.Option("--data", help="HH-RLHF folder (<subset>/<split>.jsonl.gz) or 'hub'; not with --answers."),
]
AnswersOpt = Annotated[
    Path | None,
    typer.Option("--answers", help="Score this answers file instead (eval generate's, aligner correct's)."),
]
RunOpt = Annotated[Path | None, typer.Option("--run", help="A run directory (base model + trained weights).")]
BaselineOpt = Annotated[str | None, typer.Option("--model", help="Or a plain model directory (a baseline).")]
SystemOpt = Annotated[str | None, typer.Option(help="System name in the table (default: run/model folder).")]
RewardKindOpt = Annotated[str, typer.Option("--reward-kind", help="classifier | oasst-pythia")]
RewardBatchOpt = Annotated[int, typer.Option(help="Prompts per generate call and answers per scoring pass.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, …")]
RewardDtypeOpt = Annotated[str, typer.Option(help="auto (bfloat16 on GPU), float32, bfloat16, float16")]
PromptFormatOpt = Annotated[
    str | None,
    typer.Option(
        help="auto | chat_template | hh | alpaca (default: the run's whitebox.prompt_format, or auto: the "
        "chat template, else HH-RLHF turns with answers cut at an invented Human: turn).",
    ),
]
RewardOutOpt = Annotated[Path | None, typer.Option(help="Output folder (default: RUN/eval, or ./eval).")]
TableOpt = Annotated[
    Path | None, typer.Option(help="Also merge this system's row into a shared table CSV (one row per system).")
]
REWARD_HELP = """Generate answers on the test split and score them with a reward model: Table 1.

    Every test row is scored unless --k asks for a subsample; the total weighs each subset by
    its split's size, as the paper's Totals do, with the unweighted mean of subsets beside it.

    Examples:

      cyclealign eval reward --reward-model rm/ --data ../shared/data/hh-rlhf --run runs/default

      cyclealign eval reward --model /models/llama-7b --reward-model /models/oasst-rm --reward-kind oasst-pythia
      --data /data/hh-rlhf --table eval/table1.csv

      cyclealign eval reward --reward-model rm/ --answers eval/gpt-3.5-turbo/answers.jsonl

      cyclealign eval reward --reward-model rm/ --answers corrected.jsonl --column original

      cyclealign eval reward --reward-model rm/ --answers corrected.jsonl --column corrected
    """


@eval_app.command("reward", help=REWARD_HELP)
def reward_command(
    reward_model: RewardModelOpt,
    data: RewardDataOpt = None,
    answers: AnswersOpt = None,
    column: ColumnOpt = None,
    run: RunOpt = None,
    model: BaselineOpt = None,
    name: SystemOpt = None,
    reward_kind: RewardKindOpt = "classifier",
    subset: SubsetOpt = None,
    split: SplitOpt = "test",
    k: RewardKOpt = None,
    seed: int = 0,
    max_new_tokens: int = 128,
    batch_size: RewardBatchOpt = 8,
    device: DeviceOpt = "auto",
    dtype: RewardDtypeOpt = "auto",
    prompt_format: PromptFormatOpt = None,
    lenient: LenientOpt = False,
    out: RewardOutOpt = None,
    table: TableOpt = None,
) -> None:
    from cyclealign.evaluate.reward import eval_reward

    _run(
        eval_reward,
        answers_file=answers,
        column=column,
        data=data,
        reward_model=reward_model,
        reward_kind=reward_kind,
        run_dir=run,
        model=model,
        system=name,
        **_sample_and_model(subset, split, k, seed, lenient, max_new_tokens, batch_size, device, dtype),
        prompt_format=prompt_format,
        out_dir=out,
        table=table,
    )


@eval_app.command("judge")
def judge_command(
    answers_a: Annotated[Path, typer.Argument(help="answers.jsonl of system A (from `eval reward`).")],
    answers_b: Annotated[
        Path | None,
        typer.Argument(help="answers.jsonl of system B (omit: A is a corrected file, original vs corrected)."),
    ] = None,
    name_a: str = "A",
    name_b: str = "B",
    column_a: ColumnOpt = None,
    column_b: Annotated[
        str | None, typer.Option("--column-b", help="Which answer of B, when a corrected file.")
    ] = None,
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
    """Pairwise LLM judge with a reasoning step, order randomised and mapped back: Table 2.

    Examples:

      cyclealign eval judge runs/a/eval/answers.jsonl eval/gpt-3.5-turbo/answers.jsonl --set oracle.name=gpt-4

      cyclealign eval judge corrected.jsonl --set oracle.name=gpt-4     # upstream vs upstream + corrector
    """
    from cyclealign.evaluate.judge import eval_judge

    _run(
        eval_judge,
        answers_a=answers_a,
        answers_b=answers_b,
        column_a=column_a,
        column_b=column_b,
        oracle=_config(config, set_).oracle,
        name_a=name_a,
        name_b=name_b,
        seed=seed,
        randomize=randomize,
        max_tokens=max_tokens,
        out_dir=out,
    )


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        help="A litellm model string (gpt-3.5-turbo, openai/NAME at --api-base) or a local model or run directory.",
    ),
]
ApiBaseOpt = Annotated[str | None, typer.Option(help="An OpenAI-compatible server for --model (no key needed).")]
GenerateKOpt = Annotated[
    int | None,
    typer.Option(
        "--k",
        help="Answer only a stratified subsample of K prompts, as `eval reward --k` draws it (default: every row).",
    ),
]


@eval_app.command("generate")
def generate_command(
    model: ModelOpt,
    data: DataOpt,
    api_base: ApiBaseOpt = None,
    name: Annotated[str | None, typer.Option(help="System name (default: the model's last path part).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    subset: SubsetOpt = None,
    split: SplitOpt = "test",
    k: GenerateKOpt = None,
    seed: int = 0,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length (a chat model: its max_tokens).")] = 128,
    batch_size: Annotated[int, typer.Option(help="Prompts per generate call (local models).")] = 8,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, … (local models)")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16, float16 (local models)")] = "auto",
    lenient: LenientOpt = False,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: eval/NAME).")] = None,
) -> None:
    """Answers to the evaluation sample from any model, for the zero-shot rows (ChatGPT, ChatGLM).

    A chat model gets the oracle section's retries, concurrency, cache and budget (--set oracle.…).
    Score the file with `eval reward --answers`, compare it with `eval judge`.

    Examples:

      cyclealign eval generate --model gpt-3.5-turbo --data ../shared/data/hh-rlhf --set oracle.budget_usd=2

      cyclealign eval generate --model openai/chatglm --api-base http://127.0.0.1:8000/v1 --data ../shared/data/hh-rlhf

      cyclealign eval generate --model models/base --data ../shared/data/hh-rlhf --name base
    """
    from cyclealign.evaluate.generate import eval_generate

    _run(
        eval_generate,
        data=data,
        model=model,
        oracle=_config(config, set_).oracle,
        api_base=api_base,
        system=name,
        **_sample_and_model(subset, split, k, seed, lenient, max_new_tokens, batch_size, device, dtype),
        out_dir=out,
    )


# Figure 4 (a run's own candidates), the fixed human-pairs yardstick, and the human evaluation sheets (Table 3)
from cyclealign.cli.evaluate_accuracy import human_pair_accuracy_command, oracle_accuracy_command  # noqa: E402
from cyclealign.cli.evaluate_human import human_app  # noqa: E402

eval_app.command("oracle-accuracy")(oracle_accuracy_command)
eval_app.command("human-pair-accuracy")(human_pair_accuracy_command)
eval_app.add_typer(human_app, name="human")
