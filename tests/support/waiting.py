"""Waiting for a state instead of sleeping for a guess, so that timing tests hold on a loaded machine.

A fixed ``time.sleep`` before an assertion encodes how fast the machine happened to be when
the test was written; on a loaded CI runner the state is not there yet and the test fails
for no fault of the code.  ``wait_until`` polls for the state itself, with a deadline far
beyond any honest delay, and says what it waited for when the deadline passes.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

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
