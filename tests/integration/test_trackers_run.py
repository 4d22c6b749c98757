"""run.report_to through real tiny runs: read back what TensorBoard, MLflow, W&B and trackio wrote.

Each tracker must hold one point per interaction for every scalar, at steps 1..N, with the
values of ``interactions.jsonl``; the public config as parameters, never the oracle's key;
and after a SIGKILL and a resume, the same tracker run with continuous steps, none twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cyclealign.config import load_config
from cyclealign.errors import CycleAlignError
from cyclealign.run.entry import run
from cyclealign.trackers import trackers_for
from cyclealign.trackers.base import interaction_scalars
from tests.support.openai_server import OpenAIServer
from tests.support.runs import tiny_overrides
from tests.support.tiny_models import tiny_llama_dir
from tests.support.tracker_readers import mlflow_points, tensorboard_points, trackio_points, wandb_points

pytest.importorskip("tensorboard", reason="the tracker test extras (noxfile TEST_EXTRAS) bring tensorboard")

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-live-TRACKERS-4f9c2e7a1b"  # a key-looking value the oracle reads from the environment
MUST_HAVE = {
    "interaction/loss/total",
    "interaction/loss/rank",
    "interaction/agreement/full",
    "interaction/oracle/prompt_tokens",
    "interaction/oracle/completion_tokens",
    "interaction/oracle/cost_usd",
    "interaction/oracle/latency_s",
    "interaction/time/sample_s",
    "interaction/time/train_s",
}
VOLATILE = ("latency_s", "time/", "step_s")  # timings differ when a killed interaction is redone
TRACKER_ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off", "WANDB_DISABLE_GIT": "true"}


def _prompts(tmp: Path, n: int) -> Path:
    path = tmp / "prompts.jsonl"
    questions = ["How do I bake bread?", "How do I hurt someone?", "Why is the sky blue?", "Tips for running?"]
    path.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in questions[:n]))
    return path


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "interactions.jsonl").read_text().splitlines()]


def _check_points(name: str, points: dict, records: list[dict], *, exact_volatile: bool) -> None:
    """Every scalar of every record, once, at steps 1..N, with the record's value."""
    expected = [interaction_scalars(r) for r in records]
    tags = {f"interaction/{k}" for e in expected for k in e}
    assert tags >= MUST_HAVE and tags <= set(points), (name, sorted(tags - set(points)))
    for tag in tags:
        steps = [s for s, _ in points[tag]]
        assert steps == list(range(1, len(records) + 1)), (name, tag, steps)
        if not exact_volatile and any(v in tag for v in VOLATILE):
            continue
        want = [e[tag.removeprefix("interaction/")] for e in expected]
        assert [v for _, v in points[tag]] == pytest.approx(want, rel=1e-6), (name, tag)


def _no_secret_under(*paths: Path) -> None:
    for root in paths:
        for f in [root] if root.is_file() else root.rglob("*"):
            if f.is_file():
                assert SECRET.encode() not in f.read_bytes(), f


def test_four_trackers_hold_every_interaction_and_the_public_config(tmp_path: Path, monkeypatch) -> None:
    for key, value in {**TRACKER_ENV, "TRACKIO_DIR": str(tmp_path / "trackio"), "TRACKERS_TEST_KEY": SECRET}.items():
        monkeypatch.setenv(key, value)
    if "trackio" in sys.modules:  # trackio reads TRACKIO_DIR once, at import
        pytest.skip("trackio was imported earlier in this process; its store would be elsewhere")
    run_dir = tmp_path / "run"
    model_dir, prompts = tiny_llama_dir(tmp_path / "model"), _prompts(tmp_path, 2)
    with OpenAIServer() as server:
        overrides = tiny_overrides(model_dir, prompts, server.api_base, run_dir, "cycle.max_interactions=2")
        extra = ["cycle.early_stop=false", "oracle.options.api_key_env=TRACKERS_TEST_KEY"]
        config = load_config(overrides=[*overrides, *extra, "run.report_to=[tensorboard,mlflow,wandb,trackio]"])
        run(config)
    records = _records(run_dir)
    assert len(records) == 4
    state = json.loads((run_dir / "trackers.json").read_text())
    assert {k: v["interaction"] for k, v in state.items()} == dict.fromkeys(
        ["tensorboard", "mlflow", "wandb", "trackio"], 4
    )

    tb, config_text = tensorboard_points(run_dir / "tensorboard")
    _check_points("tensorboard", tb, records, exact_volatile=True)
    assert "oracle.options.api_key_env: TRACKERS_TEST_KEY" in config_text
    ml, params = mlflow_points((run_dir / "mlruns").as_uri(), state["mlflow"]["run_id"])
    _check_points("mlflow", ml, records, exact_volatile=True)
    assert params["cycle.max_interactions"] == "2" and params["oracle.model"] == "openai/tiny-oracle"
    wb, wb_config = wandb_points(run_dir / "wandb", state["wandb"]["run_id"])
    _check_points("wandb", wb, records, exact_volatile=True)
    assert wb_config["loss.name"] == config.loss.name
    tk, tk_config = trackio_points(tmp_path / "trackio", "cyclealign", state["trackio"]["run_id"])
    _check_points("trackio", tk, records, exact_volatile=True)
    assert tk_config["data.source"] == str(prompts)
    _no_secret_under(run_dir / "tensorboard", run_dir / "mlruns", run_dir / "wandb", tmp_path / "trackio")


