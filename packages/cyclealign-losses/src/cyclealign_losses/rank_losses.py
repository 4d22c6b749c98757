"""The `RankLoss` plugins: a ranking objective plus λ·SFT, as the engine calls them.

The engine builds them through its plugin registry as
``factory(config.loss, num_samples=config.cycle.num_samples, options=...)``; ``num_samples``
is l, which the paper's λ = (l−1)² needs when ``loss.sft_weight`` is ``"auto"``.  Each loss
declares its own options (``loss.options``) as a plain dataclass: this package has no
pydantic, and core builds the checking model from the fields and their descriptions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal

import torch

from cyclealign_losses.functional import (
    DPO_PAIRS,
    SFT_REDUCTIONS,
    dpo_loss,
    dpo_pl_loss,
    lipo_lambda_loss,
    pro_loss,
    rrhf_loss,
    sft_loss,
)

Tensor = torch.Tensor
DEFAULT_NUM_SAMPLES = 3


@dataclass(frozen=True)
class NoOptions:
    """A loss with no options of its own: any key under ``loss.options`` is refused."""


@dataclass(frozen=True)
class RrhfOptions:
    """``loss.options`` of ``rrhf``."""

    length_penalty: float = field(
        default=1.0, metadata={"description": "length exponent α: log-probs are divided by length^α (>= 0)"}
    )


@dataclass(frozen=True)
class DpoOptions:
    """``loss.options`` of ``dpo``."""

    beta: float = field(default=0.1, metadata={"description": "DPO temperature β (> 0)"})
    pairs: Literal["all", "best_worst"] = field(
        default="all", metadata={"description": "all ordered pairs of the ranking, or only best against worst"}
    )


@dataclass(frozen=True)
class ListwiseOptions:
    """``loss.options`` of ``lipo`` and ``dpo-pl``: the listwise losses scored against the reference."""

    beta: float = field(default=0.1, metadata={"description": "temperature β of s = β·log(π/π_ref) (> 0)"})


@dataclass(frozen=True)
class LossOutput:
    """What a loss call returns: the differentiable scalar ``total`` and float ``parts`` for the records.

    The same fields as ``cyclealign.protocols.LossOutput``; the engine reads only those
    two, so this package need not import the engine to satisfy its ``RankLoss`` protocol.
    """

    total: Tensor
    parts: dict[str, float] = field(default_factory=dict)


def resolve_sft_weight(value: float | str, num_samples: int | None = DEFAULT_NUM_SAMPLES) -> float:
    """λ: the paper's (l−1)² for ``"auto"`` (l = ``num_samples``, 3 when unknown), else the given number."""
    if value == "auto":
        l_ = DEFAULT_NUM_SAMPLES if num_samples is None else int(num_samples)
        if l_ < 2:
            raise ValueError(f"cycle.num_samples must be at least 2 to rank, got {l_}")
        return float((l_ - 1) ** 2)
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"loss.sft_weight must be a number or 'auto', got {value!r}") from None
    if not weight >= 0:  # also rejects NaN
        raise ValueError(f"loss.sft_weight must be >= 0, got {value!r}")
    return weight


class _RankPlusSft:
    """``L = L_rank + λ·L_sft``; ``parts`` reports both terms (as floats) for the run records.

    ``sft_weight`` is λ already resolved to a number (``"auto"`` is never stored), so a
    run summary can report it straight from the loss object.  ``sft_reduction``: ``mean``
    token log-prob (the paper's equation) or ``sum`` (PRO's released code).
    """

    name: ClassVar[str] = "base"
    needs_reference: ClassVar[bool] = False
    Options: ClassVar[type] = NoOptions

    def __init__(self, sft_weight: float = 4.0, sft_reduction: str = "mean", **hyper: Any) -> None:
        if sft_reduction not in SFT_REDUCTIONS:
            raise ValueError(f"loss.sft_reduction must be one of {', '.join(SFT_REDUCTIONS)}, got {sft_reduction!r}")
        self.sft_weight: float = resolve_sft_weight(sft_weight)
        self.sft_reduction = sft_reduction
        self.hyper: dict[str, Any] = hyper

    def rank(self, logps: Tensor, lengths: Tensor, rewards: Tensor, ref: Tensor | None) -> Tensor:
        """The ranking term alone (a scalar tensor)."""
        raise NotImplementedError

    def __call__(
        self,
        logps: Tensor,
        lengths: Tensor,
        rewards: Tensor,
        ref_logps: Tensor | None = None,
    ) -> LossOutput:
        rank = self.rank(logps, lengths, rewards, ref_logps)
        sft = sft_loss(logps, lengths, rewards, reduction=self.sft_reduction)
        total = rank + self.sft_weight * sft
        return LossOutput(
            total=total,
            parts={"rank": float(rank.detach()), "sft": float(sft.detach()), "total": float(total.detach())},
        )

    @classmethod
    def from_config(
        cls,
        config: Any,
        num_samples: int | None = DEFAULT_NUM_SAMPLES,
        *,
        sft_weight: float | None = None,
        options: Any = None,
    ) -> _RankPlusSft:
        """Build from a ``LossConfig``; an explicit ``sft_weight`` wins over ``config.sft_weight``.

        ``options`` is an instance of ``cls.Options`` (checked by the framework); without it,
        ``config.options`` is read here, unknown keys refused.
        """
        weight = sft_weight if sft_weight is not None else getattr(config, "sft_weight", "auto")
        reduction = getattr(config, "sft_reduction", "mean")
        if options is None:
            options = cls.read_options(getattr(config, "options", None) or {})
        return cls(resolve_sft_weight(weight, num_samples), sft_reduction=reduction, **cls._hyper(options))

    @classmethod
    def read_options(cls, raw: dict[str, Any]) -> Any:
        """``raw`` as ``cls.Options``; a key it does not declare is a ``ValueError`` naming it."""
        known = [f.name for f in fields(cls.Options)]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ValueError(
                f"loss.options.{unknown[0]}: not an option of the {cls.name} loss (its options: "
                f"{', '.join(known) or 'none'})"
            )
        return cls.Options(**raw)

    @classmethod
    def _hyper(cls, options: Any) -> dict[str, Any]:
        """The constructor's keyword arguments from the options."""
        return asdict(options)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.hyper.items())
        return f"{type(self).__name__}(sft_weight={self.sft_weight}, sft_reduction={self.sft_reduction!r}{extra})"


