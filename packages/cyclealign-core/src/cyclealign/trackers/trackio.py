"""trackio: the Hugging Face local-first tracker (a SQLite store under ``TRACKIO_DIR``).

The project is ``TRACKIO_PROJECT``, or ``cyclealign``; the trackio run is named after
the run directory plus a short id, and resumed by that name.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from cyclealign.callbacks import RunInfo
from cyclealign.trackers.base import Tracker, public_params, require


class TrackioTracker(Tracker):
    name = "trackio"

    def _open(self, info: RunInfo, run_id: str | None) -> str:
        self.trackio = require("trackio", "trackio", self.name)
        self.project = os.environ.get("TRACKIO_PROJECT") or "cyclealign"
        name = run_id or f"{Path(info.run_dir).name}-{uuid.uuid4().hex[:8]}"
        self.run = self.trackio.init(
            project=self.project,
            name=name,
            resume="allow" if run_id else "never",  # a run killed before trackio wrote anything has no row yet
            config=None if run_id else public_params(info.config),  # trackio keeps the config given at the start
            embed=False,
            auto_log_cpu=False,
            auto_log_gpu=False,
        )
        return name

    def _durable_step(self) -> int | None:
        """trackio writes from a background thread: a kill loses what it had queued, so ask its store."""
        last = self.trackio.SQLiteStorage.get_max_step_for_run(self.project, self.run_id)
        return -1 if last is None else int(last)

    def _params(self, params: dict[str, Any]) -> None:
        """Already given to ``trackio.init``."""

    def _log(self, series: str, step: int, scalars: dict[str, float]) -> None:
        self.run.log({f"{series}/{k}": v for k, v in scalars.items()}, step=step)

    def _close(self, status: str) -> None:
        self.run.finish()
