"""Run the `cyclealign` CLI, optionally killing itself with SIGKILL in the middle of a write.

``CHAOS_KILL=checkpoint:N`` kills the process during its N-th checkpoint write (the new
checkpoint is complete in its temporary directory, not yet swapped in);
``CHAOS_KILL=flush:N`` kills it during its N-th file write (half the bytes written to the
temporary file).  For data-parallel runs (started as the launcher's script),
``CHAOS_KILL=collective:N`` kills the process as it enters its N-th collective of the
lockstep (the others are left waiting in it) and ``CHAOS_KILL=save_state:N`` while it
writes its part of the N-th checkpoint (its files written, the checkpoint not yet
complete); ``CHAOS_RANK=r`` limits the kill to the process of rank r.  Used by the
chaos tests; the kills are real SIGKILLs, nothing is caught.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


def _die() -> None:
    if stamp := os.environ.get("CHAOS_DIED_AT"):  # when, for a test that bounds how long the others take to stop
        Path(stamp).write_text(repr(time.time()))
    os.kill(os.getpid(), signal.SIGKILL)


def install(spec: str) -> None:
    kind, _, nth = spec.partition(":")
    target = int(nth)
    count = {"n": 0}

    if kind == "checkpoint":
        import cyclealign.run.checkpoint as ck

        original = ck.atomic_replace_dir

        def replace_dir(target_dir: Path, fill: Any, **kw: Any) -> None:
            def fill_then_maybe_die(tmp: Path) -> None:
                fill(tmp)
                count["n"] += 1
                if count["n"] == target:
                    _die()

            original(target_dir, fill_then_maybe_die, **kw)

        ck.atomic_replace_dir = replace_dir
    elif kind == "collective":
        from cyclealign.infra.lockstep import TorchLockstep

        for name in ("_sum", "gather", "barrier"):
            original_op = getattr(TorchLockstep, name)

            def op(self: Any, *args: Any, _original: Any = original_op) -> Any:
                count["n"] += 1
                if count["n"] == target:
                    _die()
                return _original(self, *args)

            setattr(TorchLockstep, name, op)
    elif kind == "save_state":
        from cyclealign.whitebox.trainer import PolicyTrainer

        original_save = PolicyTrainer.save_state

        def save_state(self: Any, directory: Path) -> None:
            original_save(self, directory)
            count["n"] += 1
            if count["n"] == target:
                _die()

        PolicyTrainer.save_state = save_state
    elif kind == "flush":
        import cyclealign.infra.store as st

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
    if spec and os.environ.get("CHAOS_RANK", os.environ.get("RANK", "0")) == os.environ.get("RANK", "0"):
        install(spec)
    from cyclealign.cli.main import app

    for arg in [a for a in sys.argv if a.startswith("--local_rank=")]:  # what the deepspeed launcher appends
        os.environ.setdefault("LOCAL_RANK", arg.split("=", 1)[1])
        sys.argv.remove(arg)
    sys.argv = ["cyclealign", *sys.argv[1:]]
    app()
