"""One GPU per process, a process group destroyed at the end of every run, ZeRO-3 loaded already partitioned.

``device_name`` is a pure function, so the launcher's rule (``LOCAL_RANK=3`` →
``cuda:3``) is tested without a GPU.  The rest uses real DeepSpeed: a world of
one in this process, and two CPU processes under the ``deepspeed`` launcher.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cyclealign.errors import SetupError, WhiteboxError
from cyclealign.infra import process_group
from cyclealign.infra.process_group import bind_local_gpu, device_name
from tests.support.paths import REPO

ROOT = REPO
NCCL_WARNING = "destroy_process_group() was not called"


def test_a_stale_build_lock_of_deepspeeds_cpu_op_is_named(tmp_path: Path) -> None:
    """torch waits on a build lock without end; a lock a killed build left behind is named, a fresh one is not."""
    build = tmp_path / "py311_cpu" / "deepspeed_shm_comm"
    build.mkdir(parents=True)
    lock = build / "lock"
    lock.touch()
    env = {"TORCH_EXTENSIONS_DIR": str(tmp_path)}
    made = lock.stat().st_mtime
    assert process_group.stale_extension_locks(env, now=made + 5) == []  # a build in progress
    assert process_group.stale_extension_locks(env, now=made + process_group.STALE_LOCK_S + 1) == [lock]
    assert process_group.stale_extension_locks({"TORCH_EXTENSIONS_DIR": str(build.parent)}, now=made + 10_000) == [lock]


def test_auto_is_the_launchers_local_gpu() -> None:
    launched = {"LOCAL_RANK": "3", "WORLD_SIZE": "4", "RANK": "3"}
    assert device_name("auto", True, launched) == "cuda:3"
    assert device_name("auto", True, {}) == "cuda"  # no launcher: the current GPU, as before
    assert device_name("auto", False, launched) == "cpu"
    assert device_name("cuda:1", True, launched) == "cuda:1"  # an explicit device is the user's word
    assert device_name("cpu", True, launched) == "cpu"
    with pytest.raises(SetupError, match="LOCAL_RANK='x'"):
        device_name("auto", True, {"LOCAL_RANK": "x"})


def test_binding_sets_the_local_gpu_and_refuses_one_that_is_not_visible(monkeypatch) -> None:
    bound: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", bound.append)
    bind_local_gpu({"LOCAL_RANK": "1"})
    bind_local_gpu({})  # no launcher: nothing to bind
    assert bound == [1]
    with pytest.raises(SetupError, match="CUDA_VISIBLE_DEVICES"):
        bind_local_gpu({"LOCAL_RANK": "2"})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.support.tiny_models import tiny_llama_dir

    base = tmp_path_factory.mktemp("pg")
    prompts = base / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "How do I bake bread?"}) + "\n")
    return tiny_llama_dir(base / "model"), prompts


def _deepspeed_run(tiny, run_dir: Path, *extra: str):
    from cyclealign.config import load_config
    from cyclealign.run.entry import run
    from tests.support.openai_server import OpenAIServer
    from tests.support.runs import tiny_overrides

    model, prompts = tiny
    with OpenAIServer() as server:
        sets = ("train.backend=deepspeed", "cycle.max_interactions=1", "whitebox.device=cpu", *extra)
        return run(load_config(overrides=tiny_overrides(model, prompts, server.api_base, run_dir, *sets)))


@pytest.fixture
def no_launcher(monkeypatch):
    pytest.importorskip("deepspeed", reason="needs DeepSpeed: pip install deepspeed")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    assert not torch.distributed.is_initialized()
    yield
    if torch.distributed.is_initialized():  # a failed assertion must not leak a group into later tests
        import deepspeed.comm

        deepspeed.comm.destroy_process_group()


def test_a_deepspeed_run_destroys_the_group_it_made_also_on_error(tiny, tmp_path: Path, no_launcher) -> None:
    result = _deepspeed_run(tiny, tmp_path / "ok")
    assert json.loads((result.run_dir / "run.json").read_text())["status"] == "completed"
    assert not torch.distributed.is_initialized()
    with pytest.raises(WhiteboxError, match=r"whitebox\.model"):  # after the group was made, before training
        _deepspeed_run(tiny, tmp_path / "bad", f"whitebox.model={tmp_path / 'missing'}")
    assert not torch.distributed.is_initialized()


def test_a_group_the_user_made_is_left_alone(tiny, tmp_path: Path, no_launcher, monkeypatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "0")  # as torchrun sets it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    _deepspeed_run(tiny, tmp_path / "run")
    assert torch.distributed.is_initialized()  # the user's, still theirs to destroy
    process_group.leave()
    assert torch.distributed.is_initialized()


def _launch_probe(model: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    env["OMP_NUM_THREADS"] = "1"
    launcher = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or "deepspeed"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [launcher, "--num_gpus", "2", "--master_port", str(port), str(ROOT / "tests/support/zero3_probe.py")]
    return subprocess.run([*cmd, str(model), str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_zero_3_loads_each_rank_s_shard_only_and_still_samples_and_trains(tiny, tmp_path: Path) -> None:
    pytest.importorskip("deepspeed", reason="needs DeepSpeed: pip install deepspeed")
    from cyclealign.config import load_config
    from cyclealign.protocols import Prompt
    from cyclealign.run.checkpoint import reseed_all
    from cyclealign.whitebox import load_whitebox
    from cyclealign.whitebox.sampler import HFSampler
    from tests.support import zero3_probe

    model, _ = tiny
    proc = _launch_probe(model, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert NCCL_WARNING not in proc.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 for r in ranks)
    sizes = [p.numel() for p in _plain_base(model).parameters()]
    full = sum(sizes)
    for r in ranks:  # right after loading, before DeepSpeed's engine: a shard each, nothing whole
        assert r["partitioned"] and r["full"] == full and r["visible"] == 0
        assert r["local"] <= sum(-(-n // 2) for n in sizes)  # at most half of every weight (rounded up)
    assert sum(r["local"] for r in ranks) >= full  # together they hold every weight (with padding)
    # The gathered weights are the checkpoint's exactly: the same samples as a plain load without DeepSpeed.
    config = load_config(overrides=[*zero3_probe.overrides(str(model)), "train.backend=torch"])
    reseed_all(f"{config.run.seed}:init")
    wb = load_whitebox(config.whitebox, seed=config.run.seed)
    prompt = Prompt.from_text("p0", zero3_probe.PROMPT)
    plain = HFSampler(wb, config.whitebox).sample_many([prompt], zero3_probe.SAMPLES, [zero3_probe.KEY])[0]
    for r in ranks:
        assert r["samples"] == [list(c.token_ids) for c in plain]
        assert r["finite"] and r["loss"] == pytest.approx(ranks[0]["loss"], rel=1e-6)


def _plain_base(model: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model)
