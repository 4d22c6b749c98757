"""Waiting for a state instead of sleeping for a guess, so that timing tests hold on a loaded machine.

A fixed ``time.sleep`` before an assertion encodes how fast the machine happened to be when
the test was written; on a loaded CI runner the state is not there yet and the test fails
for no fault of the code.  ``wait_until`` polls for the state itself, with a deadline far
beyond any honest delay, and says what it waited for when the deadline passes.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO, TypeVar

T = TypeVar("T")

DEADLINE_S = 60.0


class WaitTimeout(AssertionError):
    """The awaited state did not come (an ``AssertionError``, so pytest reports it as a failed check)."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = DEADLINE_S,
    what: str = "the condition",
    interval: float = 0.01,
    process: subprocess.Popen | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Raises ``WaitTimeout`` naming ``what`` after ``timeout`` seconds, or as soon as
    ``process`` (if given) has exited while the state is still missing: a process that
    is gone cannot bring it any more, and its exit code says more than a timeout would.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            value = predicate()  # the process may have brought the state just before it exited
            if value:
                return value
            raise WaitTimeout(f"the process exited (rc={process.returncode}) before {what}")
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Output:
    """Collects a running process's stdout and stderr as they come, so that a test can wait for a message.

    ``communicate()`` only returns once the process has ended; a test that must act on what a process
    says while it runs (a second Ctrl+C only after the first was handled) reads both pipes on threads.
    """

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self._parts: dict[str, list[str]] = {"out": [], "err": []}
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._drain, args=(stream, key), daemon=True)
            for stream, key in ((process.stdout, "out"), (process.stderr, "err"))
            if stream is not None
        ]
        for t in self._threads:
            t.start()

    def _drain(self, stream: IO[str], key: str) -> None:
        for line in iter(stream.readline, ""):
            with self._lock:
                self._parts[key].append(line)

    @property
    def out(self) -> str:
        with self._lock:
            return "".join(self._parts["out"])

    @property
    def err(self) -> str:
        with self._lock:
            return "".join(self._parts["err"])

    def finish(self, timeout: float) -> tuple[str, str]:
        """Wait for the process to end and its pipes to close; ``(stdout, stderr)``."""
        self.process.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=timeout)
        return self.out, self.err
