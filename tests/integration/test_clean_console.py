"""A clean console: a tiny `cyclealign run` and `cyclealign train` print no warning raised inside a third-party package,
and every run (cycle, offline, Aligner) destroys the process group it made."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.openai_server import OpenAIServer
from tests.support.runs import tiny_overrides
from tests.support.tiny_models import tiny_llama_dir

ROOT = Path(__file__).resolve().parents[2]
# How Python prints a warning: "<file>:<line>: <Category>: <message>".
WARNING_LINE = re.compile(r"^(?P<file>\S+?\.py):\d+: (?P<category>\w*Warning): (?P<message>.*)$", re.M)
NCCL_WARNING = "destroy_process_group() was not called"
OURS = ("cyclealign", "cyclealign_losses", "cyclealign_oracles")


def third_party_warnings(stderr: str) -> list[str]:
    """Every warning printed from a file outside this project's packages."""
    found = []
    for m in WARNING_LINE.finditer(stderr):
        parts = Path(m["file"]).parts
        if not any(p in OURS for p in parts) or "site-packages" in parts:
            found.append(m.group(0))
    return found + [line for line in stderr.splitlines() if NCCL_WARNING in line]


def test_the_warning_finder_finds_a_third_party_warning() -> None:
    stderr = (
        "/venv/lib/python3.11/site-packages/transformers/modeling_utils.py:3314: FutureWarning: `x` is deprecated\n"
        "  warnings.warn(\n"
        "/repo/packages/cyclealign-core/src/cyclealign/data/jsonl.py:55: UserWarning: p.jsonl: skipped 2 rows\n"
    )
    assert third_party_warnings(stderr) == [stderr.splitlines()[0]]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # what a user's shell shows
    env |= {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *sys.path])
    cmd = [sys.executable, "-m", "cyclealign", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("clean") / "model")


def test_a_tiny_cycle_run_prints_no_third_party_warning(model_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "How do I bake bread?"}) + "\n")
    with OpenAIServer() as server:
        sets = tiny_overrides(model_dir, prompts, server.api_base, tmp_path / "run", "cycle.max_interactions=1")
        done = _cli("run", *[a for s in sets for a in ("--set", s)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "completed"
    assert third_party_warnings(done.stderr) == [], done.stderr[-3000:]


def _pairs(path: Path) -> Path:
    rows = [{"prompt": f"Question {i}?", "chosen": "Sure, here is how.", "rejected": "No."} for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_tiny_offline_train_prints_no_third_party_warning(model_dir: Path, tmp_path: Path) -> None:
    sets = [f"whitebox.model={model_dir}", f"offline.source={_pairs(tmp_path / 'p.jsonl')}"]
    sets += [f"run.dir={tmp_path / 'train'}", "run.progress=false", "offline.max_steps=1", "loss.name=dpo"]
    done = _cli("train", *[a for s in sets for a in ("--set", s)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert third_party_warnings(done.stderr) == [], done.stderr[-3000:]


@pytest.fixture
def no_launcher(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    pytest.importorskip("deepspeed", reason="needs DeepSpeed: pip install deepspeed")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    assert not torch.distributed.is_initialized()
    yield
    if torch.distributed.is_initialized():  # a failed assertion must not leak a group into later tests
        import deepspeed.comm

        deepspeed.comm.destroy_process_group()


def test_offline_and_aligner_training_leave_the_process_group_they_made(
    model_dir: Path, tmp_path: Path, no_launcher: None
) -> None:
    from rich.console import Console

    from cyclealign.aligner.settings import AlignerTrainConfig
    from cyclealign.aligner.training import build_recipe as aligner_recipe
    from cyclealign.config import load_config
    from cyclealign.offline.settings import OfflineTrainConfig
    from cyclealign.offline.train import build_recipe as offline_recipe

    quiet = Console(quiet=True)
    common = [f"whitebox.model={model_dir}", "run.progress=false", "train.backend=deepspeed", "whitebox.device=cpu"]
    offline = [*common, f"offline.source={_pairs(tmp_path / 'p.jsonl')}", f"run.dir={tmp_path / 'offline'}"]
    config = load_config(None, [*offline, "offline.max_steps=1"], schema=OfflineTrainConfig)
    result = offline_recipe(config, console=quiet).run()
    assert result.summary["steps"] == 1 and not torch.distributed.is_initialized()

    triples = tmp_path / "triples.jsonl"
    rows = [{"question": f"Question {i}?", "answer": "No.", "correction": "Sure, here is how."} for i in range(6)]
    triples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    aligner = [*common, f"aligner.data=[{triples}]", f"run.dir={tmp_path / 'aligner'}"]
    aligner += ["aligner.max_steps=1", "aligner.warmup_max_steps=1"]
    result = aligner_recipe(load_config(None, aligner, schema=AlignerTrainConfig), console=quiet).run()
    assert result.summary["steps"] >= 1 and not torch.distributed.is_initialized()
