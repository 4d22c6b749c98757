"""The state of a cycle: its switches, where each prompt of a wave stands, and the run's totals.

Kept apart from the engine's control flow so that the session, the summary and
checkpoints share these types without the engine's dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from cyclealign.protocols import Prompt


@dataclass(frozen=True)
class CycleSettings:
    """The switches of one cycle (a view of ``CycleConfig`` the engine needs)."""

    num_samples: int = 3
    max_interactions: int = 5
    early_stop: bool = True
    include_oracle_response: bool = True
    shuffle: bool = True  # oracle.shuffle_answers
    min_agreement: int = 2
    prompt_batch: int = 1
    on_oracle_failure: str = "skip"
    sample_ahead: bool = False
    seed: int = 0

    @classmethod
    def from_config(cls, cycle: Any, seed: int, *, shuffle: bool = True) -> CycleSettings:
        """The engine's view of a ``CycleConfig`` (fields of the same name), plus the run's seed and whether
        the oracle sees answers shuffled (``oracle.shuffle_answers``: how answers are shown is the oracle's)."""
        names = {f.name for f in fields(cls)} - {"seed", "shuffle"}
        return cls(**{n: getattr(cycle, n) for n in names}, seed=seed, shuffle=shuffle)


@dataclass
class PromptState:
    """Where one prompt stands inside a wave of concurrently processed prompts."""

    prompt: Prompt
    position: int = 0  # the prompt's index in the run's prompt list: orders what ranks share
    interaction: int = 0
    done: bool = False


@dataclass
class CycleTotals:
    prompts: int = 0
    waves: int = 0
    interactions: int = 0
    full_agreements: int = 0
    oracle_failures: int = 0
    trained_steps: int = 0
    loss_sum: float = 0.0
    stopped: str | None = None
    oracle_failures_by_kind: dict[str, int] = field(default_factory=dict)  # FAILURE_KINDS → recorded failures

    def count_failure(self, kind: str | None) -> None:
        """One more recorded interaction whose oracle failed in this way (older records carry no kind)."""
        kind = kind or "unknown"
        self.oracle_failures_by_kind[kind] = self.oracle_failures_by_kind.get(kind, 0) + 1

    @property
    def agreement_rate(self) -> float:
        return self.full_agreements / self.interactions if self.interactions else 0.0

    @property
    def mean_loss(self) -> float | None:
        return self.loss_sum / self.trained_steps if self.trained_steps else None
