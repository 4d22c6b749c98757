"""What oracle calls cost: one ``Usage`` type, added up from the HTTP answer to the run summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Usage:
    """Calls paid for, their tokens and dollars.  ``a + b`` adds field by field; ``Usage()`` is zero.

    A cache replay costs nothing, so it carries ``Usage()``: usage is what was paid.
    """

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.calls + other.calls,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_usd + other.cost_usd,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Usage:
        """The inverse of :meth:`as_dict`; unknown keys are ignored (older checkpoints carry fewer)."""
        data = data or {}
        return cls(
            calls=int(data.get("calls", 0)),
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            completion_tokens=int(data.get("completion_tokens", 0)),
            cost_usd=float(data.get("cost_usd", 0.0)),
        )


class Costs:
    """Read-only shortcuts to the fields of ``self.usage`` (for records that carry one)."""

    usage: Usage

    @property
    def cost_usd(self) -> float:
        return self.usage.cost_usd

    @property
    def prompt_tokens(self) -> int:
        return self.usage.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.usage.completion_tokens


@dataclass
class OracleStats(Costs):
    """What an oracle did over a run, shown in the summary; ``usage`` is what was paid (cache hits are free)."""

    usage: Usage = field(default_factory=Usage)
    calls: int = 0  # ranking (or completion) requests
    http_calls: int = 0  # requests actually sent, retries included
    cache_hits: int = 0
    retries: int = 0  # transport retries
    parse_retries: int = 0  # re-asks after an invalid answer
    failures: int = 0  # requests that ended without a valid answer
    waited_s: float = 0.0  # backoff and rate-limit sleeps
    demos_dropped: int = 0  # demonstrations left out to fit the context
    format_downgrades: int = 0  # structured-output modes the provider rejected

    def as_dict(self) -> dict[str, Any]:
        """Flat numbers for the summary: the counters, then the usage fields."""
        counters = {k: v for k, v in self.__dict__.items() if k != "usage"}
        u = self.usage
        return {
            **counters,
            "paid_calls": u.calls,
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "cost_usd": u.cost_usd,
        }
