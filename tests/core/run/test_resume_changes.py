"""`--resume RUN --set KEY=VALUE`: the oracle's spending and pacing may change, nothing else; totals span processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cyclealign.cli.main import app
from cyclealign.config import load_config
from cyclealign.run.entry import run
from tests.support.openai_server import OpenAIServer
from tests.support.paths import REPO
from tests.support.runs import tiny_overrides
from tests.support.tiny_models import tiny_llama_dir

PROMPTS = ["How do I bake bread?", "How do I hurt someone?", "Is tea healthy?"]


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_a_resumed_train_run_refuses_every_key_by_name(tmp_path: Path) -> None:
    for command in (["train"], ["aligner", "train"]):
        result = cli(*command, "--resume", str(tmp_path), "--set", "oracle.budget_usd=5")
        assert result.exit_code == 2, result.output
        assert "--set oracle.budget_usd" in result.output and "no setting may change" in result.output


@pytest.mark.slow
def test_a_run_stopped_by_its_budget_finishes_after_raising_it_on_resume(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    model = tiny_llama_dir(tmp_path / "model")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    run_dir = tmp_path / "run"
    paid = ("oracle.name=chatgpt", "oracle.model=gpt-3.5-turbo", "oracle.budget_usd=0.0015")
    with OpenAIServer() as server:
        cfg = tiny_overrides(
            model, prompts, server.api_base, run_dir, "cycle.max_interactions=2", "train.lr=0.01", *paid
        )
        first = run(load_config(overrides=cfg))
        assert first.totals.stopped.startswith("budget")
        again = cli("run", "--resume", str(run_dir))  # the same budget: stopped again at once
        assert json.loads((run_dir / "run.json").read_text())["status"] == "budget", again.output

        refused = cli("run", "--resume", str(run_dir), "--set", "train.lr=0.5")
        assert refused.exit_code == 2 and "--set train.lr" in refused.output and "oracle.budget_usd" in refused.output

        raised = cli("run", "--resume", str(run_dir), "--set", "oracle.budget_usd=1", "--set", "oracle.concurrency=2")
        assert raised.exit_code == 0, raised.output
        calls = len(server.chat_calls)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "completed"
    changes = {c["key"]: (c["old"], c["new"]) for c in meta["changes"]}
    assert changes == {"oracle.budget_usd": (0.0015, 1.0), "oracle.concurrency": (8, 2)}
    assert all(c["time"].endswith("Z") for c in meta["changes"])
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["oracle"]["budget_usd"] == 1.0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["prompts_done"] == len(PROMPTS) and summary["resumes"] == 2
    oracle = summary["oracle"]
    assert oracle["paid_calls"] == oracle["http_calls"] == calls  # every process's calls, none lost or doubled
    assert oracle["calls"] >= calls and oracle["repaid_calls"] == oracle["in_flight_at_crash"] == 0
    assert len(meta["processes"]) == 3 and summary["wall_s"] >= sum(p["wall_s"] for p in meta["processes"]) - 0.05

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["train"]["lr"] = 0.02  # an edit that would change the results
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    edited = cli("run", "--resume", str(run_dir))
    assert edited.exit_code == 2 and "train.lr: 0.01 → 0.02" in edited.output, edited.output


@pytest.mark.slow
def test_a_call_in_flight_at_a_sigkill_is_counted_as_re_paid_and_the_totals_match_the_server(tmp_path: Path) -> None:
    import dataclasses
    import os
    import signal
    import subprocess
    import sys

    from tests.support.openai_server import default_behaviour
    from tests.support.waiting import wait_until

    def third_call_hangs(call, index):  # the first time only: the resumed run gets its answer at once
        reply = default_behaviour(call, index)
        return dataclasses.replace(reply, delay_s=60.0) if index == 2 else reply

    model = tiny_llama_dir(tmp_path / "model")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:2]))
    run_dir = tmp_path / "run"
    root = REPO
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    with OpenAIServer(third_call_hangs) as server:
        cfg = tiny_overrides(model, prompts, server.api_base, run_dir, "cycle.max_interactions=2", "train.lr=0.01")
        args = [a for item in cfg for a in ("--set", item)]
        proc = subprocess.Popen([sys.executable, "-m", "cyclealign", "run", *args], env=env, cwd=root)
        try:
            wait_until(
                lambda: len(server.chat_calls) == 3 and server.in_flight == 1, 300, "a call in flight", process=proc
            )
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        assert cli("run", "--resume", str(run_dir)).exit_code == 0
        sent = [json.dumps(c.body["messages"]) for c in server.chat_calls]
    assert len(sent) == len(set(sent)) + 1  # exactly one call was sent twice: the one in flight at the kill
    summary = json.loads((run_dir / "summary.json").read_text())
    oracle = summary["oracle"]
    assert summary["resumes"] == 1
    assert (oracle["in_flight_at_crash"], oracle["repaid_calls"]) == (1, 1)
    assert oracle["http_calls"] == len(sent) and oracle["paid_calls"] == len(sent) - 1  # the killed one: no answer


def test_the_call_journal_counts_in_flight_and_re_paid_calls_across_processes(tmp_path: Path) -> None:
    from cyclealign.oracle.ledger import CallLedger, in_flight, ledger_totals
    from cyclealign.usage import Usage

    path = tmp_path / "oracle_calls.jsonl"
    first, second = CallLedger(path, "a.0"), CallLedger(path, "b.0")
    first.sent("k1"), first.paid("k1", Usage(1, 10, 2, 0.5)), first.ended("k1")
    first.sent("k2"), first.sent("k3")  # killed with two calls in flight
    with path.open("a") as f:
        f.write('{"p": "a.0", "e": "se')  # the line a kill cut short
    assert sorted(in_flight(path)) == [("a.0", "k2"), ("a.0", "k3")]
    second.sent("k2"), second.sent("k2"), second.paid("k2", Usage(1, 10, 2, 0.5)), second.ended("k2")  # a retry
    totals = ledger_totals(path, alive={"b.0"})
    assert totals["http_calls"] == 5 and totals["paid_calls"] == 2 and totals["cost_usd"] == 1.0
    assert (totals["in_flight_at_crash"], totals["repaid_calls"]) == (2, 1)  # k3 was never sent again
