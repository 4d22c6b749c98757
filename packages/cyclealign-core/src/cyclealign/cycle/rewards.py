"""Turning the agreed ranking into the reward numbers a loss trains on.

An oracle (or the agreement of oracle and self-ranking) yields only an order:
candidate indices, best first.  Ranking losses need numbers: PRO weighs pairs by
the *difference* of their rewards, and every loss skips pairs whose rewards are
equal.  So each scheme maps positions to values that fall strictly from the top
of the list to the bottom, and no two candidates of one ranking ever tie.

This lives in core, not in a loss plugin, because the engine assigns rewards
before any loss sees them; every loss, built in or third party, gets the same ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

SCHEMES = ("linear", "exponential", "reciprocal")


def ranks_to_rewards(order: Sequence[int], scheme: str = "linear") -> list[float]:
    """Reward per candidate index, given ``order`` (candidate indices, best first).

    - ``linear``: r = n − 1 − position (the default: equal steps between neighbours)
    - ``exponential``: r = 2^(n − 1 − position), stressing the top of the list
    - ``reciprocal``: r = 1 / (position + 1)
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown reward scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    n = len(order)
    if not all(isinstance(i, Integral) and not isinstance(i, bool) for i in order) or sorted(order) != list(range(n)):
        raise ValueError(f"order {list(order)} is not a permutation of 0..{n - 1}")
    rewards = [0.0] * n
    for position, index in enumerate(order):
        if scheme == "linear":
            rewards[int(index)] = float(n - 1 - position)
        elif scheme == "exponential":
            rewards[int(index)] = float(2 ** (n - 1 - position))
        else:  # reciprocal
            rewards[int(index)] = 1.0 / (position + 1)
    return rewards
