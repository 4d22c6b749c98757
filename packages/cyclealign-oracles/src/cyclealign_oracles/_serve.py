"""``python -m cyclealign_oracles._serve PARENT_PID MODULE ARGS…``: a server module that dies with its parent.

MODULE is ``llama_cpp.server``; it runs in this process with ``ARGS`` as its command line.

A run killed with SIGKILL runs no cleanup, so the server watches for itself: as
soon as its parent process is gone it stops (SIGTERM to itself, then a hard exit).
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time


def _watch_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown
    time.sleep(5.0)
    os._exit(1)


def main() -> None:
    parent_pid, module = int(sys.argv[1]), sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
