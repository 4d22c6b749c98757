"""`cyclealign train` with DeepSpeed: two CPU processes make the steps of one process with the whole batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.core.offline.test_offline_train import trl_pairs
from tests.support.paths import REPO
from tests.support.tiny_models import tiny_llama_dir

pytest.importorskip("deepspeed", reason="data parallelism needs DeepSpeed: pip install deepspeed")
ROOT = REPO


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # the deepspeed launcher and two processes that each start torch
def test_two_deepspeed_processes_equal_one_torch_process(tmp_path: Path) -> None:
    model = tiny_llama_dir(tmp_path / "model")
    source = trl_pairs(tmp_path / "pairs.jsonl", n=20)
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    common = [f"whitebox.model={model}", f"offline.source={source}", "loss.name=pro", "train.lr=0.01"]
    common += ["offline.batch_size=4", "offline.max_steps=3", "run.progress=false"]

    def sets(run_dir: Path, *extra: str) -> list[str]:
        return [a for item in [*common, f"run.dir={run_dir}", *extra] for a in ("--set", item)]

    solo_env = {k: v for k, v in env.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    one = subprocess.run(
        [sys.executable, "-m", "cyclealign", "train", *sets(tmp_path / "one")],
        cwd=ROOT,
        env=solo_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    launcher = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or "deepspeed"
    cmd = [launcher, "--num_gpus", "2", "--master_port", str(_free_port()), "--module", "cyclealign", "train"]
    two = subprocess.run(
        [*cmd, *sets(tmp_path / "two", "train.backend=deepspeed", "train.zero_stage=2")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "run.json").read_text())["world_size"] == 2
    a = load_file(str(tmp_path / "one" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "two" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0)
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s2["world_size"] == 2 and s1["steps"] == s2["steps"] == 3
    assert s1["heldout_after"]["margin"] == pytest.approx(s2["heldout_after"]["margin"], abs=1e-4)
