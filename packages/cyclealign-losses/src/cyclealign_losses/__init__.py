"""Ranking losses for CycleAlign: PRO, RRHF, DPO and SFT, exact and batched."""

from cyclealign_losses.functional import DPO_PAIRS, dpo_loss, mean_logps, pro_loss, rrhf_loss, sft_loss
from cyclealign_losses.rank_losses import DpoLoss, ProLoss, RrhfLoss, resolve_sft_weight
from cyclealign_losses.rewards import SCHEMES, ranks_to_rewards

__all__ = [
    "DPO_PAIRS",
    "SCHEMES",
    "DpoLoss",
    "ProLoss",
    "RrhfLoss",
    "dpo_loss",
    "mean_logps",
    "pro_loss",
    "ranks_to_rewards",
    "resolve_sft_weight",
    "rrhf_loss",
    "sft_loss",
]
