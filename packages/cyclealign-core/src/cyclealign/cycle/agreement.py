"""Agreement between the oracle's ranking and the white-box model's own ranking.

The paper keeps the longest common subsequence (LCS) of the two rankings as a
pseudo-label.  Several LCSs of equal length can exist; we take the one whose
items the oracle ranked highest, i.e. the lexicographically smallest sequence of
oracle positions.  That choice keeps the demonstration anchored on what the
stronger ranker put first.
"""

from __future__ import annotations

from functools import cache

from cyclealign.errors import ConfigError
from cyclealign.protocols import Ranking


def lcs_agreement(oracle: tuple[int, ...], own: tuple[int, ...]) -> tuple[int, ...]:
    """The LCS of two rankings (candidate indices, best first), preferring the oracle's top items.

    Both inputs are permutations of the same indices.  Among all common
    subsequences of maximal length, the result is the one whose list of
    positions in ``oracle`` is lexicographically smallest.
    """
    if sorted(oracle) != sorted(own):
        raise ValueError(f"rankings {list(oracle)} and {list(own)} do not rank the same candidates")
    pos_in_own = {c: i for i, c in enumerate(own)}
    seq = tuple(pos_in_own[c] for c in oracle)  # the own-positions, read in oracle order

    # best[i][j]: length of the longest increasing subsequence of seq[i:] using values > j-1
    n = len(seq)

    @cache
    def longest(i: int, floor: int) -> int:
        """Longest increasing subsequence of seq[i:] whose values are all >= floor."""
        if i == n:
            return 0
        skip = longest(i + 1, floor)
        if seq[i] >= floor:
            return max(skip, 1 + longest(i + 1, seq[i] + 1))
        return skip

    # Greedy reconstruction: take the earliest oracle position that still allows an optimal length.
    result: list[int] = []
    i, floor, need = 0, 0, longest(0, 0)
    while need > 0:
        for k in range(i, n):
            if seq[k] >= floor and 1 + longest(k + 1, seq[k] + 1) == need:
                result.append(oracle[k])
                i, floor, need = k + 1, seq[k] + 1, need - 1
                break
    return tuple(result)


class LCSAgreement:
    """The paper's agreement: longest common subsequence, oracle-first tie-break."""

    name = "lcs"

    def agree(self, oracle: Ranking, self_ranking: Ranking) -> tuple[int, ...]:
        return lcs_agreement(oracle.order, self_ranking.order)


def make_agreement(name: str) -> LCSAgreement:
    if name == "lcs":
        return LCSAgreement()
    raise ConfigError(f"cycle.agreement: unknown strategy {name!r} (known: lcs)")
