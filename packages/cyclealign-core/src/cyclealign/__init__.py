"""CycleAlign: align a white-box language model with a black-box LLM, in a cycle.

The trainers (``CycleAlignTrainer``, ``OfflineTrainer``, ``AlignerTrainer``) load on first
use, so ``import cyclealign`` stays light (they bring torch and transformers).
"""

from typing import Any

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

TRAINERS = ("AlignerTrainer", "CycleAlignTrainer", "OfflineTrainer")

__all__ = [
    "AgreementStrategy",
    "AlignerTrainer",
    "Candidate",
    "CycleAlignTrainer",
    "Demonstration",
    "LossBatch",
    "LossOutput",
    "Message",
    "OfflineTrainer",
    "Oracle",
    "OracleRequest",
    "OracleVerdict",
    "Prompt",
    "RankLoss",
    "Ranking",
    "Sampler",
    "SelfRanker",
]


def __getattr__(name: str) -> Any:
    """The trainers, imported on first use (PEP 562)."""
    if name in TRAINERS:
        from cyclealign.api import trainers

        return getattr(trainers, name)
    raise AttributeError(f"module 'cyclealign' has no attribute {name!r}")