class ProLoss(_RankPlusSft):
    """PRO (listwise over reward-weighted suffixes) + λ·SFT, the paper's default objective."""

    name = "pro"

    def __init__(self, sft_weight: float = 4.0, sft_reduction: str = "mean") -> None:
        super().__init__(sft_weight, sft_reduction)

    def rank(self, logps: Tensor, lengths: Tensor, rewards: Tensor, ref: Tensor | None) -> Tensor:
        return pro_loss(logps, lengths, rewards)


class RrhfLoss(_RankPlusSft):
    """RRHF (pairwise hinge on length-normalised log-probs) + λ·SFT."""

    name = "rrhf"
    Options = RrhfOptions

    def __init__(self, sft_weight: float = 4.0, sft_reduction: str = "mean", length_penalty: float = 1.0) -> None:
        if not length_penalty >= 0:  # also rejects NaN
            raise ValueError(f"loss.options.length_penalty must be >= 0, got {length_penalty}")
        super().__init__(sft_weight, sft_reduction, length_penalty=float(length_penalty))

    def rank(self, logps: Tensor, lengths: Tensor, rewards: Tensor, ref: Tensor | None) -> Tensor:
        return rrhf_loss(logps, lengths, rewards, length_penalty=self.hyper["length_penalty"])


class DpoLoss(_RankPlusSft):
    """DPO over the ranking's pairs against the frozen reference + λ·SFT."""

    name = "dpo"
    needs_reference = True
    Options = DpoOptions

    def __init__(
        self, sft_weight: float = 4.0, sft_reduction: str = "mean", beta: float = 0.1, pairs: str = "all"
    ) -> None:
        if not beta > 0:  # also rejects NaN
            raise ValueError(f"loss.options.beta must be > 0, got {beta}")
        if pairs not in DPO_PAIRS:
            raise ValueError(f"loss.options.pairs must be one of {', '.join(DPO_PAIRS)}, got {pairs!r}")
        super().__init__(sft_weight, sft_reduction, beta=float(beta), pairs=pairs)

    def rank(self, logps: Tensor, lengths: Tensor, rewards: Tensor, ref: Tensor | None) -> Tensor:
        if ref is None:
            raise ValueError("the dpo loss needs the reference log-probs (needs_reference is True)")
        return dpo_loss(logps, lengths, rewards, ref, beta=self.hyper["beta"], pairs=self.hyper["pairs"])


class _ListwiseVsReference(_RankPlusSft):
    """A listwise loss on ``s = β·log(π/π_ref)`` (the reference: the adapter switched off) + λ·SFT."""

    needs_reference = True
    Options = ListwiseOptions

    def __init__(self, sft_weight: float = 4.0, sft_reduction: str = "mean", beta: float = 0.1) -> None:
        if not beta > 0:  # also rejects NaN
            raise ValueError(f"loss.options.beta must be > 0, got {beta}")
        super().__init__(sft_weight, sft_reduction, beta=float(beta))

    def _reference(self, ref: Tensor | None) -> Tensor:
        if ref is None:
            raise ValueError(f"the {self.name} loss needs the reference log-probs (needs_reference is True)")
        return ref


class LipoLoss(_ListwiseVsReference):
    """LiPO-λ (pairs weighted by their DCG swap cost) against the frozen reference + λ·SFT."""

    name = "lipo"

    def rank(self, logps: Tensor, lengths: Tensor, rewards: Tensor, ref: Tensor | None) -> Tensor:
        return lipo_lambda_loss(logps, lengths, rewards, self._reference(ref), beta=self.hyper["beta"])


class DpoPlLoss(_ListwiseVsReference):
    """DPO's Plackett-Luce form over the whole ranked list against the frozen reference + λ·SFT."""

    name = "dpo-pl"

    def rank(self, logps: Tensor, lengths: Tensor, rewards: Tensor, ref: Tensor | None) -> Tensor:
        return dpo_pl_loss(logps, lengths, rewards, self._reference(ref), beta=self.hyper["beta"])
