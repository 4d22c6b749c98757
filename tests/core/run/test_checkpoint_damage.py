"""A damaged newest checkpoint falls back to the previous one and still ends exactly as an uninterrupted run.

Real parts: a tiny llama built here, a local OpenAI-speaking server, the run's
own files truncated on disk the way a full disk or a cut copy leaves them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console
from safetensors.torch import load_file
from typer.testing import CliRunner

from cyclealign.cli.main import app
from cyclealign.config import load_config
from cyclealign.offline.settings import OfflineTrainConfig
from cyclealign.offline.train import build_recipe
from cyclealign.offline.train import resume as resume_training
from cyclealign.run.entry import resume, run
from tests.support.openai_server import OpenAIServer
from tests.support.runs import tiny_overrides
from tests.support.tiny_models import tiny_llama_dir

QUIET = Console(quiet=True)
VOLATILE = {"timings", "latency_s", "cached", "step_s"}
PROMPTS = ["How do I bake bread?", "Is tea healthy?", "Write me a haiku about rain."]


def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def lines(path: Path) -> list[dict]:
    return [strip(json.loads(x)) for x in path.read_text().splitlines()]


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    a = load_file(str(a_dir / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(b_dir / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] == b[name]).all(), name


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("damage-model"))


@pytest.mark.slow
def test_each_damaged_checkpoint_file_falls_back_and_ends_as_an_uninterrupted_run(model_dir, tmp_path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    ref = tmp_path / "ref"
    with OpenAIServer() as server:
        extra = ("cycle.max_interactions=1", "cycle.prompt_batch=1", "run.checkpoint_every=1", "train.lr=0.01")
        run(load_config(overrides=tiny_overrides(model_dir, prompts, server.api_base, ref, *extra)), console=QUIET)
        paid = len(server.chat_calls)
        assert json.loads((ref / "checkpoint.prev" / "state.json").read_text())["units_done"] == 2
        files = sorted(p.relative_to(ref).as_posix() for p in (ref / "checkpoint").rglob("*") if p.is_file())
        assert {"checkpoint/manifest.json", "checkpoint/state.json", "checkpoint/trainer/trainable.safetensors"} <= set(
            files
        )
        for i, name in enumerate(files):  # every file of the newest checkpoint, one at a time
            work = tmp_path / f"damaged-{i}"
            shutil.copytree(ref, work)
            truncate(work / name)
            if i:
                resume(work, console=QUIET)
            else:  # what the user sees
                shown = CliRunner().invoke(app, ["run", "--resume", str(work)]).output
                assert f"damaged checkpoint file {name}" in shown, shown
                assert "after 2 prompts instead of 3: 1 prompt redone" in shown, shown
            fallback = json.loads((work / "run.json").read_text())["fallbacks"][-1]
            assert fallback["damaged"][0].startswith(name), fallback
            assert (fallback["resumed_after"], fallback["instead_of"], fallback["redone"]) == (2, 3, 1)
            assert lines(work / "interactions.jsonl") == lines(ref / "interactions.jsonl"), name
            assert (work / "demos.jsonl").read_text() == (ref / "demos.jsonl").read_text(), name
            assert_same_weights(ref, work)
        assert len(server.chat_calls) == paid  # the redone prompt's oracle call came from the cache

    both = tmp_path / "both"
    shutil.copytree(ref, both)
    truncate(both / "checkpoint" / "trainer" / "trainable.safetensors")
    truncate(both / "checkpoint.prev" / "state.json")
    result = CliRunner().invoke(app, ["run", "--resume", str(both)])
    assert result.exit_code == 2, result.output
    assert "no usable checkpoint" in result.output and "trainable.safetensors" in result.output
    assert "Traceback" not in result.output
    assert json.loads((both / "run.json").read_text())["status"] == "completed"  # not marked failed


def test_a_damaged_offline_checkpoint_falls_back_and_ends_as_an_uninterrupted_run(model_dir, tmp_path) -> None:
    rows = [{"prompt": f"Question {i}?", "chosen": "A kind, careful answer.", "rejected": "No."} for i in range(8)]
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def config(run_dir: Path) -> OfflineTrainConfig:
        sets = [f"whitebox.model={model_dir}", f"offline.source={source}", f"run.dir={run_dir}", "run.progress=false"]
        sets += [
            "train.lr=0.01",
            "run.checkpoint_interval_s=0",
            "offline.batch_size=2",
            "loss.name=dpo",
            "run.checkpoint_every=1",
        ]
        return load_config(None, sets, schema=OfflineTrainConfig)

    ref = tmp_path / "ref"
    build_recipe(config(ref), console=QUIET).run()
    work = tmp_path / "work"
    shutil.copytree(ref, work)
    truncate(work / "checkpoint" / "trainer" / "trainable.safetensors")
    resume_training(work, console=QUIET)
    meta = json.loads((work / "run.json").read_text())
    assert meta["fallbacks"][-1]["redone"] == 1 and meta["status"] == "completed"
    assert lines(work / "steps.jsonl") == lines(ref / "steps.jsonl")
    assert_same_weights(ref, work)
