"""`cyclealign aligner …`: the corrector's commands (thin wrappers over ``cyclealign.aligner``)."""

from __future__ import annotations

import typer

from cyclealign.aligner.correct import correct_command

aligner_app = typer.Typer(
    help="Aligner: a small corrector model that rewrites another model's answers.", no_args_is_help=True
)
aligner_app.command("correct")(correct_command)
