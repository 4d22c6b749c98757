"""LCS agreement against brute force over every pair of permutations (l ≤ 5)."""

from __future__ import annotations

import itertools

import pytest

from cyclealign.cycle.agreement import LCSAgreement, lcs_agreement
from cyclealign.protocols import Ranking


def _is_subsequence(seq: tuple[int, ...], of: tuple[int, ...]) -> bool:
    it = iter(of)
    return all(any(x == y for y in it) for x in seq)


def _brute_force(oracle: tuple[int, ...], own: tuple[int, ...]) -> tuple[int, ...]:
    """Every subsequence of the oracle ranking that is also one of the own ranking; longest,
    then the one whose oracle positions are lexicographically smallest."""
    best: tuple[tuple[int, ...], tuple[int, ...]] | None = None  # (positions, items)
    n = len(oracle)
    for size in range(n, -1, -1):
        for positions in itertools.combinations(range(n), size):
            items = tuple(oracle[p] for p in positions)
            if _is_subsequence(items, own) and (best is None or positions < best[0]):
                best = (positions, items)
        if best is not None:
            return best[1]
    return ()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_lcs_matches_brute_force_for_all_permutation_pairs(n: int) -> None:
    perms = list(itertools.permutations(range(n)))
    for oracle in perms:
        for own in perms:
            assert lcs_agreement(oracle, own) == _brute_force(oracle, own), (oracle, own)


def test_tie_break_prefers_oracle_top_items() -> None:
    # Two LCSs of length 2: (0, 1) and (2, 3); the oracle ranked 0 and 1 highest.
    assert lcs_agreement((0, 1, 2, 3), (2, 3, 0, 1)) == (0, 1)


def test_identical_rankings_agree_fully_and_reversed_agree_on_one() -> None:
    assert LCSAgreement().agree(Ranking((2, 0, 1)), Ranking((2, 0, 1))) == (2, 0, 1)
    assert lcs_agreement((0, 1, 2), (2, 1, 0)) == (0,)


def test_rankings_of_different_candidates_are_rejected() -> None:
    with pytest.raises(ValueError, match="do not rank the same candidates"):
        lcs_agreement((0, 1), (0, 2))
