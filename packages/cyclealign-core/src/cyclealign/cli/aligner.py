"""``cyclealign aligner …``: train a corrector, correct answers with it, export its corrections as preference data.

Each command is one function on ``aligner_app`` over one function of ``cyclealign.aligner``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from cyclealign.cli.common import console, guarded, start_or_resume

aligner_app = typer.Typer(
    help=(
        "Aligner: a corrector model that rewrites answers. Train one on (question, answer, correction) "
        "triples, correct answers with it, and turn its corrections into preference data for `cyclealign train`."
    ),
    no_args_is_help=True,
)


@aligner_app.command("train")
def train_command(
    config: Annotated[
        Path | None, typer.Argument(help="YAML with sections whitebox (the corrector), train, run and aligner.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override one key: section.key=value (repeatable), e.g. aligner.epochs=2."),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the training in this directory from its checkpoint.")
    ] = None,
) -> None:
    """Train a corrector on triples: an identity warm-up, then the corrections (loss on correction + EOS only).

    The corrector is saved as a Hugging Face directory with its prompt (default <run.dir>/corrector).

    Examples:

      cyclealign aligner train configs/aligner-example.yaml

      cyclealign aligner train --set "aligner.data=[triples.jsonl]" --set run.dir=runs/corrector

      cyclealign aligner train --resume runs/corrector
    """
    from cyclealign.aligner.settings import AlignerTrainConfig
    from cyclealign.api.trainers import AlignerTrainer, resume_run, run_config  # the command uses the object API

    result = start_or_resume(
        "aligner train",
        config=config,
        set_=set_,
        resume=resume,
        start=partial(run_config, trainer=AlignerTrainer),
        resume_fn=partial(resume_run, trainer=AlignerTrainer),
        schema=AlignerTrainConfig,
    )
    if result.totals.stopped:
        raise typer.Exit(130)
    console.print(f"corrector saved in {result.summary['corrector']}")


@aligner_app.command("export")
def export_command(
    corrections: Annotated[
        Path, typer.Argument(help="JSONL from `cyclealign aligner correct` (question, original, corrected).")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="JSONL to write, in TRL's prompt/chosen/rejected columns.")
    ],
    lenient: Annotated[bool, typer.Option(help="Skip (and count) malformed rows instead of stopping.")] = False,
) -> None:
    """Corrections as preference pairs: chosen = the correction, rejected = the original answer.

    The output trains with `cyclealign train` (Aligner's weak-to-strong bootstrap).

    Examples:

      cyclealign aligner export corrected.jsonl -o prefs.jsonl

      cyclealign train --set offline.source=prefs.jsonl --set loss.name=dpo
    """
    from cyclealign.aligner.preferences import export_preferences

    report = guarded(export_preferences, source=corrections, output=output, lenient=lenient)
    console.print(
        f"wrote {report.written} preference pairs to {report.output} "
        f"({report.read} rows read, {report.unchanged} unchanged left out, {report.skipped} malformed skipped)"
    )


@aligner_app.command("correct")
def correct_command(
    questions: Annotated[Path, typer.Argument(help="JSONL of questions: 'question' (or 'prompt') or 'messages'.")],
    corrector: Annotated[Path, typer.Option("--corrector", help="A corrector directory (aligner train).")],
    upstream: Annotated[
        str,
        typer.Option(
            "--upstream",
            help="The model whose answers are corrected: a litellm model string, a local model dir, "
            "or embedded:smollm2.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The corrected JSONL to write.")] = Path("corrected.jsonl"),
    api_base: Annotated[str | None, typer.Option(help="An OpenAI-compatible server for --upstream.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config whose oracle section the upstream uses.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Upstream call settings, e.g. oracle.concurrency=4, oracle.budget_usd=1."),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Length of each correction.")] = 256,
    upstream_max_new_tokens: Annotated[int, typer.Option(help="Length of each upstream answer.")] = 256,
    batch_size: Annotated[int, typer.Option(help="Answers per generate call (local models, the corrector).")] = 8,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, …")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16, float16")] = "auto",
    lenient: Annotated[bool, typer.Option(help="Skip (and count) malformed question rows.")] = False,
) -> None:
    """Answer each question with an upstream model, then rewrite the answer with the corrector (greedy).

    A chat upstream gets the oracle section's retries, concurrency, cache (upstream_cache.sqlite
    beside --out) and budget. The output has question, original and corrected per row: score it with
    `eval reward --answers OUT --column original|corrected`, judge it with `eval judge OUT`.

    Examples:

      cyclealign aligner correct questions.jsonl --corrector correctors/c1 --upstream gpt-3.5-turbo

      cyclealign aligner correct q.jsonl --corrector c1 --upstream openai/m --api-base http://127.0.0.1:8080/v1

      cyclealign aligner correct q.jsonl --corrector c1 --upstream models/base --out base-corrected.jsonl
    """
    from cyclealign.aligner.correct import correct_file
    from cyclealign.config import load_config

    oracle = guarded(load_config, path=config, overrides=set_ or []).oracle
    guarded(
        correct_file,
        questions=questions,
        corrector=corrector,
        upstream=upstream,
        out=out,
        oracle=oracle,
        api_base=api_base,
        max_new_tokens=max_new_tokens,
        upstream_max_new_tokens=upstream_max_new_tokens,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        lenient=lenient,
        console=console,
    )


@aligner_app.command("bootstrap")
def bootstrap_command(
    config: Annotated[
        Path | None,
        typer.Argument(help="YAML with sections whitebox (the first upstream), loss, train, offline, run, bootstrap."),
    ] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", "-k", help="Rounds (bootstrap.rounds).", min=1)] = None,
    upstream: Annotated[
        str | None,
        typer.Option("--upstream", help="The model of round 1 (whitebox.model): a model dir or embedded:smollm2."),
    ] = None,
    questions: Annotated[
        Path | None, typer.Option("--questions", help="Questions JSONL (bootstrap.questions).")
    ] = None,
    corrector: Annotated[
        Path | None, typer.Option("--corrector", help="Corrector directory (bootstrap.corrector).")
    ] = None,
    run_dir: Annotated[Path | None, typer.Option("--dir", help="The run directory (run.dir).")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-s", help="Override one key: section.key=value (repeatable), e.g. offline.max_steps=50."
        ),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue this bootstrap run (--rounds may raise its rounds).")
    ] = None,
) -> None:
    """Aligner's bootstrap, K rounds in one run: the model answers, the corrector rewrites, the model trains on it.

    Each round: `aligner correct` (the current model's answers, the fixed corrector's rewrites) → `aligner
    export` (chosen = rewrite, rejected = original) → `cyclealign train` (loss.name, dpo by default) → the
    model, merged, in round-K/model: the next upstream. A table of the answers the corrector changed and
    kept per round ends the run (and summary.md). --resume skips finished steps, redoes a cut-off one.

    Examples:

      cyclealign aligner bootstrap --rounds 3 --upstream embedded:smollm2 --questions q.jsonl \\
          --corrector runs/aligner-example/corrector --dir runs/bootstrap --set offline.max_steps=20

      cyclealign aligner bootstrap bootstrap.yaml --set whitebox.max_new_tokens=64

      cyclealign aligner bootstrap --resume runs/bootstrap --rounds 4     # continue, one round more
    """
    from cyclealign.aligner.bootstrap import BootstrapConfig, resume_bootstrap, run_bootstrap

    options = {"bootstrap.rounds": rounds, "whitebox.model": upstream, "bootstrap.questions": questions}
    options |= {"bootstrap.corrector": corrector, "run.dir": run_dir}
    overrides = [*(set_ or []), *(f"{key}={value}" for key, value in options.items() if value is not None)]
    result = start_or_resume(
        "aligner bootstrap",
        config=config,
        set_=overrides,
        resume=resume,
        start=run_bootstrap,
        resume_fn=resume_bootstrap,
        schema=BootstrapConfig,
    )
    if result.stopped:
        raise typer.Exit(130)
