"""The tracker base without a service: step numbering across a resume, the scalars, the public parameters, plugins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cyclealign import plugins
from cyclealign.callbacks import Callback, RunInfo
from cyclealign.hookspecs import hookimpl
from cyclealign.trackers import trackers_for
from cyclealign.trackers.base import STATE_FILE, Tracker, interaction_scalars, public_params


class Recorder(Tracker):
    """A tracker whose service is a list (a fake for the control flow only)."""

    name = "recorder"

    def __init__(self, durable: int | None = None) -> None:
        super().__init__()
        self.sent: list[tuple[str, int, dict[str, float]]] = []
        self.params: dict[str, Any] = {}
        self.durable = durable

    def _open(self, info: RunInfo, run_id: str | None) -> str:
        return run_id or "run-1"

    def _params(self, params: dict[str, Any]) -> None:
        self.params = params

    def _log(self, series: str, step: int, scalars: dict[str, float]) -> None:
        self.sent.append((series, step, scalars))

    def _close(self, status: str) -> None:
        self.closed = status

    def _durable_step(self) -> int | None:
        return self.durable


RECORD = {
    "loss": {"total": 2.5, "rank": 1.0, "sft": 0.5},
    "oracle": {"order": [1, 0], "prompt_tokens": 10, "completion_tokens": 4, "cost_usd": 0.002, "latency_s": 0.3},
    "agreement": [1, 0],
    "agreed_fully": True,
    "timings": {"sample_s": 0.1, "oracle_s": 0.3, "train_s": 0.2, "ended_at": 1.7e9},
}


def test_a_resume_sends_each_step_once_and_continues_the_same_tracker_run(tmp_path: Path) -> None:
    first = Recorder()
    first.on_run_start(RunInfo(tmp_path, "cycle", {"run": {"seed": 1}}))
    for _ in range(4):
        first.on_interaction(RECORD)
    assert [s for _, s, _ in first.sent] == [1, 2, 3, 4]
    state = json.loads((tmp_path / STATE_FILE).read_text())["recorder"]
    assert state == {"run_id": "run-1", "interaction": 4, "step": -1}

    # killed after 4, resumed from a checkpoint that kept 2: records 3 and 4 are redone, then 5 and 6 are new
    again = Recorder()
    again.on_run_start(RunInfo(tmp_path, "cycle", {"run": {"seed": 1}}, resumed=True, records_done=2))
    for _ in range(4):
        again.on_interaction(RECORD)
    assert [s for _, s, _ in again.sent] == [5, 6] and again.run_id == "run-1" and again.params == {}

    # a service that lost its last two points (a buffered writer killed) gets them again
    lossy = Recorder(durable=4)
    lossy.on_run_start(RunInfo(tmp_path, "cycle", {}, resumed=True, records_done=2))
    for _ in range(4):
        lossy.on_interaction(RECORD)
    assert [s for _, s, _ in lossy.sent] == [5, 6]
    lossy_more = Recorder(durable=2)
    lossy_more.on_run_start(RunInfo(tmp_path, "cycle", {}, resumed=True, records_done=2))
    for _ in range(4):
        lossy_more.on_interaction(RECORD)
    assert [s for _, s, _ in lossy_more.sent] == [3, 4, 5, 6]

    # a service that lost everything: the two records the checkpoint kept are sent from interactions.jsonl
    (tmp_path / "interactions.jsonl").write_text(json.dumps(RECORD) + "\n" + json.dumps(RECORD) + "\n")
    lost = Recorder(durable=-1)
    lost.on_run_start(RunInfo(tmp_path, "cycle", {}, resumed=True, records_done=2))
    for _ in range(4):
        lost.on_interaction(RECORD)
    assert [s for _, s, _ in lost.sent] == [1, 2, 3, 4, 5, 6]
    assert lost.sent[0][2] == interaction_scalars(RECORD)


def test_the_scalars_of_an_interaction_and_of_a_step(tmp_path: Path) -> None:
    scalars = interaction_scalars(RECORD)
    assert scalars["loss/total"] == 2.5 and scalars["agreement/full"] == 1.0 and scalars["agreement/length"] == 2.0
    assert scalars["oracle/cost_usd"] == 0.002 and scalars["oracle/failed"] == 0.0
    assert scalars["time/train_s"] == 0.2 and "time/ended_at" not in scalars
    tracker = Recorder()
    tracker.on_run_start(RunInfo(tmp_path, "train", {}))
    tracker.on_step({"step": 7, "loss": {"total": 1.5}, "lr": 1e-4, "stage": "warmup"})
    tracker.on_step({"step": 7, "loss": {"total": 1.5}})  # the same step again (a resume redoing it): not sent
    assert tracker.sent == [("step", 7, {"loss/total": 1.5, "lr": 1e-4})]


def test_parameters_are_the_public_config_flattened_and_never_a_key_named_like_a_secret() -> None:
    config = {"oracle": {"model": "gpt-4", "options": {"api_key_env": "MY_KEY", "api_key": "sk-x", "token": "t"}}}
    assert public_params(config) == {"oracle.model": "gpt-4", "oracle.options.api_key_env": "MY_KEY"}


def test_a_plugin_registers_a_tracker_by_name() -> None:
    made: list[Callback] = []

    class Plugin:
        @hookimpl
        def register_trackers(self, register: Any) -> None:
            register("notebook", lambda: made.append(Callback()) or made[-1], "prints nothing")

    plugin = Plugin()
    plugins.register_plugin(plugin, name="tracker-test-plugin")
    try:
        (tracker,) = trackers_for(["notebook"])
        assert made == [tracker]
    finally:
        plugins.unregister_plugin(plugin)
