"""``cyclealign aligner …``: train a corrector, and export its corrections as preference data.

Each command is one function on ``aligner_app`` over a Python function; a new
command (``correct``) is one more ``@aligner_app.command`` here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cyclealign.cli_common import console, fail, guarded

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
    from cyclealign.aligner.training import resume_corrector, train_corrector
    from cyclealign.config import load_config

    if resume is not None and (config is not None or set_):
        fail("--resume continues a run with its own config.yaml; it takes no CONFIG and no --set")
    target = resume
    try:
        if resume is not None:
            result = guarded(resume_corrector, run_dir=resume, console=console)
        else:
            cfg = guarded(load_config, path=config, overrides=set_ or [], schema=AlignerTrainConfig)
            target = cfg.run.dir
            result = guarded(train_corrector, config=cfg, console=console)
    except KeyboardInterrupt:
        print(f"aborted; the last checkpoint is intact: cyclealign aligner train --resume {target}", file=sys.stderr)
        raise typer.Exit(130) from None
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
    from cyclealign.aligner.export import export_preferences

    report = guarded(export_preferences, source=corrections, output=output, lenient=lenient)
    console.print(
        f"wrote {report.written} preference pairs to {report.output} "
        f"({report.read} rows read, {report.unchanged} unchanged left out, {report.skipped} malformed skipped)"
    )
