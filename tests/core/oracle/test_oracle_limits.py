"""Concurrency, pacing, the budget and the context window, against a real local HTTP server."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cyclealign.oracle.prompts import STATIC_DEMONSTRATION, render_messages
from cyclealign.protocols import BudgetExceeded, Demonstration, OracleRequest
from tests.support.openai_server import OpenAIServer, Reply, oracle_for
from tests.support.paths import REPO
from tests.support.waiting import wait_until

ROOT = REPO
# A latency of 0.5 s: the ratio then measures how well the calls overlap, not how fast this machine's CPU is
# (at 0.1 s, litellm's own CPU time per call, doubled on a loaded machine, was most of the round).
BENCH_ARGS = ["--latency", "0.5", "--rounds", "4", "--concurrency", "1", "8"]
# Each call takes this long at the server: long beside the client's own CPU time per call (~35 ms on a loaded
# 2-core machine), so whether the calls overlap does not depend on how fast the machine is.
LATENCY_S = 1.0


@pytest.mark.timing
def test_calls_for_many_prompts_overlap() -> None:
    requests = [OracleRequest(prompt=f"question {i}", responses=("a", "bb", "ccc")) for i in range(64)]
    with OpenAIServer(latency_s=LATENCY_S) as server:
        oracle = oracle_for(server, concurrency=16, timeout_s=10)
        t0 = time.monotonic()
        verdicts = oracle.rank_many(requests)
        wall = time.monotonic() - t0
        peak = server.max_in_flight
    assert all(v.ok for v in verdicts) and [v.order for v in verdicts] == [(2, 1, 0)] * 64
    # one by one: 64 × 1 = 64 s; ideal at 16 in flight: 4 rounds = 4 s
    assert wall < 64 * LATENCY_S / 4, f"{wall:.2f} s: the calls did not overlap"
    assert 8 <= peak <= 16, f"{peak} calls were in flight at once (limit 16)"


@pytest.mark.timing
def test_the_concurrency_limit_holds() -> None:
    requests = [OracleRequest(prompt=f"q{i}", responses=("a", "b")) for i in range(12)]
    # 0.3 s at the server: time enough for a loaded client to have its 3 calls there at once
    with OpenAIServer(latency_s=0.3) as server:
        oracle_for(server, concurrency=3, timeout_s=10).rank_many(requests)
        assert server.max_in_flight == 3


@pytest.mark.timing
def test_requests_per_minute_are_paced_across_calls() -> None:
    # One start a second. The server sees each start only once the client has built and sent the request: on a
    # loaded machine one call of six reached it 110 ms late (2 burners beside other jobs, load 6 on 2 cores), so
    # the interval is long beside that lateness and the 20 % allowance below is 200 ms.
    interval = 1.0
    with OpenAIServer() as server:
        oracle = oracle_for(server, requests_per_minute=60 / interval, concurrency=8)
        # litellm sets itself up during its first call of a process (~0.3 s), which delays the sends of
        # that first batch; warm it up so the server sees the steady-state spacing.
        oracle.rank(OracleRequest(prompt="warm-up", responses=("a", "b")))
        server.requests.clear()
        oracle.rank_many([OracleRequest(prompt=f"q{i}", responses=("a", "b")) for i in range(3)])
        for i in range(3):  # the engine asks one prompt at a time: the pace must hold between calls too
            oracle.rank_many([OracleRequest(prompt=f"single {i}", responses=("a", "b"))])
        starts = sorted(c.at for c in server.chat_calls)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 6 and min(gaps) >= 0.8 * interval, gaps
    assert oracle.stats.waited_s > 2 * interval


def test_budget_stops_before_a_call_would_exceed_it(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    request = OracleRequest("How do I bake bread?", ("Mix.", "No.", "Knead."), (STATIC_DEMONSTRATION,))
    with OpenAIServer() as server:
        oracle = oracle_for(server, name="chatgpt", model="gpt-3.5-turbo", budget_usd=0.0001, max_tokens=256)
        assert oracle.estimate_cost_usd(render_messages(request)) > 0.0001
        with pytest.raises(BudgetExceeded, match="budget_usd"):
            oracle.rank_many([request])
        assert len(server.chat_calls) == 0 and oracle.transport.guard.exceeded
        roomy = oracle_for(server, name="chatgpt", model="gpt-3.5-turbo", budget_usd=1.0)
        verdict = roomy.rank(request)
    assert verdict.ok and verdict.cost_usd > 0 and roomy.stats.cost_usd == pytest.approx(verdict.cost_usd)
    assert not roomy.transport.guard.exceeded and roomy.transport.guard.remaining_usd == pytest.approx(
        1.0 - verdict.cost_usd
    )


def test_concurrent_calls_never_overshoot_the_budget_and_paid_answers_are_kept(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    requests = [OracleRequest(prompt=f"question number {i}", responses=("a", "bb", "ccc")) for i in range(16)]
    settings = {"name": "chatgpt", "model": "gpt-3.5-turbo", "concurrency": 16, "timeout_s": 10}
    with OpenAIServer(latency_s=0.2) as server:
        probe = oracle_for(server, **settings)
        estimate = probe.estimate_cost_usd(render_messages(requests[0]))
        budget = 3.5 * estimate  # room for three worst-case calls
        oracle = oracle_for(server, tmp_path, budget_usd=budget, **settings)
        with pytest.raises(BudgetExceeded):
            oracle.rank_many(requests)
        paid = len(server.chat_calls)
        oracle.close()
        assert paid == 3 and 0 < oracle.stats.cost_usd <= budget
        # What was paid for is in the cache: a resumed run with more budget gets it for free.
        resumed = oracle_for(server, tmp_path, budget_usd=1.0, **settings)
        verdicts = resumed.rank_many(requests)
    assert all(v.ok for v in verdicts) and resumed.stats.cache_hits == 3
    assert len(server.chat_calls) == paid + 13


def test_only_calls_in_flight_hold_budget_so_cheap_answers_leave_room_for_more(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    requests = [OracleRequest(prompt=f"question number {i}", responses=("a", "bb", "ccc")) for i in range(16)]
    with OpenAIServer() as server:
        oracle = oracle_for(server, name="chatgpt", model="gpt-3.5-turbo", concurrency=2)
        # Room for 12 of the 16 worst cases: enough only if queued requests hold nothing (real answers are short).
        budget = 12 * oracle.estimate_cost_usd(render_messages(requests[0]))
        oracle = oracle_for(server, name="chatgpt", model="gpt-3.5-turbo", concurrency=2, budget_usd=budget)
        verdicts = oracle.rank_many(requests)
    assert all(v.ok for v in verdicts) and len(server.chat_calls) == 16
    assert 0 < oracle.stats.cost_usd <= budget and not oracle.transport.guard.exceeded


def test_demonstrations_are_dropped_to_fit_the_context_dynamic_first() -> None:
    long_demo = Demonstration("Tell me about rivers.", ("x " * 900, "y " * 900), (0, 1), source="dynamic")
    request = OracleRequest("Which is best?", ("a", "b"), (STATIC_DEMONSTRATION, long_demo))
    with OpenAIServer() as server:
        oracle = oracle_for(server, context_tokens=1024, max_tokens=128)
        verdict = oracle.rank(request)
        prompt = server.chat_calls[0].first_user
    assert verdict.ok and oracle.stats.demos_dropped == 1
    assert STATIC_DEMONSTRATION.prompt in prompt and "Tell me about rivers." not in prompt


def test_a_prompt_that_cannot_fit_is_a_recorded_failure_without_a_call() -> None:
    request = OracleRequest("Summarise this. " + "word " * 4000, ("a", "b"))
    with OpenAIServer() as server:
        oracle = oracle_for(server, context_tokens=1024)
        verdict = oracle.rank(request)
        n_calls = len(server.chat_calls)
    assert not verdict.ok and "oracle.context_tokens=1024" in verdict.error and n_calls == 0
    assert verdict.attempts == 0 and oracle.stats.failures == 1


@pytest.mark.slow
@pytest.mark.timing
def test_the_throughput_bench_prints_a_ratio_of_the_ideal() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "oracle_throughput.py"), *BENCH_ARGS],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.strip() and line.split()[0].isdigit()]
    ratios = {int(r[0]): float(r[-1]) for r in rows}
    assert set(ratios) == {1, 8}, out
    assert all(0.3 < r <= 1.05 for r in ratios.values()), out


def test_rank_many_works_from_inside_a_running_event_loop() -> None:
    async def notebook_cell(oracle) -> list:
        return oracle.rank_many([OracleRequest(prompt="q", responses=("a", "bb"))])

    with OpenAIServer() as server:
        (verdict,) = asyncio.run(notebook_cell(oracle_for(server)))
    assert verdict.ok and verdict.order == (1, 0)


# The caller runs in its own process (Ctrl+C is a signal to a process); the server stays here, where the test
# can watch the calls arrive and end.  It prints the (system-wide) monotonic clock when the interrupt reaches it.
CTRL_C_SCRIPT = """
import sys, time, types
from tests.support.openai_server import oracle_for
from cyclealign.protocols import OracleRequest
oracle = oracle_for(types.SimpleNamespace(api_base=sys.argv[1]), timeout_s=60)
try:
    oracle.rank_many([OracleRequest(prompt=f"q{i}", responses=("a", "b")) for i in range(4)])
