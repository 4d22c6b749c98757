"""Ranking losses for CycleAlign: PRO, RRHF, DPO, DPO-PL, LiPO-λ and SFT, exact and batched."""

from cyclealign_losses.functional import (
    DPO_PAIRS,
    dpo_loss,
    dpo_pl_loss,
    lipo_lambda_loss,
    mean_logps,
    pro_loss,
    rrhf_loss,
    sft_loss,
)
from cyclealign_losses.rank_losses import (
    DpoLoss,
    DpoOptions,
    DpoPlLoss,
    LipoLoss,
    ListwiseOptions,
    LossOutput,
    NoOptions,
    ProLoss,
    RrhfLoss,
    RrhfOptions,
    resolve_sft_weight,
)

__all__ = [
    "DPO_PAIRS",
    "DpoLoss",
    "DpoOptions",
    "DpoPlLoss",
    "LipoLoss",
    "ListwiseOptions",
    "LossOutput",
    "NoOptions",
    "ProLoss",
    "RrhfLoss",
    "RrhfOptions",
    "dpo_loss",
    "dpo_pl_loss",
    "lipo_lambda_loss",
    "mean_logps",
    "pro_loss",
    "resolve_sft_weight",
    "rrhf_loss",
    "sft_loss",
]
