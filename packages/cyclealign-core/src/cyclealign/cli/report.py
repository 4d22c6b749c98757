"""`cyclealign report RUN [RUN …]`: one run's report, or several runs compared (one curve per run)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cyclealign.cli.common import console, guarded


def report_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories written by `cyclealign run`.")],
    out: Annotated[
        Path | None, typer.Option(help="With several runs: folder of the comparison page (default: ./report-compare).")
    ] = None,
) -> None:
    """Plot a run (agreement, oracle failures and cost, losses, eval tables) into PNGs and one HTML page.

    With several runs, OUT/compare.html also draws one curve per run (Figure 4: `eval oracle-accuracy --run`).

    Examples:

      cyclealign report runs/x

      cyclealign report runs/full runs/no-d2 runs/no-icl --out fig4
    """
    from cyclealign.report.page import write_report

    for run_dir in run_dirs:
        path = guarded(write_report, run_dir=run_dir)
        console.print(f"report written: {path} (PNGs and report.md beside it)", highlight=False, soft_wrap=True)
    if len(run_dirs) == 1 and out is not None:
        console.print("--out is for comparing several runs; one run's report stays in RUN/report", highlight=False)
    if len(run_dirs) > 1:
        from cyclealign.report.compare import write_comparison

        path = guarded(write_comparison, run_dirs=run_dirs, out=out or Path("report-compare"))
        console.print(f"comparison written: {path}", highlight=False, soft_wrap=True)