except KeyboardInterrupt:
    print(f"interrupted at {time.monotonic()}", flush=True)
"""
ANSWER_DELAY_S = 30.0  # the answers never come in time: only the interrupt can end the calls (timeout_s=60)
PROMPT_S = 5.0  # the caller must get control back, and the calls must end, this soon after Ctrl+C


@pytest.mark.timing
def test_ctrl_c_interrupts_the_calls_in_flight() -> None:
    with OpenAIServer(lambda call, i: Reply("{}", delay_s=ANSWER_DELAY_S)) as server:
        proc = subprocess.Popen(
            [sys.executable, "-c", CTRL_C_SCRIPT, server.api_base],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # Ctrl+C only once every call is really at the server, however long the caller takes to get there.
            wait_until(lambda: server.in_flight == 4, what="4 calls in flight at the server", process=proc)
            sent_at = time.monotonic()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
            wait_until(lambda: server.in_flight == 0, what="the interrupted calls to end at the server")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        calls = server.chat_calls
    assert proc.returncode == 0, err
    assert out.startswith("interrupted at "), (out, err)
    caught = float(out.split()[-1]) - sent_at
    assert 0 <= caught < PROMPT_S, f"the caller got control back {caught:.2f} s after Ctrl+C"
    assert len(calls) == 4 and all(c.abandoned for c in calls), calls  # every connection dropped, none answered
    dropped = max(c.done_at for c in calls) - sent_at
    assert dropped < PROMPT_S, f"the last call was dropped {dropped:.2f} s after Ctrl+C"
