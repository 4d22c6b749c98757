"""One event loop for all oracles of a process, on its own thread, so sync callers get async concurrency.

A loop that lives as long as the process keeps the HTTP clients litellm caches
(and their keep-alive connections) valid between ``rank_many`` calls, stays the
one loop litellm's process-wide logging worker is bound to, works the same when
the caller already runs a loop (a notebook), and lets Ctrl+C in the caller
cancel the calls in flight.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """``run(make_coro)`` blocks until the coroutine finishes on the background loop; ``close()`` ends the loop."""

    def __init__(self, name: str = "cyclealign-oracle") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
                atexit.register(self.close)  # an oracle never closed still ends its loop cleanly
            return self._loop

    def run(self, make_coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
        future = asyncio.run_coroutine_threadsafe(make_coro(), self._ensure())
        try:
            return future.result()
        except BaseException:  # Ctrl+C (or any error) in the caller: stop the calls in flight too
            future.cancel()
            raise

    def close(self) -> None:
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        atexit.unregister(self.close)
        if loop is None:
            return

        async def _shutdown() -> None:
            for _ in range(5):  # cancelled tasks may spawn others while they wind down
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                if not tasks:
                    break
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        if loop.is_running():
            asyncio.run_coroutine_threadsafe(_shutdown(), loop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        if not loop.is_running():
            loop.close()


_SHARED = LoopThread("cyclealign-oracles")


def shared_loop() -> LoopThread:
    """The process-wide loop the oracles run their calls on (closed at interpreter exit)."""
    return _SHARED
