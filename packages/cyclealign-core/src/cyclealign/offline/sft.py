"""Supervised fine-tuning as a ``RankLoss``: the token-mean negative log-likelihood of the best response.

The corrector trains with it (one response per prompt: the correction), through
the same trainer as the ranking losses.  Tokens are averaged over the whole
batch, so a long target weighs as much as its tokens, as in ordinary SFT.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cyclealign.protocols import LossOutput


class SftLoss:
    """``−Σ log π(y_t) / Σ |y|`` over each prompt's best response (the highest reward; the first among ties)."""

    name: ClassVar[str] = "sft"
    needs_reference: ClassVar[bool] = False
    sft_weight: float = 1.0

    def __call__(self, logps: Any, lengths: Any, rewards: Any, ref_logps: Any | None = None) -> LossOutput:
        best = rewards.argmax(dim=1, keepdim=True)
        summed = torch.gather(logps, 1, best).sum()
        tokens = torch.gather(lengths, 1, best).sum().clamp(min=1)
        total = -summed / tokens
        return LossOutput(total=total, parts={"sft": float(total.detach()), "total": float(total.detach())})
