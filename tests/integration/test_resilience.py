"""Never lose a run: SIGKILL chaos with exact resume, graceful Ctrl+C, bad input, secrets."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tests.support.openai_server import OpenAIServer, default_behaviour
from tests.support.paths import REPO
from tests.support.tiny_models import tiny_llama_dir
from tests.support.waiting import Output, wait_until

ROOT = REPO
ENV = {
    **os.environ,
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "HF_HUB_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONPATH": str(ROOT),
}
VOLATILE = {"timings", "latency_s", "cached", "step_s"}
RUN_S = 300  # the most a tiny run may take to reach a state (starting torch and the model included), even loaded


def write_config(tmp: Path, model_dir: Path, server: OpenAIServer, run_dir: Path, **extra: dict) -> Path:
    prompts = tmp / "prompts.jsonl"
    if not prompts.exists():
        questions = ["How do I bake bread?", "Why is the sky blue?", "How can I hurt someone?", "Tips for running?"]
        questions.append("How do I keep basil alive?")
        prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in questions))
    config = {
        "whitebox": {"model": str(model_dir), "max_new_tokens": 10},
        "oracle": {
            "name": "local",
            "model": "openai/tiny",
            "options": {"api_base": server.api_base, "serve_gguf": None},
        },
        "cycle": {"max_interactions": 2, "early_stop": False},
        "data": {"source": str(prompts), "max_prompts": 5},
        "train": {"lr": 0.01},
        "run": {"dir": str(run_dir), "progress": False, "seed": 3, "checkpoint_interval_s": 0},  # a kill finds many
    }
    for section, values in extra.items():
        config[section].update(values)
    path = tmp / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def cli(args: list[str], env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests/support/chaos_run.py"), *args],
        env={**ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@contextlib.contextmanager
def killed_at_exit(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """A test that fails while waiting on ``proc`` leaves no run behind."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def strip(record: dict) -> dict:
    out = {}
    for k, v in record.items():
        if k in VOLATILE:
            continue
        out[k] = strip(v) if isinstance(v, dict) else v
    return out


def records(run_dir: Path) -> list[dict]:
    return [strip(json.loads(line)) for line in (run_dir / "interactions.jsonl").read_text().rstrip("\n").split("\n")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("chaos-model"))


QUIET_S = 0.3  # after the last answer: far longer than the client takes to read and journal it


