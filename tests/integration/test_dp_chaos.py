"""Data-parallel chaos: rank 1 SIGKILLs itself inside a collective and inside a checkpoint write.

Real parts: the deepspeed launcher with two CPU processes (gloo), a tiny llama
built here, an OpenAI-speaking server on 127.0.0.1.  The surviving rank must stop
within a deadline (a broken peer, or ``train.collective_timeout_s``), and
``--resume`` must end exactly as an uninterrupted two-rank run, paying again at
most for the oracle calls that were in flight at a kill.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("deepspeed", reason="data parallelism needs DeepSpeed: pip install deepspeed")

import torch
from safetensors.torch import load_file

from tests.support.openai_server import OpenAIServer
from tests.support.paths import REPO
from tests.support.runs import tiny_overrides
from tests.support.tiny_models import tiny_llama_dir

pytestmark = pytest.mark.slow
ROOT = REPO
PROMPTS = ["How do I bake bread?", "How do I hurt someone?", "Is tea healthy?", "Write me a haiku about rain."]
VOLATILE = {"timings", "latency_s", "cached", "step_s"}
STOP_DEADLINE_S = 120  # from rank 1's death to every process of the run gone


def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def records(run_dir: Path) -> list[dict]:
    return [strip(json.loads(x)) for x in (run_dir / "interactions.jsonl").read_text().splitlines()]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], env: dict | None = None, script: str | None = None) -> subprocess.CompletedProcess:
    """``deepspeed --num_gpus 2`` running ``cyclealign run`` (through ``script`` when given: the chaos hooks)."""
    launcher = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or "deepspeed"
    target = [script, "run"] if script else ["--module", "cyclealign", "run"]
    cmd = [launcher, "--num_gpus", "2", "--master_port", str(_free_port()), *target, *args]
    full_env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600)


def sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def test_rank_1_killed_in_a_collective_and_in_a_checkpoint_write_resumes_to_the_same_end(tmp_path: Path) -> None:
    model = tiny_llama_dir(tmp_path / "model")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    extra = ("cycle.max_interactions=2", "train.lr=0.01", "train.backend=deepspeed", "run.checkpoint_every=1")
    extra += ("train.collective_timeout_s=60",)
    rng = random.Random(20261204)
    plan = [f"collective:{rng.randint(6, 14)}", "save_state:2"]  # seeded: which collective of rank 1 is its last
    chaos = tmp_path / "chaos"
    with OpenAIServer(latency_s=0.05) as server:
        ref = tmp_path / "ref"
        done = launch(sets(tiny_overrides(model, prompts, server.api_base, ref, *extra)))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        ref_calls = len(server.chat_calls)
        for i, spec in enumerate(plan):
            args = sets(tiny_overrides(model, prompts, server.api_base, chaos, *extra)) if i == 0 else []
            args = args or ["--resume", str(chaos)]
            died_at = tmp_path / f"died-{i}"
            env = {"CHAOS_KILL": spec, "CHAOS_RANK": "1", "CHAOS_DIED_AT": str(died_at)}
            proc = launch(args, env, script=str(ROOT / "tests/support/chaos_run.py"))
            ended = time.time()
            assert died_at.exists(), f"{spec}: rank 1 never reached its kill point\n{proc.stderr[-3000:]}"
            assert proc.returncode != 0, f"{spec}: the run ended normally without rank 1"
            assert ended - float(died_at.read_text()) < STOP_DEADLINE_S, f"{spec}: rank 0 outlived rank 1 too long"
            assert json.loads((chaos / "run.json").read_text())["status"] in ("running", "failed")
        resumed = launch(["--resume", str(chaos)])
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        chaos_calls = len(server.chat_calls) - ref_calls

    a = load_file(str(ref / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(chaos / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    assert (ref / "demos.jsonl").read_text() == (chaos / "demos.jsonl").read_text()
    assert records(ref) == records(chaos)
    oracle = json.loads((chaos / "summary.json").read_text())["oracle"]
    assert json.loads((chaos / "summary.json").read_text())["resumes"] == len(plan)
    # Paid again: at most the calls in flight at a kill; the journal's numbers agree with what the server saw.
    assert 0 <= chaos_calls - ref_calls <= oracle["repaid_calls"] <= oracle["in_flight_at_crash"]
    assert oracle["paid_calls"] <= chaos_calls <= oracle["paid_calls"] + oracle["in_flight_at_crash"]
