"""Answers from any upstream: a chat model through litellm and real HTTP, a tiny local HF model, a callable;
and `eval generate --model` over the evaluation sample, scored by `eval reward --answers`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cyclealign.cli.main import app
from cyclealign.config import OracleConfig
from cyclealign.data.hh_rlhf import load_hh_rlhf, stratified_sample
from cyclealign.errors import TransportError
from cyclealign.upstream import CallableUpstream, ChatUpstream, chat_config, open_upstream
from tests.support.openai_server import OpenAIServer, Reply
from tests.support.paths import REPO
from tests.support.tiny_models import tiny_llama_dir

SHARED = REPO.parent / "shared" / "data" / "hh-rlhf"


def echo_answer(call, index):
    """The upstream 'model': names the last thing it was asked, so each answer shows its question."""
    return Reply(f"Answer to: {call.last_user[:40]}")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_chat_upstream_goes_through_the_oracle_transport(tmp_path: Path) -> None:
    flaky = [Reply(status=500), Reply(status=429, headers={"Retry-After": "0"})]
    with OpenAIServer(flaky) as server:
        server.behaviour = lambda call, i: flaky[i] if i < 2 else echo_answer(call, i)
        base = OracleConfig(backoff_base_s=0.01, concurrency=2, cache_path=tmp_path / "c.sqlite")
        up = ChatUpstream(chat_config("openai/up", base, api_base=server.api_base, max_new_tokens=32))
        try:
            answers = up.answer_many(["Why is the sky blue?", "How do I bake bread?", "Hi"])
            assert answers == ["Answer to: Why is the sky blue?", "Answer to: How do I bake bread?", "Answer to: Hi"]
            assert up.stats.retries == 2 and server.max_in_flight <= 2  # retried 500/429, within the concurrency
            calls = len(server.chat_calls)
            assert up.answer_many(["Hi"]) == ["Answer to: Hi"] and len(server.chat_calls) == calls  # the cache
            body = server.chat_calls[-1].body
            assert body["max_tokens"] == 32 and "response_format" not in body  # free text, the answer's length
        finally:
            up.close()
        server.behaviour = lambda call, i: Reply(status=401)
        up = ChatUpstream(chat_config("openai/up", OracleConfig(cache=False), api_base=server.api_base))
        with pytest.raises(TransportError, match=r"1 of 1 questions got no answer \(first: question 1"):
            up.answer_many(["never answered"])
        up.close()


def test_callable_and_local_model_upstreams(tmp_path: Path) -> None:
    up = CallableUpstream(str.upper, "shout")
    assert up.answer_many(["a b", "c"]) == ["A B", "C"]
    batched = CallableUpstream(lambda qs: [q[::-1] for q in qs], batched=True)
    assert batched.answer_many(["abc"]) == ["cba"]
    with pytest.raises(ValueError, match="returned 0 answers for 1 questions"):
        CallableUpstream(lambda qs: [], batched=True).answer_many(["x"])
    local = open_upstream(tiny_llama_dir(tmp_path / "m"), max_new_tokens=5)
    first = local.answer_many(["How do I bake bread?", "Why?"])
    assert len(first) == 2 and local.answer_many(["How do I bake bread?"]) == first[:1]  # greedy: deterministic
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        open_upstream(tmp_path / "missing")


def test_eval_generate_with_a_litellm_model_and_its_cache(tmp_path: Path) -> None:
    out = tmp_path / "gpt"
    args = ["eval", "generate", "--model", "openai/zero-shot", "--data", str(SHARED), "--subset", "harmless-base"]
    args += ["--k", "4", "--out", str(out), "--set", "oracle.concurrency=3", "--max-new-tokens", "48"]
    with OpenAIServer(echo_answer) as server:
        args += ["--api-base", server.api_base]
        result = CliRunner().invoke(app, args, terminal_width=200)
        assert result.exit_code == 0, result.output
        assert len(server.chat_calls) == 4 and server.max_in_flight <= 3
        rows = _rows(out / "answers.jsonl")
        again = CliRunner().invoke(app, args, terminal_width=200)
        assert again.exit_code == 0, again.output
        # nothing is sent twice
        assert len(server.chat_calls) == 4 and "4 from the cache" in " ".join(again.output.split())
        paid = [*args, "--set", "oracle.name=litellm", "--set", "oracle.budget_usd=1", "--out", str(tmp_path / "paid")]
        refused = CliRunner().invoke(app, paid, terminal_width=200)
        assert refused.exit_code == 2 and "no price for model 'openai/zero-shot'" in refused.output  # the oracle's
        assert len(server.chat_calls) == 4  # budget guard, before anything is sent
    examples, _ = load_hh_rlhf(SHARED, subsets=["harmless-base"])
    sample = stratified_sample(examples, 4, seed=0)
    assert [r["id"] for r in rows] == [e.id for e in sample]  # the same sample as `eval reward` draws
    for row, ex in zip(rows, sample, strict=True):
        assert row["answer"] == f"Answer to: {ex.prompt.messages[-1].content[:40]}"
        assert row["messages"][-1]["content"] == ex.prompt.messages[-1].content and row["system"] == "zero-shot"
    assert (out / "upstream_cache.sqlite").is_file()


def test_eval_generate_with_a_local_model_then_reward_scores_the_file(tmp_path: Path) -> None:
    from tests.support.tiny_models import tiny_reward_model_dir

    model = tiny_llama_dir(tmp_path / "base")
    out = tmp_path / "base-answers"
    args = ["eval", "generate", "--model", str(model), "--data", str(SHARED), "--subset", "harmless-base"]
    args += ["--k", "3", "--max-new-tokens", "5", "--out", str(out)]
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    rows = _rows(out / "answers.jsonl")
    assert len(rows) == 3 and rows[0]["system"] == "base"
    rm = tiny_reward_model_dir(tmp_path / "rm")
    score = ["eval", "reward", "--reward-model", str(rm), "--answers", str(out / "answers.jsonl")]
    result = CliRunner().invoke(app, score, terminal_width=200)
    assert result.exit_code == 0, result.output
    scored = _rows(out / "reward-answers" / "answers.jsonl")
    assert [r["answer"] for r in scored] == [r["answer"] for r in rows]
    assert all(isinstance(r["score"], float) for r in scored)
    table = (out / "reward-answers" / "table1_reward.csv").read_text().splitlines()
    assert table[0] == "system,harmless-base,total,unweighted subset mean" and table[1].startswith("base-answers,")
