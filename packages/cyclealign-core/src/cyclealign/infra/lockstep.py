"""How the processes of a data-parallel run agree at every tick of the cycle.

The engine calls three things at a tick's boundaries: ``any`` (does any process
still have work, or want to stop?), ``total`` (a count summed over processes)
and ``merge`` (every process's records and new demonstrations, in prompt order).
One process needs no agreement (:class:`Solo`); several use
:class:`TorchLockstep` over ``torch.distributed``.
"""

from __future__ import annotations

from typing import Any, Protocol


class Lockstep(Protocol):
    """The agreement points of a tick."""

    rank: int
    world_size: int

    def any(self, flag: bool) -> bool: ...

    def total(self, count: int) -> int: ...

    def merge(self, items: list[tuple[int, Any]]) -> list[Any]:
        """Every process's ``(position, item)`` pairs as one list, ordered by position."""
        ...

    def gather(self, value: Any) -> list[Any]:
        """``value`` of every process, in rank order."""
        ...

    def barrier(self) -> None: ...


def _ordered(items: list[tuple[int, Any]]) -> list[Any]:
    return [item for _, item in sorted(items, key=lambda pair: pair[0])]


class Solo:
    """The lockstep of a single process."""

    rank = 0
    world_size = 1

    def any(self, flag: bool) -> bool:
        return flag

    def total(self, count: int) -> int:
        return count

    def merge(self, items: list[tuple[int, Any]]) -> list[Any]:
        return _ordered(items)

    def gather(self, value: Any) -> list[Any]:
        return [value]

    def barrier(self) -> None:
        return None


class TorchLockstep:
    """The lockstep of ``torch.distributed`` (already initialised, e.g. by the DeepSpeed backend)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    def _sum(self, value: int) -> int:
        import torch

        t = torch.tensor([value], dtype=torch.long)
        if self._dist.get_backend() == "nccl":
            t = t.cuda()
        self._dist.all_reduce(t)
        return int(t.item())

    def any(self, flag: bool) -> bool:
        return self._sum(int(bool(flag))) > 0

    def total(self, count: int) -> int:
        return self._sum(count)

    def merge(self, items: list[tuple[int, Any]]) -> list[Any]:
        return _ordered([pair for part in self.gather(items) for pair in part])

    def gather(self, value: Any) -> list[Any]:
        """``value`` of every process, in rank order."""
        gathered: list[Any] = [None] * self.world_size
        self._dist.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        self._dist.barrier()


def lockstep_for(backend: str, timeout_s: float | None = None) -> Lockstep:
    """The lockstep of this process: DeepSpeed joins the launcher's process group (a world of one without one).

    ``timeout_s``: how long a collective waits for the other processes before it fails.
    """
    if backend != "deepspeed":
        return Solo()
    import torch.distributed as dist

    from cyclealign.infra.process_group import init_distributed

    init_distributed(timeout_s)
    return TorchLockstep() if dist.get_world_size() > 1 else Solo()
