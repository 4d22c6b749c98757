"""CycleAlign: align a white-box language model with a black-box LLM, in a cycle."""

from cyclealign.protocols import (
    AgreementStrategy,
    Candidate,
    Demonstration,
    LossBatch,
    LossOutput,
    Message,
    Oracle,
    OracleRequest,
    OracleVerdict,
    Prompt,
    Ranking,
    RankLoss,
    Sampler,
    SelfRanker,
)

__version__ = "0.1.0"

__all__ = [
    "AgreementStrategy",
    "Candidate",
    "Demonstration",
    "LossBatch",
    "LossOutput",
    "Message",
    "Oracle",
    "OracleRequest",
    "OracleVerdict",
    "Prompt",
    "RankLoss",
    "Ranking",
    "Sampler",
    "SelfRanker",
]
