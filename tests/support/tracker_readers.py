"""Read back what each experiment tracker wrote, with the tracker's own readers where it has one.

Every reader returns ``{tag: [(step, value), ...]}`` in the order the points were written,
plus the parameters the run logged, so a test can compare them with ``interactions.jsonl``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
from collections import defaultdict
from pathlib import Path
from typing import Any

Points = dict[str, list[tuple[int, float]]]


def tensorboard_points(logdir: Path) -> tuple[Points, str]:
    """Scalars through TensorBoard's ``EventAccumulator`` (every event file of the directory), and the config text."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    points = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    text = "".join(b.decode() for e in acc.Tensors("config/text_summary") for b in e.tensor_proto.string_val)
    return points, text


def mlflow_points(tracking_uri: str, run_id: str) -> tuple[Points, dict[str, str]]:
    """Metric histories and parameters from MLflow's store, through ``MlflowClient``."""
    import mlflow

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its file store only when asked to
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    points = {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)] for key in run.data.metrics}
    return points, dict(run.data.params)


_BLOCK = 32768  # the W&B transaction log: LevelDB's log format, 7-byte file header, 7-byte record headers


def _wandb_records(data: bytes) -> list[bytes]:
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            pos += left - 7
            continue
        chunk, pos = data[pos : pos + length], pos + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            out.append(buf + chunk)
    return out


def wandb_points(wandb_dir: Path, run_id: str) -> tuple[Points, dict[str, Any]]:
    """History and config of every offline start of run ``run_id``, parsed with W&B's own protobuf records."""
    from wandb.proto import wandb_internal_pb2 as pb

    points: Points = defaultdict(list)
    config: dict[str, Any] = {}
    files = sorted(wandb_dir.glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert files, f"no offline W&B run {run_id} under {wandb_dir}"
    for path in files:
        for raw in _wandb_records(path.read_bytes()):
            record = pb.Record()
            record.ParseFromString(raw)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
            elif kind == "config":
                config.update({i.key: json.loads(i.value_json) for i in record.config.update})
            elif kind == "history":
                row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                for series in ("interaction", "step"):
                    step = row.get(f"{series}/step")
                    if step is None:
                        continue
                    for key, value in row.items():
                        if key.startswith(f"{series}/") and key != f"{series}/step":
                            points[key].append((int(step), float(value)))
    return dict(points), config


def trackio_points(trackio_dir: Path, project: str, run_name: str) -> tuple[Points, dict[str, Any]]:
    """Rows of trackio's SQLite store (one JSON object of metrics per logged step) and the run's config."""
    points: Points = defaultdict(list)
    with sqlite3.connect(trackio_dir / f"{project}.db") as db:
        rows = db.execute("SELECT step, metrics FROM metrics WHERE run_name = ? ORDER BY id", (run_name,)).fetchall()
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        config: dict[str, Any] = {}
        if "configs" in tables:
            for (text,) in db.execute("SELECT config FROM configs WHERE run_name = ?", (run_name,)):
                config.update(json.loads(text))
    for step, text in rows:
        for key, value in json.loads(text).items():
            if isinstance(value, (int, float)) and not key.startswith("_"):
                points[key].append((int(step), float(value)))
    return dict(points), config
