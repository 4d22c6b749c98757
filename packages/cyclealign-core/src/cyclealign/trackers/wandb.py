"""Weights & Biases: one W&B run per CycleAlign run, resumed by its id.

W&B's own settings apply (``WANDB_PROJECT``, default ``cyclealign``; ``WANDB_MODE=offline``;
``WANDB_DIR``, default the run directory).  Each series has its own step metric
(``interaction/step``, ``step/step``), so both stay monotonic in one W&B run.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from pathlib import Path
from typing import Any

from cyclealign.callbacks import RunInfo
from cyclealign.trackers.base import SERIES, Tracker, require

_BLOCK = 32768  # W&B's transaction log is LevelDB's log format: 32 KiB blocks of records with 7-byte headers


def _log_records(data: bytes) -> list[bytes]:
    """The whole records of one ``.wandb`` transaction log (a torn tail, from a kill, is left out)."""
    pos, parts, out = 7, b"", []
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if (kind == 0 and length == 0) or pos + 7 + length > len(data):
            pos += left if kind == 0 else len(data)
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            out.append(parts)
    return out


class WandbTracker(Tracker):
    name = "wandb"

    def _open(self, info: RunInfo, run_id: str | None) -> str:
        self.wandb = require("wandb", "wandb", self.name)
        self.dir = Path(os.environ.get("WANDB_DIR") or info.run_dir)
        self.run = self.wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "cyclealign",
            name=Path(info.run_dir).name,
            id=run_id or uuid.uuid4().hex[:12],
            resume="allow",
            dir=str(self.dir),
            reinit="create_new",
        )
        for series in SERIES:
            self.run.define_metric(f"{series}/step")
            self.run.define_metric(f"{series}/*", step_metric=f"{series}/step")
        return str(self.run.id)

    def _durable_step(self) -> int | None:
        """What W&B holds: the resumed run's summary online; offline, the earlier starts' transaction logs.

        The W&B service writes what it is sent in the background, so a killed run loses its last points.
        """
        if not self.run.settings._offline:
            steps = [self.run.summary.get(f"{series}/step") for series in SERIES]
            return max((int(s) for s in steps if s is not None), default=-1)
        from wandb.proto import wandb_internal_pb2 as pb

        last = -1
        for path in (self.dir / "wandb").glob(f"offline-run-*-{self.run_id}/run-{self.run_id}.wandb"):
            for raw in _log_records(path.read_bytes()):
                record = pb.Record()
                record.ParseFromString(raw)
                if record.WhichOneof("record_type") == "history":
                    for item in record.history.item:
                        if (item.key or "/".join(item.nested_key)) in (f"{series}/step" for series in SERIES):
                            last = max(last, int(json.loads(item.value_json)))
        return last

    def _params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def _log(self, series: str, step: int, scalars: dict[str, float]) -> None:
        self.run.log({**{f"{series}/{k}": v for k, v in scalars.items()}, f"{series}/step": step})

    def _close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "completed" else 1)
