"""Run the `cyclealign` CLI, optionally killing itself with SIGKILL in the middle of a write.

``CHAOS_KILL=checkpoint:N`` kills the process during its N-th checkpoint write (the new
checkpoint is complete in its temporary directory, not yet swapped in);
``CHAOS_KILL=flush:N`` kills it during its N-th file write (half the bytes written to the
temporary file).  Used by the chaos test; the kills are real SIGKILLs, nothing is caught.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(spec: str) -> None:
    kind, _, nth = spec.partition(":")
    target = int(nth)
    count = {"n": 0}

    if kind == "checkpoint":
        import cyclealign.checkpoint as ck

        original = ck.atomic_replace_dir

        def replace_dir(target_dir: Path, fill: Any, **kw: Any) -> None:
            def fill_then_maybe_die(tmp: Path) -> None:
                fill(tmp)
                count["n"] += 1
                if count["n"] == target:
                    _die()

            original(target_dir, fill_then_maybe_die, **kw)

        ck.atomic_replace_dir = replace_dir
    elif kind == "flush":
        import cyclealign.store as st

        original_write = st.atomic_write_bytes

        def write(path: Path, data: bytes) -> None:
            count["n"] += 1
            if count["n"] == target:
                tmp = path.with_name(f"{st.TEMP_PREFIX}{path.name}.chaos.tmp")  # as the real write names it
                tmp.write_bytes(data[: len(data) // 2])
                _die()
            original_write(path, data)

        st.atomic_write_bytes = write
    else:
        raise SystemExit(f"CHAOS_KILL: unknown kind {kind!r}")


if __name__ == "__main__":
    spec = os.environ.get("CHAOS_KILL")
    if spec:
        install(spec)
    from cyclealign.cli import app

    sys.argv = ["cyclealign", *sys.argv[1:]]
    app()
