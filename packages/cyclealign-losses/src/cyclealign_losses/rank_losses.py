"""The `RankLoss` plugins: a ranking objective plus λ·SFT, as the engine calls them."""

from __future__ import annotations

from typing import Any

import torch

from cyclealign_losses.functional import dpo_loss, pro_loss, rrhf_loss, sft_loss


def resolve_sft_weight(value: float | str, num_samples: int) -> float:
    """λ: the paper's (l−1)² for ``"auto"``, else the given number."""
    return float((num_samples - 1) ** 2) if value == "auto" else float(value)


class _RankPlusSft:
    """``L = L_rank + λ·L_sft``; ``parts`` reports both terms for the run records."""

    name = "base"
    needs_reference = False

    def __init__(self, sft_weight: float = 4.0, **hyper: Any) -> None:
        self.sft_weight = float(sft_weight)
        self.hyper = hyper

    def rank(self, logps: torch.Tensor, lengths: torch.Tensor, rewards: torch.Tensor, ref_logps: Any) -> torch.Tensor:
        raise NotImplementedError

    def __call__(
        self, logps: torch.Tensor, lengths: torch.Tensor, rewards: torch.Tensor, ref_logps: torch.Tensor | None = None
    ) -> Any:
        from cyclealign.protocols import LossOutput

        rank = self.rank(logps, lengths, rewards, ref_logps)
        sft = sft_loss(logps, lengths, rewards)
        total = rank + self.sft_weight * sft
        return LossOutput(
            total=total,
            parts={"rank": float(rank.detach()), "sft": float(sft.detach()), "total": float(total.detach())},
        )

    @classmethod
    def from_config(cls, config: Any, num_samples: int = 3) -> _RankPlusSft:
        return cls(
            sft_weight=resolve_sft_weight(getattr(config, "sft_weight", "auto"), num_samples), **cls._hyper(config)
        )

    @classmethod
    def _hyper(cls, config: Any) -> dict[str, Any]:
        return {}


class ProLoss(_RankPlusSft):
    """PRO (listwise) + SFT, the paper's default objective."""

    name = "pro"

    def rank(self, logps, lengths, rewards, ref_logps):  # type: ignore[no-untyped-def]
        return pro_loss(logps, lengths, rewards)


class RrhfLoss(_RankPlusSft):
    """RRHF (pairwise hinge on length-normalised log-probs) + SFT."""

    name = "rrhf"

    def rank(self, logps, lengths, rewards, ref_logps):  # type: ignore[no-untyped-def]
        return rrhf_loss(logps, lengths, rewards, length_penalty=self.hyper.get("length_penalty", 1.0))

    @classmethod
    def _hyper(cls, config: Any) -> dict[str, Any]:
        return {"length_penalty": getattr(config, "length_penalty", 1.0)}


class DpoLoss(_RankPlusSft):
    """DPO over the ranking's pairs against the frozen reference + SFT."""

    name = "dpo"
    needs_reference = True

    def rank(self, logps, lengths, rewards, ref_logps):  # type: ignore[no-untyped-def]
        return dpo_loss(
            logps, lengths, rewards, ref_logps, beta=self.hyper.get("beta", 0.1), pairs=self.hyper.get("pairs", "all")
        )

    @classmethod
    def _hyper(cls, config: Any) -> dict[str, Any]:
        return {"beta": getattr(config, "beta", 0.1), "pairs": getattr(config, "dpo_pairs", "all")}
