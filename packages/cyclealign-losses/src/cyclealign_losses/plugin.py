"""Registers PRO, RRHF, DPO, DPO-PL and LiPO-λ through the `cyclealign` entry-point group, with their options."""

from __future__ import annotations

from typing import Any

import pluggy

from cyclealign_losses.rank_losses import (
    DpoLoss,
    DpoOptions,
    DpoPlLoss,
    LipoLoss,
    ListwiseOptions,
    NoOptions,
    ProLoss,
    RrhfLoss,
    RrhfOptions,
)

hookimpl = pluggy.HookimplMarker("cyclealign")


@hookimpl
def register_losses(register: Any) -> None:
    register("pro", ProLoss.from_config, "PRO listwise ranking + λ·SFT (the paper's default)", options=NoOptions)
    register(
        "rrhf",
        RrhfLoss.from_config,
        "RRHF pairwise hinge on length-normalised log-probs + λ·SFT",
        options=RrhfOptions,
    )
    register(
        "dpo",
        DpoLoss.from_config,
        "DPO over all ranked pairs vs. the adapter-disabled reference + λ·SFT",
        options=DpoOptions,
    )
    register(
        "dpo-pl",
        DpoPlLoss.from_config,
        "DPO's Plackett-Luce form over the whole ranked list vs. the adapter-disabled reference + λ·SFT",
        options=ListwiseOptions,
    )
    register(
        "lipo",
        LipoLoss.from_config,
        "LiPO-λ: ranked pairs weighted by their DCG swap cost, vs. the adapter-disabled reference + λ·SFT",
        options=ListwiseOptions,
    )
