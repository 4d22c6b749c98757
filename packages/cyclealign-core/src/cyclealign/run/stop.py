"""The stop flag every run shares: the first Ctrl+C / SIGTERM asks for a graceful stop, the second aborts."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console


class StopFlag:
    """First Ctrl+C / SIGTERM asks the run to stop after the current unit of work; the second one aborts.

    The run polls it between units (the cycle between ticks, training between
    steps), so a stop leaves a state it can save and later resume from.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.console.print(
            f"[yellow]{signal.Signals(signum).name}: finishing the current step, then saving "
            "(press Ctrl+C again to abort at once)[/yellow]",
            soft_wrap=True,
        )

    @contextmanager
    def installed(self) -> Iterator[StopFlag]:
        """The handlers for SIGINT and SIGTERM while the run trains (main thread only; restored after)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)