@pytest.mark.slow
@pytest.mark.timing
def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(model_dir: Path, tmp_path: Path) -> None:
    ref_dir, chaos_dir = tmp_path / "reference", tmp_path / "chaos"
    with OpenAIServer(latency_s=0.2) as server:
        proc = cli(["run", str(write_config(tmp_path, model_dir, server, ref_dir))])
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        reference_calls = len(server.chat_calls)
    assert reference_calls == 10

    rng = random.Random(20261122)
    # Self-inflicted kills inside writes, and external kills at random moments after the k-th oracle call.
    plan = [
        {"CHAOS_KILL": "checkpoint:2"},  # while writing the checkpoint after the first prompt
        {"external_after_calls": 3},
        {"CHAOS_KILL": "flush:3"},  # half-way through writing demos.jsonl
        {"CHAOS_KILL": "checkpoint:1"},
        {"external_after_calls": 8},  # two prompts' calls on from where the kills above leave it
        {"CHAOS_KILL": "checkpoint:1"},
    ]
    kills = 0
    with OpenAIServer(latency_s=0.2) as server:  # latency keeps each prompt long enough to be hit
        config = write_config(tmp_path, model_dir, server, chaos_dir)
        for i, step in enumerate(plan):
            args = ["run", str(config)] if i == 0 else ["run", "--resume", str(chaos_dir)]
            env = {k: v for k, v in step.items() if k == "CHAOS_KILL"}
            proc = cli(args, env=env)
            if "external_after_calls" in step:
                target = step["external_after_calls"]

                def killer(p=proc, target=target) -> None:
                    while p.poll() is None and len(server.chat_calls) < target:
                        time.sleep(0.01)
                    time.sleep(rng.uniform(0.0, 0.4))  # the random moment: the chaos itself, not a wait
                    # Never while an oracle request is unanswered: a call killed in flight is one the API
                    # may bill and no client can ever have the answer of, so it is outside what a resume can save.
                    # Held from here, a new request waits before the "API" sees it (as on a slow network), so the
                    # calls in flight end and the kill follows within a call's latency, wherever the run is.
                    server.hold()
                    try:
                        while p.poll() is None and not server.quiet_for(QUIET_S):
                            time.sleep(0.005)
                        p.kill()
                        p.wait()
                    finally:
                        server.release()

                threading.Thread(target=killer, daemon=True).start()
            _out, err = proc.communicate(timeout=300)
            assert proc.returncode == -signal.SIGKILL, f"step {i} ({step}) was not killed: rc={proc.returncode}\n{err}"
            kills += 1
            state = json.loads((chaos_dir / "checkpoint" / "state.json").read_text())
            assert state["units_done"] <= 5  # the previous checkpoint is intact and readable
        proc = cli(["run", "--resume", str(chaos_dir)])
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        chaos_calls = len(server.chat_calls)

    assert kills >= 5
    assert chaos_calls == reference_calls, "a resumed run paid for an oracle call twice"
    assert records(chaos_dir) == records(ref_dir)
    assert (chaos_dir / "demos.jsonl").read_text() == (ref_dir / "demos.jsonl").read_text()
    ref_w = load_file(str(ref_dir / "adapter" / "adapter_model.safetensors"))
    chaos_w = load_file(str(chaos_dir / "adapter" / "adapter_model.safetensors"))
    assert ref_w.keys() == chaos_w.keys()
    for name in ref_w:
        assert (ref_w[name] == chaos_w[name]).all(), name
    assert json.loads((chaos_dir / "run.json").read_text())["status"] == "completed"
    leftovers = [p.name for p in chaos_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == [], f"temporary files of killed writes were not cleaned up: {leftovers}"


@pytest.mark.slow
@pytest.mark.timing
def test_sigint_stops_cleanly_saves_and_resume_completes(model_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with OpenAIServer(latency_s=0.3) as server:
        config = write_config(tmp_path, model_dir, server, run_dir)
        proc = cli(["run", str(config)])
        with killed_at_exit(proc):
            wait_until(lambda: len(server.chat_calls) >= 3, RUN_S, "the run's third oracle call", process=proc)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, (out, err)
        assert "finishing the current step" in out + err
        assert f"cyclealign run --resume {run_dir}" in out + err
        assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
        state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
        assert 0 <= state["units_done"] < 5
        proc = cli(["run", "--resume", str(run_dir)])
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["prompts_done"] == 5 and summary["interactions"] == 10


def _llama_server_children(pid: int) -> dict[int, list[str]]:
    """The llama.cpp servers started by process ``pid``: their pids and command lines."""
    found = {}
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            argv = (proc_dir / "cmdline").read_bytes().decode().split("\0")
            stat = (proc_dir / "stat").read_text().split()
        except OSError:
            continue
        if "llama_cpp.server" in argv and int(stat[3]) == pid:
            found[int(proc_dir.name)] = argv
    return found


def _answers(argv: list[str]) -> bool:
    """Whether the llama.cpp server started with ``argv`` is up: it lists its model on its port."""
    port = argv[argv.index("--port") + 1]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.llamacpp
@pytest.mark.timing
def test_sigint_leaves_no_managed_llama_server_behind(model_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with OpenAIServer() as unused:
        config = write_config(
            tmp_path,
            model_dir,
            unused,
            run_dir,
            oracle={"options": {"api_base": None, "serve_gguf": "embedded:smollm2"}, "model": None},
        )
    proc = cli(["run", str(config)])
    with killed_at_exit(proc):
        started = wait_until(
            lambda: _llama_server_children(proc.pid), RUN_S, "the managed llama.cpp server to start", process=proc
        )
        # Ctrl+C once the server is up and serving the run, however long a loaded machine takes to get there
        serving = wait_until(
            lambda: {pid: argv for pid, argv in _llama_server_children(proc.pid).items() if _answers(argv)},
            RUN_S,
            "the managed llama.cpp server to answer",
            interval=0.2,
            process=proc,
        )
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=180)
    assert proc.returncode in (0, 130), err
    for child in started.keys() | serving.keys():
        assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def hang_from_the_second_call(call, index: int):
    """Answers the first oracle call and leaves every later one hanging (for longer than any test runs)."""
    return dataclasses.replace(default_behaviour(call, index), delay_s=0.0 if index == 0 else 3600.0)


@pytest.mark.slow
@pytest.mark.timing
def test_a_second_ctrl_c_aborts_at_once_and_the_checkpoint_stays_valid(model_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # The second call never answers: the second Ctrl+C surely comes while the current step's call is in flight,
    # and only an abort that does not wait for it can end the run within the bound below.
    with OpenAIServer(hang_from_the_second_call) as server:
        proc = cli(["run", str(write_config(tmp_path, model_dir, server, run_dir))])
        output = Output(proc)
        with killed_at_exit(proc):
            wait_until(
                lambda: server.in_flight == 1 and len(server.chat_calls) == 2,
                RUN_S,
                "the run's second oracle call to be in flight",
                process=proc,
            )
            proc.send_signal(signal.SIGINT)
            # Two signals that arrive before Python runs the handler are handled as one: send the second only
            # once the first was handled (it says so), however long a loaded machine takes.
            wait_until(
                lambda: "finishing the current step" in output.out + output.err,
                what="the first Ctrl+C to be handled",
                process=proc,
            )
            proc.send_signal(signal.SIGINT)
            t0 = time.monotonic()
            _out, err = output.finish(timeout=120)
            elapsed = time.monotonic() - t0
    assert proc.returncode == 130, err
    assert "aborted; the last checkpoint is intact" in err and f"--resume {run_dir}" in err
    assert elapsed < 10
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert state["units_done"] >= 0 and (run_dir / "checkpoint" / "trainer" / "trainable.safetensors").exists()


def test_the_managed_server_refuses_to_bind_beyond_loopback(tmp_path: Path) -> None:
    from cyclealign_oracles.local_server import LocalServerError, ManagedLlamaServer

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(LocalServerError, match="loopback only"):
        ManagedLlamaServer(gguf, host="0.0.0.0")
