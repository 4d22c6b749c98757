"""What every command shares: the consoles, and the one place where an error becomes one red line.

A user's mistake (any :class:`~cyclealign.errors.CycleAlignError`, a missing file
or extra, a bad value) exits with code 2 and a message naming what is wrong; a
bug still shows its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from cyclealign.errors import CycleAlignError
from cyclealign.oracle.secrets import redact

# ValueError: the loss package validates its hyperparameters without depending on core's errors.
USER_ERRORS: tuple[type[BaseException], ...] = (CycleAlignError, FileNotFoundError, ImportError, ValueError)

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """One red line (keys and credentials redacted), then exit ``code``."""
    message = redact(message)
    err_console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Call ``fn``; a user error becomes one red line and exit code 2, not a traceback."""
    try:
        return fn(**kwargs)
    except USER_ERRORS as e:
        fail(str(e))


def start_or_resume(
    command: str,
    *,
    config: Path | None,
    set_: list[str] | None,
    resume: Path | None,
    start: Callable[..., Any],
    resume_fn: Callable[..., Any],
    schema: Any = None,
) -> Any:
    """The body of `run`, `train` and `aligner train`: CONFIG (+ --set) starts a run, --resume (+ --set) continues one.

    Ctrl+C that gets past the run's own graceful stop exits 130 with the command that continues.
    """
    from cyclealign.config import Config, load_config

    if resume is not None and config is not None:
        fail("--resume continues a run with its own config.yaml; it takes no CONFIG")
    target = resume
    try:
        if resume is not None:  # --set: only what a resumed run may change (resume_changes.py)
            return guarded(resume_fn, run_dir=resume, console=console, changes=set_ or [])
        cfg = guarded(load_config, path=config, overrides=set_ or [], schema=schema or Config)
        target = cfg.run.dir
        return guarded(start, config=cfg, console=console)
    except KeyboardInterrupt:
        if target is not None and all((Path(target) / f).is_file() for f in ("run.json", "config.yaml")):
            print(f"aborted; the last checkpoint is intact: cyclealign {command} --resume {target}", file=sys.stderr)
        else:  # stopped before the run directory was made: there is nothing to resume
            print("aborted before the run started; nothing was written", file=sys.stderr)
        raise typer.Exit(130) from None
