"""The function behind `cyclealign run`: ``run(config)`` and ``resume(run_dir)``.

The parts are wired in :mod:`cyclealign.run.assembly`; the run's life (status,
checkpoints, resume, graceful stop, summary, callbacks) is
:class:`cyclealign.run.lifecycle.RunLifecycle` around the cycle's unit of work
(:class:`cyclealign.run.cycle_run.CycleWork`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from cyclealign.callbacks import Callback
from cyclealign.config import Config
from cyclealign.run.assembly import NO_PARTS, Parts
from cyclealign.run.cycle_run import cycle_lifecycle
from cyclealign.run.lifecycle import RunResult

__all__ = ["RunResult", "resume", "run"]


def run(
    config: Config,
    *,
    console: Console | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    parts: Parts = NO_PARTS,
) -> RunResult:
    """Run CycleAlign as configured; always saves what it has, and always stops the oracle.

    With ``resume=True`` the run directory must hold this run; it continues from
    its last checkpoint (prompt boundary) and ends exactly as an uninterrupted run.
    ``callbacks`` watch it (with the trackers of ``run.report_to``), in the first process; ``parts``:
    objects handed in from Python that replace what the config names (``cyclealign.api.CycleAlignTrainer``).
    """
    return cycle_lifecycle(config, parts, console=console, resume=resume, callbacks=callbacks).run()


def resume(
    run_dir: Path,
    *,
    console: Console | None = None,
    changes: list[str] | None = None,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Continue the run in ``run_dir`` with its own resolved config.

    ``changes`` (``KEY=VALUE``): the oracle's spending and pacing keys may change
    (e.g. a raised ``oracle.budget_usd``); they are recorded in run.json.
    """
    from cyclealign.run.resume_changes import CHANGEABLE, load_resumed

    config = load_resumed(Path(run_dir), list(changes or []), Config, command="cyclealign run", allowed=CHANGEABLE)
    return run(config, console=console, resume=True, callbacks=callbacks)
