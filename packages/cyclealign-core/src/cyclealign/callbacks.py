"""Callbacks: code that watches a run (trackers, notebooks) without being part of it.

A callback receives the records the run already writes, at the moment they are
written, so what a tracker shows is exactly what the run directory holds.  Every
method is optional (subclass :class:`Callback` and override what you need).
Callbacks run in the first process only (rank 0), after the record is final;
an exception in a callback is a bug in it and stops the run like any other.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUN_KINDS = ("cycle", "train", "aligner")


@dataclass(frozen=True)
class RunInfo:
    """What a callback learns at the start: where the run lives and how it is configured.

    ``config`` is the public (secret-free) resolved configuration, ``resumed`` says
    whether this start continues an earlier one, ``units_done`` how many units
    (prompts for the cycle, steps for training) the earlier starts finished, and
    ``records_done`` how many interaction records they kept (the next one is number
    ``records_done + 1``: trackers number their points with it across a resume).
    """

    run_dir: Path
    kind: str
    config: dict[str, Any]
    resumed: bool = False
    units_done: int = 0
    records_done: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Callback:
    """The base class: every hook does nothing until overridden."""

    def on_run_start(self, info: RunInfo) -> None:
        """Once per start of the run (a resume is a new start with ``info.resumed``)."""

    def on_interaction(self, record: dict[str, Any]) -> None:
        """A cycle interaction finished; ``record`` is its line of ``interactions.jsonl``."""

    def on_step(self, record: dict[str, Any]) -> None:
        """An optimizer step finished; ``record`` holds its number (``step``), loss parts and learning rate."""

    def on_checkpoint(self, info: dict[str, Any]) -> None:
        """A checkpoint was written; ``info`` names its directory and the units it covers."""

    def on_run_end(self, summary: dict[str, Any]) -> None:
        """The run ended (completed, stopped or failed); ``summary`` is ``summary.json``."""


class CallbackList(Callback):
    """Fans every hook out to several callbacks, in order."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)

    def on_run_start(self, info: RunInfo) -> None:
        for cb in self.callbacks:
            cb.on_run_start(info)

    def on_interaction(self, record: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_interaction(record)

    def on_step(self, record: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_step(record)

    def on_checkpoint(self, info: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_checkpoint(info)

    def on_run_end(self, summary: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_run_end(summary)


__all__ = ["RUN_KINDS", "Callback", "CallbackList", "RunInfo"]
