"""The held-out preference margin: how much more the model prefers the better response than the worse one.

Per example, the mean token log-prob of its best response minus that of its
worst (``margin``; length-normalised, so long and short replies compare fairly)
and the same with summed log-probs (``sum_margin``); ``accuracy`` is the share
of examples whose best response has the higher mean log-prob.  Training on
preferences should raise all three on examples it never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cyclealign.offline.records import RankedExample


def heldout_margin(trainer: Any, examples: Sequence[RankedExample], batch_size: int = 8) -> dict[str, float] | None:
    """The mean margins over ``examples`` under the trainer's model (eval mode, no gradients); None if none."""
    if not examples:
        return None
    model = trainer.wb.model
    was_training = model.training
    model.eval()
    mean_margins: list[float] = []
    sum_margins: list[float] = []
    by_n: dict[int, list[RankedExample]] = {}
    for ex in examples:
        by_n.setdefault(len(ex.responses), []).append(ex)
    try:
        with torch.no_grad():
            for group in by_n.values():
                for start in range(0, len(group), batch_size):
                    chunk = [ex.loss_batch() for ex in group[start : start + batch_size]]
                    enc = trainer.encode([b.prompt for b in chunk], [b.candidates for b in chunk])
                    logps, lengths = trainer.logps(model, enc)
                    logps, lengths = logps.float(), lengths.clamp(min=1).float()
                    mean = logps / lengths
                    mean_margins += (mean[:, 0] - mean[:, -1]).tolist()
                    sum_margins += (logps[:, 0] - logps[:, -1]).tolist()
    finally:
        model.train(was_training)
    n = len(mean_margins)
    return {
        "margin": sum(mean_margins) / n,
        "sum_margin": sum(sum_margins) / n,
        "accuracy": sum(m > 0 for m in mean_margins) / n,
        "examples": float(n),
    }
