"""Which examples each training step takes: stages of epochs of seeded, shuffled batches of prompts.

The order is a pure function of the step number (the seed, the stage, the
epoch), so a checkpoint needs only the step count to resume on the same batch.
``cyclealign train`` has one stage; the corrector's training two (warm-up on
identity triples, then corrections).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from cyclealign.errors import ConfigError
from cyclealign.offline.records import RankedExample


@dataclass(frozen=True)
class Stage:
    """``epochs`` passes over ``examples`` (at most ``max_steps`` steps)."""

    name: str
    examples: Sequence[RankedExample]
    epochs: int = 1
    max_steps: int | None = None


@dataclass(frozen=True)
class Position:
    """Where a step falls: its stage, the epoch within it, the batch within the epoch."""

    stage: str
    epoch: int
    batch: int


class Schedule:
    def __init__(self, stages: Sequence[Stage], batch_size: int, *, seed: int, shuffle: bool = True) -> None:
        if batch_size < 1:
            raise ConfigError("batch_size: must be at least 1")
        self.stages = [s for s in stages if s.examples and s.epochs > 0 and s.max_steps != 0]
        if not self.stages:
            raise ConfigError("nothing to train on: every stage is empty")
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.per_epoch = [math.ceil(len(s.examples) / batch_size) for s in self.stages]
        self.lengths = [
            min(n * s.epochs, s.max_steps or n * s.epochs) for s, n in zip(self.stages, self.per_epoch, strict=True)
        ]

    @property
    def total(self) -> int:
        return sum(self.lengths)

    def _order(self, stage: Stage, epoch: int) -> list[int]:
        order = list(range(len(stage.examples)))
        if self.shuffle:
            random.Random(f"{self.seed}:{stage.name}:{epoch}").shuffle(order)
        return order

    def batch(self, step: int) -> tuple[Position, list[RankedExample]]:
        """The examples of step ``step`` (0-based), in a fixed order."""
        if not 0 <= step < self.total:
            raise IndexError(f"step {step} is outside the schedule's {self.total} steps")
        for stage, per_epoch, length in zip(self.stages, self.per_epoch, self.lengths, strict=True):
            if step < length:
                epoch, k = divmod(step, per_epoch)
                picked = self._order(stage, epoch)[k * self.batch_size : (k + 1) * self.batch_size]
                return Position(stage.name, epoch, k), [stage.examples[i] for i in picked]
            step -= length
        raise AssertionError("unreachable")
