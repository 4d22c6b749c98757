"""Weights & Biases: one W&B run per CycleAlign run, resumed by its id.

W&B's own settings apply (``WANDB_PROJECT``, default ``cyclealign``; ``WANDB_MODE=offline``;
``WANDB_DIR``, default the run directory).  Each series has its own step metric
(``interaction/step``, ``step/step``), so both stay monotonic in one W&B run.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from cyclealign.callbacks import RunInfo
from cyclealign.trackers.base import SERIES, Tracker, require


class WandbTracker(Tracker):
    name = "wandb"

    def _open(self, info: RunInfo, run_id: str | None) -> str:
        wandb = require("wandb", "wandb", self.name)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "cyclealign",
            name=Path(info.run_dir).name,
            id=run_id or uuid.uuid4().hex[:12],
            resume="allow",
            dir=os.environ.get("WANDB_DIR") or str(info.run_dir),
            reinit="create_new",
        )
        for series in SERIES:
            self.run.define_metric(f"{series}/step")
            self.run.define_metric(f"{series}/*", step_metric=f"{series}/step")
        return str(self.run.id)

    def _params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def _log(self, series: str, step: int, scalars: dict[str, float]) -> None:
        self.run.log({**{f"{series}/{k}": v for k, v in scalars.items()}, f"{series}/step": step})

    def _close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "completed" else 1)
