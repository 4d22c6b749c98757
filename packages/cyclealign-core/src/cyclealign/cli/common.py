"""What every command shares: the consoles, and the one place where an error becomes what the user sees.

A user's mistake (any :class:`~cyclealign.errors.CycleAlignError`) exits with code 2
and one red line naming what is wrong.  Anything else (a bare ``ValueError``,
``KeyError``, ``ImportError`` …) is a bug: its traceback is shown with a request
to report it, and the exit code is 1.  ``GuardedGroup`` puts every command of the
``cyclealign`` app behind :func:`guarded`, so no command can bypass it.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from cyclealign.errors import CycleAlignError
from cyclealign.oracle.secrets import redact

ISSUES = "the project's issue tracker"
BUG_REQUEST = f"this is a bug in cyclealign; please report it with the traceback above: {ISSUES}"

# the command line's own exits and usage errors (typer's and click's): not errors of ours
EXITS = (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException)

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """One red line (keys and credentials redacted), then exit ``code``."""
    message = redact(message)
    err_console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def report_bug(error: BaseException) -> NoReturn:
    """The traceback of an error no user caused, and the request to report it; exit code 1."""
    traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    err_console.print(f"[bold red]{escape(BUG_REQUEST)}[/bold red]", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def guarded(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Call ``fn``: a user error becomes one red line and exit code 2; any other error is reported as a bug."""
    try:
        return fn(**kwargs)
    except CycleAlignError as e:
        fail(str(e))
    except EXITS:
        raise
    except Exception as e:
        report_bug(e)


class GuardedGroup(TyperGroup):
    """The app's group: every command (sub-apps included) runs inside :func:`guarded`."""

    def invoke(self, ctx: click.Context) -> Any:
        return guarded(super().invoke, ctx=ctx)


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