def _own_env() -> dict[str, str]:
    """This process's environment without W&B's service address (set by an in-process run): its own service."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WANDB_SERVICE")}


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tests/support/chaos_run.py"), *args],
        env={**_own_env(), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_killed_then_resumed_run_continues_each_tracker_run_without_a_step_twice(tmp_path: Path) -> None:
    run_dir, trackio_dir = tmp_path / "run", tmp_path / "trackio"
    model_dir, prompts = tiny_llama_dir(tmp_path / "model"), _prompts(tmp_path, 3)
    env = {
        **TRACKER_ENV,
        "TRACKIO_DIR": str(trackio_dir),
        "HF_HUB_OFFLINE": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    with OpenAIServer() as server:
        overrides = tiny_overrides(model_dir, prompts, server.api_base, run_dir, "cycle.max_interactions=2")
        overrides += ["cycle.early_stop=false", "run.report_to=[tensorboard,mlflow,wandb,trackio]"]
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(load_config(overrides=overrides).public_dict()))
        # checkpoint 1 is the start, 2 after prompt 1, 3 after prompt 2: killed while writing it,
        # with four interactions sent to the trackers and a checkpoint that covers two.
        killed = _cli(["run", str(config)], {**env, "CHAOS_KILL": "checkpoint:3"})
        assert killed.returncode == -9, killed.stderr[-3000:]
        before = json.loads((run_dir / "trackers.json").read_text())
        assert {v["interaction"] for v in before.values()} == {4}
        resumed = _cli(["run", "--resume", str(run_dir)], env)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = _records(run_dir)
    assert len(records) == 6
    after = json.loads((run_dir / "trackers.json").read_text())
    assert {k: v["run_id"] for k, v in after.items()} == {k: v["run_id"] for k, v in before.items()}
    assert {v["interaction"] for v in after.values()} == {6}

    _check_points("tensorboard", tensorboard_points(run_dir / "tensorboard")[0], records, exact_volatile=False)
    ml = mlflow_points((run_dir / "mlruns").as_uri(), after["mlflow"]["run_id"])[0]
    _check_points("mlflow", ml, records, exact_volatile=False)
    _check_points("wandb", wandb_points(run_dir / "wandb", after["wandb"]["run_id"])[0], records, exact_volatile=False)
    tk = trackio_points(trackio_dir, "cyclealign", after["trackio"]["run_id"])[0]
    _check_points("trackio", tk, records, exact_volatile=False)


def test_report_to_names_the_key_for_an_unknown_tracker_and_the_extra_for_a_missing_one(monkeypatch) -> None:
    with pytest.raises(CycleAlignError, match=r"run\.report_to: unknown tracker 'neptune'.*tensorboard"):
        trackers_for(["neptune"])
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if the extra were not installed
    (tracker,) = trackers_for(["wandb"])
    from cyclealign.callbacks import RunInfo

    with pytest.raises(CycleAlignError, match=r'run\.report_to: .*wandb.*pip install "cyclealign-core\[wandb\]"'):
        tracker.on_run_start(RunInfo(Path("."), "cycle", {}))
