"""Registers PRO, RRHF and DPO through the `cyclealign` entry-point group, like any third party, with their options."""

from __future__ import annotations

from typing import Any

import pluggy

from cyclealign_losses.rank_losses import DpoLoss, DpoOptions, NoOptions, ProLoss, RrhfLoss, RrhfOptions

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
