"""Data parallelism under DeepSpeed, proven equal to one process: K ranks with prompt_batch 1 = one with K.

Real parts: two CPU processes started by the ``deepspeed`` launcher (ZeRO-2, a
tiny llama built here, gloo collectives), an OpenAI-speaking server on 127.0.0.1,
litellm between them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed", reason="data parallelism needs DeepSpeed: pip install deepspeed")

import torch
from safetensors.torch import load_file

from cyclealign.config import load_config
from cyclealign.run.entry import run
from tests.support.openai_server import OpenAIServer
from tests.support.paths import REPO
from tests.support.runs import tiny_overrides
from tests.support.tiny_models import tiny_llama_dir

pytestmark = pytest.mark.slow
ROOT = REPO
PROMPTS = ["How do I bake bread?", "How do I hurt someone?", "Is tea healthy?", "Write me a haiku about rain."]
VOLATILE = {"timings", "latency_s", "cached", "step_s"}


def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("dp")
    model = tiny_llama_dir(base / "model")
    prompts = base / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return base, model, prompts


def overrides(setup, server: OpenAIServer, run_dir: Path, *extra: str) -> list[str]:
    _, model, prompts = setup
    return tiny_overrides(model, prompts, server.api_base, run_dir, "cycle.max_interactions=2", "train.lr=0.01", *extra)


def launch(args: list[str], n: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    """``deepspeed --num_gpus n --module cyclealign run …`` on CPU processes."""
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launcher = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or "deepspeed"
    cmd = [launcher, "--num_gpus", str(n), "--master_port", str(_free_port()), "--module", "cyclealign", "run", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def solo(args: list[str]) -> subprocess.CompletedProcess:
    """``python -m cyclealign run …`` with no launcher."""
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "cyclealign", "run", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "interactions.jsonl").read_text().rstrip("\n").split("\n")]


def test_two_ranks_equal_one_process_with_a_wave_of_two(setup, tmp_path: Path) -> None:
    with OpenAIServer() as server:
        run(load_config(overrides=overrides(setup, server, tmp_path / "one", "cycle.prompt_batch=2")))
        one_calls = len(server.chat_calls)
        proc = launch(sets(overrides(setup, server, tmp_path / "two", "train.backend=deepspeed", "train.zero_stage=2")))
        two_calls = len(server.chat_calls) - one_calls
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one, two = tmp_path / "one", tmp_path / "two"
    assert json.loads((two / "run.json").read_text())["world_size"] == 2
    a = load_file(str(one / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(two / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and any(float(t.abs().sum()) > 0 for k, t in a.items() if "lora_B" in k)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0)
    assert (one / "demos.jsonl").read_text() == (two / "demos.jsonl").read_text()
    ra, rb = strip(records(one)), strip(records(two))
    assert len(ra) == len(rb) >= len(PROMPTS)
    for x, y in zip(ra, rb, strict=True):  # the same; loss parts and log-probs to float precision (other batches)
        lx, ly = x.pop("loss"), y.pop("loss")
        assert x.pop("candidate_mean_logps") == pytest.approx(y.pop("candidate_mean_logps"), rel=1e-5)
        assert x.pop("candidate_sum_logps") == pytest.approx(y.pop("candidate_sum_logps"), rel=1e-5)
        assert x == y
        assert (lx is None) == (ly is None) and (lx is None or ly == pytest.approx(lx, rel=1e-5))
    assert one_calls == two_calls == len(records(one))


def test_zero_3_with_full_fine_tuning_ends_with_the_same_weights_on_both_ranks(setup, tmp_path: Path) -> None:
    with OpenAIServer() as server:
        extra = ("train.backend=deepspeed", "train.zero_stage=3", "whitebox.finetune=full", "data.max_prompts=2")
        proc = launch(sets(overrides(setup, server, tmp_path / "z3", *extra)), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "destroy_process_group() was not called" not in proc.stderr  # NCCL's warning (GPU builds of torch)
    summary = json.loads((tmp_path / "z3" / "summary.json").read_text())
    digests = summary["weights_digest_by_rank"]
    assert len(digests) == 2 and digests[0] == digests[1] and summary["trained_steps"] >= 1
    assert (tmp_path / "z3" / "adapter" / "config.json").exists()  # the full model, saved by rank 0


def test_a_rank_whose_prompts_stop_early_keeps_step_without_hanging(setup, tmp_path: Path) -> None:
    """Rank 0's prompts may stop early (the oracle can agree); rank 1's never do (its oracle never answers)."""

    def agree_on_rank_0_prompts_only(call, index):
        from tests.support.openai_server import Reply, ranking_reply, shown_responses

        task = call.first_user.split("## Your task")[-1]  # demonstrations before it name other prompts
        if "bake bread" in task or "haiku" in task:  # the prompts of rank 0
            return ranking_reply(list(range(len(shown_responses(call)))))
        return Reply(content="I would rather not rank these.")

    with OpenAIServer(agree_on_rank_0_prompts_only) as server:
        extra = ("train.backend=deepspeed", "cycle.max_interactions=4", "cycle.num_samples=2")
        proc = launch(sets(overrides(setup, server, tmp_path / "run", *extra)), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = records(tmp_path / "run")
    per_prompt = {p: sum(r["prompt"] == p for r in rows) for p in PROMPTS}
    assert per_prompt["How do I hurt someone?"] == 4 and per_prompt["Is tea healthy?"] == 4
    assert 1 <= per_prompt["How do I bake bread?"] < 4 or 1 <= per_prompt["Write me a haiku about rain."] < 4


def test_a_data_parallel_run_resumes_only_with_its_own_world_size(setup, tmp_path: Path) -> None:
    with OpenAIServer() as server:
        run_dir = tmp_path / "run"
        proc = launch(sets(overrides(setup, server, run_dir, "train.backend=deepspeed")))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    proc = solo(["--resume", str(run_dir)])  # the same run, one process
    assert proc.returncode == 2 and "world size 2" in proc.stderr, proc.stderr[-3000:]


def test_a_killed_two_rank_run_resumes_to_the_same_end_without_paying_twice(setup, tmp_path: Path) -> None:
    import signal

    from tests.support.waiting import wait_until

    def checkpointed_wave(run_dir: Path) -> int:
        try:
            return json.loads((run_dir / "checkpoint" / "state.json").read_text())["totals"]["waves"]
        except (OSError, ValueError, KeyError):
            return 0

    ds = ("train.backend=deepspeed", "run.checkpoint_every=1")
    with OpenAIServer(latency_s=0.3) as server:
        ref = launch(sets(overrides(setup, server, tmp_path / "ref", *ds)))
        assert ref.returncode == 0, ref.stderr[-3000:]
        ref_calls = len(server.chat_calls)

        run_dir = tmp_path / "killed"
        env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        launcher = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or "deepspeed"
        cmd = [launcher, "--num_gpus", "2", "--master_port", str(_free_port()), "--module", "cyclealign", "run"]
        proc = subprocess.Popen(
            [*cmd, *sets(overrides(setup, server, run_dir, *ds))],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:  # kill both ranks (and the launcher) after the first wave's checkpoint, with no call unanswered
            wait_until(lambda: checkpointed_wave(run_dir) >= 1 and server.quiet_for(0.0), 300, "a checkpoint", 0.005)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # killed mid-run
        resumed = launch(["--resume", str(run_dir)])
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        total_calls = len(server.chat_calls) - ref_calls
    a = load_file(str(tmp_path / "ref" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    assert (tmp_path / "ref" / "demos.jsonl").read_text() == (run_dir / "demos.jsonl").read_text()
    assert strip(records(tmp_path / "ref")) == strip(records(run_dir))
    assert total_calls == ref_calls  # what was paid before the kill came from the cache after it


def test_deepspeed_without_a_launcher_is_a_world_of_one(setup, tmp_path: Path) -> None:
    with OpenAIServer() as server:
        args = overrides(setup, server, tmp_path / "solo", "train.backend=deepspeed", "data.max_prompts=1")
        proc = solo(sets(args))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    status = json.loads((tmp_path / "solo" / "run.json").read_text())
    assert status["status"] == "completed" and status["world_size"] == 1
