"""`cyclealign export RUN_DIR...`: a thin typer wrapper over :func:`cyclealign.export.export_runs`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cyclealign.cli.common import console, guarded
from cyclealign.export import FORMATS, export_runs


def export_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories written by `cyclealign run`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("export"),
    format_: Annotated[
        list[str] | None, typer.Option("--format", "-f", help="trl, ranked or aligner (repeatable; default: all).")
    ] = None,
    pairs: Annotated[str, typer.Option(help="trl pairs: all (every ranked pair) or best-worst.")] = "all",
) -> None:
    """A run's rankings as preference data: TRL pairs, ranked lists, Aligner corrections.

    Each format is written as a `datasets` folder (datasets.load_from_disk) and as JSONL.

    Examples:

      cyclealign export runs/default --out export

      cyclealign export runs/a runs/b --format trl --pairs best-worst --out dpo-data
    """
    report = guarded(export_runs, run_dirs=run_dirs, out_dir=out, formats=format_ or FORMATS, pairs=pairs)
    counts = ", ".join(f"{fmt} {n} rows" for fmt, n in report.rows.items())
    dup = sum(report.duplicates.values())
    console.print(
        f"{report.ranked} of {report.interactions} interactions ranked by the oracle → {out}: {counts}"
        + (f" ({dup} duplicate rows left out)" if dup else ""),
        highlight=False,
        soft_wrap=True,
    )
