"""What every command shares: the consoles, and the one place where an error becomes one red line.

A user's mistake (any :class:`~cyclealign.errors.CycleAlignError`, a missing file
or extra, a bad value) exits with code 2 and a message naming what is wrong; a
bug still shows its traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from cyclealign.errors import CycleAlignError

# ValueError: the loss package validates its hyperparameters without depending on core's errors.
USER_ERRORS: tuple[type[BaseException], ...] = (CycleAlignError, FileNotFoundError, ImportError, ValueError)

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Call ``fn``; a user error becomes one red line and exit code 2, not a traceback."""
    try:
        return fn(**kwargs)
    except USER_ERRORS as e:
        fail(str(e))
