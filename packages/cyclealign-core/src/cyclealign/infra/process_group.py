"""One GPU per process, one process group per run: bind ``cuda:LOCAL_RANK``, join the launcher's group, leave it.

A launcher (``deepspeed``, ``torchrun``) starts one process per GPU and tells
each its ``LOCAL_RANK``.  Unless a process binds that GPU before it loads a
model or joins a collective, every process works on GPU 0: all of them load
the whole model there and run the first NCCL collective there.  So
:func:`bind_local_gpu` comes first, ``whitebox.device=auto`` means
``cuda:LOCAL_RANK`` (:func:`device_name`), and the group a run created is
destroyed when the run ends (:func:`leave`), error or not, so NCCL's
"destroy_process_group() was not called" never fires.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import torch

from cyclealign.errors import SetupError

logger = logging.getLogger(__name__)
STALE_LOCK_S = 600  # DeepSpeed's CPU op builds in about a minute: a lock this old was left by a killed build
_created = False  # this process initialised the group it is in (a user's own group is left alone)


def local_rank(environ: Mapping[str, str]) -> int | None:
    """The launcher's ``LOCAL_RANK`` (None without a launcher); a clear error when it is not an index."""
    value = environ.get("LOCAL_RANK")
    if value is None or value == "":
        return None
    try:
        rank = int(value)
    except ValueError:
        raise SetupError(f"LOCAL_RANK={value!r} is not a GPU index (set by the launcher)") from None
    if rank < 0:
        raise SetupError(f"LOCAL_RANK={value!r} is not a GPU index (set by the launcher)")
    return rank


def device_name(name: str, cuda_available: bool, environ: Mapping[str, str]) -> str:
    """What ``whitebox.device=name`` means in this process: ``auto`` is ``cuda:LOCAL_RANK`` under a launcher.

    A pure function of its arguments, so the rule is tested without a GPU.
    """
    if name != "auto":
        return name
    if not cuda_available:
        return "cpu"
    rank = local_rank(environ)
    return "cuda" if rank is None else f"cuda:{rank}"


def bind_local_gpu(environ: Mapping[str, str] | None = None) -> None:
    """Make ``cuda:LOCAL_RANK`` this process's current GPU (nothing to do without CUDA or a launcher)."""
    rank = local_rank(os.environ if environ is None else environ)
    if rank is None or not torch.cuda.is_available():
        return
    count = torch.cuda.device_count()
    if rank >= count:
        raise SetupError(f"LOCAL_RANK={rank}, but this process sees {count} GPU(s) (check CUDA_VISIBLE_DEVICES)")
    torch.cuda.set_device(rank)


def init_distributed(timeout_s: float | None = None) -> None:
    """Bind this process's GPU, then join the launcher's group (``WORLD_SIZE`` set) or make a world of one.

    ``timeout_s`` bounds every collective: when a process dies, the others fail
    after it instead of waiting forever (``train.collective_timeout_s``).
    """
    global _created
    try:
        import deepspeed
    except ImportError:
        raise SetupError('train.backend=deepspeed needs DeepSpeed: pip install "cyclealign-core[deepspeed]"') from None
    bind_local_gpu()
    if torch.distributed.is_initialized():
        return
    wait = {"timeout": timedelta(seconds=timeout_s)} if timeout_s is not None else {}
    for lock in stale_extension_locks(os.environ):
        logger.warning(
            "%s is over %d minutes old: a killed build of DeepSpeed's CPU collectives op left it, and DeepSpeed "
            "waits for it without end. Delete it if no other process is building.",
            lock,
            STALE_LOCK_S // 60,
        )
    if "WORLD_SIZE" in os.environ:  # started by a launcher (deepspeed, torchrun): join its group
        deepspeed.init_distributed(dist_backend=None, auto_mpi_discovery=False, verbose=False, **wait)
    else:
        with socket.socket() as s:  # no launcher: a world of one on a free loopback port
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.setdefault("LOCAL_RANK", "0")
        deepspeed.init_distributed(
            dist_backend=None,
            auto_mpi_discovery=False,
            verbose=False,
            init_method=f"tcp://127.0.0.1:{port}",
            rank=0,
            world_size=1,
            **wait,
        )
    atexit.unregister(leave)
    atexit.register(leave)  # a process that never reaches the run's end still leaves cleanly
    _created = True


def stale_extension_locks(environ: Mapping[str, str], now: float | None = None) -> list[Path]:
    """Build locks of DeepSpeed's CPU op older than :data:`STALE_LOCK_S` (torch waits on such a lock forever)."""
    from torch.utils.cpp_extension import get_default_build_root

    root = Path(environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    found = [*root.glob("deepspeed_shm_comm/lock"), *root.glob("*/deepspeed_shm_comm/lock")]
    now = time.time() if now is None else now
    return [lock for lock in found if now - _mtime(lock, now) > STALE_LOCK_S]


def _mtime(path: Path, default: float) -> float:
    """The file's modification time; ``default`` when the build finished and removed it meanwhile."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return default


def leave(together: bool = False) -> None:
    """Destroy the process group this process created (a group someone else made stays as it was).

    ``together``: wait for every process first (a run that ended normally). The first process hosts the
    group's store and its shared memory; torn down while another process is still in its last steps, that
    process can abort at exit. After an error the peers may be gone, so nobody waits.
    """
    global _created
    if not _created:
        return
    _created = False
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    import deepspeed.comm  # DeepSpeed's way also drops the groups it cached (a later run makes a new world)

    if together and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()

    deepspeed.comm.destroy_process_group()
