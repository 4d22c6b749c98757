"""MLflow: one MLflow run per CycleAlign run, through ``MlflowClient`` (no global active run).

The tracking URI is MLflow's own ``MLFLOW_TRACKING_URI``, or the file store
``<run dir>/mlruns`` when unset (allowed through ``MLFLOW_ALLOW_FILE_STORE``, which
MLflow 3 asks for); the experiment is ``MLFLOW_EXPERIMENT_NAME``, or ``cyclealign``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from cyclealign.callbacks import RunInfo
from cyclealign.trackers.base import Tracker, require

_BATCH = 100  # MLflow's limit of parameters in one call
_STATUS = {"completed": "FINISHED", "failed": "FAILED"}  # stopped runs (budget, interrupted) are KILLED


class MLflowTracker(Tracker):
    name = "mlflow"

    def _open(self, info: RunInfo, run_id: str | None) -> str:
        mlflow = require("mlflow", "mlflow", self.name)
        self.entities = require("mlflow.entities", "mlflow", self.name)
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # our default is MLflow's plain file store, which MLflow 3 serves only when asked to
            uri = (Path(info.run_dir) / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "cyclealign"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        run = self.client.create_run(
            experiment_id, run_name=Path(info.run_dir).name, tags={"cyclealign.run_dir": str(info.run_dir)}
        )
        return run.info.run_id

    def _params(self, params: dict[str, Any]) -> None:
        items = [self.entities.Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _BATCH], synchronous=True)

    def _log(self, series: str, step: int, scalars: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        metrics = [self.entities.Metric(f"{series}/{k}", v, now, step) for k, v in scalars.items()]
        self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)

    def _close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=_STATUS.get(status, "KILLED"))
