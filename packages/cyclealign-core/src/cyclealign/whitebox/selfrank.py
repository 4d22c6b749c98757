"""Self-ranking: the white-box model's own confidence in each response."""

from __future__ import annotations

from collections.abc import Sequence

from cyclealign.protocols import Candidate, Prompt, Ranking


class MeanLogProbRanker:
    """Ranks by mean token log-prob, computed once at sampling time: zero extra model calls."""

    def rank(self, prompt: Prompt, candidates: Sequence[Candidate]) -> Ranking:
        return Ranking(tuple(sorted(range(len(candidates)), key=lambda i: (-candidates[i].mean_logp, i))))
