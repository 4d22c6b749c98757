"""The on-disk oracle cache: a rerun pays nothing, a damaged file costs nothing but a warning, no key is stored."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

from cyclealign.oracle.cache import CachedAnswer, OracleCache, cache_key
from cyclealign.oracle.prompts import STATIC_DEMONSTRATION
from cyclealign.protocols import OracleRequest
from cyclealign.usage import Usage
from tests.support.openai_server import OpenAIServer, Reply, oracle_for

KEY = "sk-test-MARKER-7f3a9c0d"


def small_cycle(n: int = 4) -> list[OracleRequest]:
    return [
        OracleRequest(prompt=f"q{i}", responses=("a", "bb", "ccc"), demonstrations=(STATIC_DEMONSTRATION,))
        for i in range(n)
    ]


def test_the_same_requests_twice_make_no_http_calls_the_second_time(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with OpenAIServer() as server:
        first = oracle_for(server, tmp_path, name="chatgpt", model="gpt-3.5-turbo")
        v1 = first.rank_many(small_cycle())
        first.close()
        n_first = len(server.chat_calls)
        second = oracle_for(server, tmp_path, name="chatgpt", model="gpt-3.5-turbo")
        v2 = second.rank_many(small_cycle())
        second.close()
        n_second = len(server.chat_calls) - n_first
        auth = {k.lower(): v for k, v in server.chat_calls[0].headers.items()}.get("authorization", "")
    assert n_first == 4 and n_second == 0
    assert second.stats.cache_hits == 4 and second.stats.http_calls == 0 and second.stats.cost_usd == 0.0
    assert first.stats.cost_usd > 0 and all(v.cost_usd > 0 and not v.cached for v in v1)
    assert [(v.order, v.response) for v in v1] == [(v.order, v.response) for v in v2]
    assert all(v.cached and v.cost_usd == 0.0 and v.attempts == 1 for v in v2)
    assert KEY in auth  # the key was really used...
    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert files
    for f in files:
        assert KEY.encode() not in f.read_bytes(), f  # ...and stored nowhere


def test_a_re_asked_exchange_is_replayed_for_free(tmp_path: Path) -> None:
    good = json.dumps({"desired rank": [2, 1, 0], "response": "Fine."})
    with OpenAIServer([Reply("not json"), Reply(good)]) as server:
        v1 = oracle_for(server, tmp_path).rank(small_cycle(1)[0])
        v2 = oracle_for(server, tmp_path).rank(small_cycle(1)[0])
        n_calls = len(server.chat_calls)
    assert v1.ok and v1.attempts == 2 and n_calls == 2
    assert v2.ok and v2.order == v1.order and v2.cached


def test_transport_failures_are_not_cached(tmp_path: Path) -> None:
    with OpenAIServer(lambda call, i: Reply(status=500)) as server:
        verdict = oracle_for(server, tmp_path, max_retries=0).rank(small_cycle(1)[0])
    assert not verdict.ok
    with OpenAIServer() as server:
        verdict = oracle_for(server, tmp_path).rank(small_cycle(1)[0])
        assert verdict.ok and not verdict.cached and len(server.chat_calls) == 1


def test_the_key_covers_model_messages_and_sampling_not_the_endpoint() -> None:
    messages = [{"role": "user", "content": "hi"}]
    base = cache_key("m", messages, {"temperature": 0.0})
    assert base == cache_key("m", [dict(m) for m in messages], {"temperature": 0.0})
    assert base != cache_key("m2", messages, {"temperature": 0.0})
    assert base != cache_key("m", [{"role": "user", "content": "hi!"}], {"temperature": 0.0})
    assert base != cache_key("m", messages, {"temperature": 0.7})
    assert base != cache_key("m", messages, {"temperature": 0.0, "response_format": {"type": "json_object"}})


def test_a_damaged_cache_file_is_moved_aside_and_the_run_goes_on(tmp_path: Path, caplog) -> None:
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is not a sqlite database, it was cut off mid-write" * 100)
    with caplog.at_level(logging.WARNING, logger="cyclealign.oracle.cache"), OpenAIServer() as server:
        oracle = oracle_for(server, tmp_path)
        verdict = oracle.rank(small_cycle(1)[0])
        moved = oracle.cache.moved_aside
        oracle.close()
    assert verdict.ok and moved is not None and moved.read_bytes().startswith(b"this is not")
    assert "damaged" in caplog.text
    assert len(OracleCache(path)) == 1  # the fresh cache holds the new answer


def test_a_cache_that_cannot_be_written_degrades_to_no_cache(tmp_path: Path, caplog) -> None:
    cache = OracleCache(tmp_path / "c.sqlite")
    cache.put("k", "m", CachedAnswer("text", Usage(1, 1, 2, 0.5)))
    cache._db.execute("DROP TABLE answers")  # simulate a broken store under a running process
    with caplog.at_level(logging.WARNING, logger="cyclealign.oracle.cache"):
        cache.put("k2", "m", CachedAnswer("text", Usage(1, 1, 2, 0.5)))
        assert cache.get("k") is None
    assert "the run goes on without it" in caplog.text


def test_cache_rows_hold_the_answer_and_usage(tmp_path: Path) -> None:
    with OpenAIServer() as server:
        oracle = oracle_for(server, tmp_path)
        verdict = oracle.rank(small_cycle(1)[0])
        oracle.close()
    rows = (
        sqlite3.connect(tmp_path / "cache.sqlite").execute("SELECT model, text, prompt_tokens FROM answers").fetchall()
    )
    assert len(rows) == 1 and rows[0][0] == "openai/test-oracle" and rows[0][1] == verdict.raw and rows[0][2] > 0
