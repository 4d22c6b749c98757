"""TensorBoard: event files under ``<run dir>/tensorboard`` (``CYCLEALIGN_TENSORBOARD_DIR`` moves them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from cyclealign.callbacks import RunInfo
from cyclealign.trackers.base import Tracker, require


class TensorBoardTracker(Tracker):
    """Scalars as ``interaction/...`` and ``step/...`` tags; the config as a text summary named ``config``."""

    name = "tensorboard"

    def _open(self, info: RunInfo, run_id: str | None) -> str:
        module = require("torch.utils.tensorboard", "tensorboard", self.name)
        logdir = Path(run_id or os.environ.get("CYCLEALIGN_TENSORBOARD_DIR") or Path(info.run_dir) / "tensorboard")
        used = [step for step in self.logged.values() if step >= 0]
        # A resumed start adds an event file beside the others; with one series in use, TensorBoard also
        # hides any point after the last one trackers.json records (a kill between writing and recording).
        purge = used[0] + 1 if run_id is not None and len(used) == 1 else None
        self.writer = module.SummaryWriter(log_dir=str(logdir), purge_step=purge)
        return str(logdir)

    def _params(self, params: dict[str, Any]) -> None:
        text = yaml.safe_dump(params, sort_keys=True)
        self.writer.add_text("config", "    " + text.replace("\n", "\n    "), global_step=0)
        self.writer.flush()

    def _log(self, series: str, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(f"{series}/{tag}", value, global_step=step)
        self.writer.flush()  # what the step file says was sent is on disk, even if the run is killed next

    def _close(self, status: str) -> None:
        self.writer.close()
