"""The rank-to-reward mapping the engine applies before any loss sees a ranking."""

from __future__ import annotations

import itertools
import random

import pytest

from cyclealign.cycle.rewards import SCHEMES, ranks_to_rewards


def test_every_scheme_is_named() -> None:
    assert SCHEMES == ("linear", "exponential", "reciprocal")


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        ("linear", [1.0, 3.0, 0.0, 2.0]),
        ("exponential", [2.0, 8.0, 1.0, 4.0]),
        ("reciprocal", [1 / 3, 1.0, 1 / 4, 1 / 2]),
    ],
)
def test_ranks_to_rewards(scheme: str, expected: list[float]) -> None:
    assert ranks_to_rewards([1, 3, 0, 2], scheme) == pytest.approx(expected)
    assert ranks_to_rewards([1, 3, 0, 2]) == [1.0, 3.0, 0.0, 2.0]  # linear is the default


@pytest.mark.parametrize("scheme", ["linear", "exponential", "reciprocal"])
def test_every_scheme_strictly_decreases_down_the_ranking(scheme: str) -> None:
    rng = random.Random(7)
    for n in range(2, 9):
        order = rng.sample(range(n), n)
        rewards = ranks_to_rewards(order, scheme)
        by_position = [rewards[i] for i in order]
        assert all(a > b for a, b in itertools.pairwise(by_position)), (order, rewards)


def test_ranks_to_rewards_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="not a permutation"):
        ranks_to_rewards([0, 0, 1])
    with pytest.raises(ValueError, match="not a permutation"):
        ranks_to_rewards([0, 2])
    with pytest.raises(ValueError, match="not a permutation"):
        ranks_to_rewards([0.0, 1.0])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="unknown reward scheme 'cubic'; choose one of linear, exponential"):
        ranks_to_rewards([0, 1], "cubic")
