"""Self-ranking: the white-box model's own confidence in each response (``cycle.self_rank``).

Both rankers read the log-prob each sample got at sampling time, so neither needs
a model call.  They differ only in length: ``sum_logp`` is the log of the whole
answer's probability, which falls with every token and so prefers short answers;
``mean_logp`` divides by the token count, comparing answers of any length on one
per-token scale.  The choice decides which agreements become demonstrations and
when a prompt's loop stops early (docs/method.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from cyclealign.errors import ConfigError
from cyclealign.protocols import Candidate, Prompt, Ranking

SELF_RANKS = ("mean_logp", "sum_logp")


def _score(candidate: Candidate, name: str) -> float:
    """The candidate's confidence under ``name``; an unscored one (the oracle's) comes last."""
    if name == "mean_logp":
        return candidate.mean_logp
    return float("-inf") if candidate.sum_logp is None or not candidate.token_ids else candidate.sum_logp


class LogProbRanker:
    """Ranks by a log-prob score, best first; equal scores keep their sampling order."""

    def __init__(self, name: str = "mean_logp") -> None:
        if name not in SELF_RANKS:
            raise ConfigError(f"cycle.self_rank: {name!r} is not one of {', '.join(SELF_RANKS)}")
        self.name = name  # written into every interaction record

    def rank(self, prompt: Prompt, candidates: Sequence[Candidate]) -> Ranking:
        scores = [_score(c, self.name) for c in candidates]
        return Ranking(tuple(sorted(range(len(candidates)), key=lambda i: (-scores[i], i))))


class MeanLogProbRanker(LogProbRanker):
    """Ranks by mean token log-prob (the default, ``cycle.self_rank: mean_logp``)."""

    def __init__(self) -> None:
        super().__init__("mean_logp")


class SumLogProbRanker(LogProbRanker):
    """Ranks by the whole answer's log-prob (``cycle.self_rank: sum_logp``)."""

    def __init__(self) -> None:
        super().__init__("sum_logp")
