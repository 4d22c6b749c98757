"""What keeps a long run polite and solvent: backoff, a requests-per-minute pacer, a budget.

The pacer and the budget live on the oracle (not on one ``rank_many`` call), so
their limits hold across the whole run however the engine batches its prompts.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from cyclealign.errors import BudgetExceeded


def backoff_delay(retry: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: ``base·2^retry`` capped at ``max_s``, times a factor in [0.5, 1.5).

    The jitter keeps many concurrent callers that failed together from retrying in lockstep.
    """
    delay = min(max_s, base_s * 2**retry)
    return min(max_s, delay * (0.5 + (rng or random).random()))


class RequestPacer:
    """Spaces call starts at least ``60 / per_minute`` seconds apart, across threads and event loops.

    Each call reserves the next free slot under a lock and sleeps until it; there is
    no burst allowance, which is what providers' per-minute limits reward.
    """

    def __init__(self, per_minute: float | None) -> None:
        self.interval_s = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Seconds to wait before the caller may start its request."""
        if not self.interval_s:
            return 0.0
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval_s
        return start - now


class SpendGuard:
    """Refuses a call whose estimated cost, with the calls already in flight, would exceed the budget.

    Every paid call reserves its estimated cost (an upper bound: prompt estimate
    with a margin plus ``max_tokens`` of completion) when it is sent and releases
    it when done, its real cost then counting as spent, so concurrent calls cannot
    overshoot together.  Once a call was refused no new one starts: the run stops.
    """

    def __init__(self, limit_usd: float | None, spent: Any) -> None:
        self.limit_usd = limit_usd
        self._spent = spent  # a callable returning the dollars already spent (the oracle's stats)
        self._reserved = 0.0
        self._lock = threading.Lock()
        self.exceeded = False

    def reserve(self, estimate_usd: float) -> float:
        if self.limit_usd is None:
            return 0.0
        with self._lock:
            spent = float(self._spent())
            if self.exceeded or spent + self._reserved + estimate_usd > self.limit_usd:  # once hit, no new calls
                self.exceeded = True
                raise BudgetExceeded(
                    f"spent ${spent:.4f} (and ${self._reserved:.4f} in flight) of "
                    f"oracle.budget_usd=${self.limit_usd:.4f}; "
                    f"the next call (up to ${estimate_usd:.4f}) would exceed it"
                )
            self._reserved += estimate_usd
        return estimate_usd

    def release(self, reserved_usd: float) -> None:
        with self._lock:
            self._reserved = max(0.0, self._reserved - reserved_usd)

    @property
    def remaining_usd(self) -> float | None:
        if self.limit_usd is None:
            return None
        with self._lock:
            return max(0.0, self.limit_usd - float(self._spent()) - self._reserved)
