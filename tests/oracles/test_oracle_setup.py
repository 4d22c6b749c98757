"""Building oracles: aliases, keys, per-provider structured output, local model discovery, the example plugin."""

from __future__ import annotations

from pathlib import Path

import pytest

from cyclealign.config import OracleConfig
from cyclealign.errors import OracleSetupError
from cyclealign.oracle import ChatOracle
from cyclealign.plugins import create_oracle, get_registry
from cyclealign.protocols import Oracle, OracleRequest
from cyclealign_oracles import LiteLLMChat
from cyclealign_oracles.providers import local_model_name
from tests.support.openai_server import OpenAIServer, oracle_for

REQUEST = OracleRequest(prompt="Say hi.", responses=("hi", "hello there", "go away"))


@pytest.mark.parametrize("alias", ["chatgpt", "gpt-4"])
def test_a_missing_key_names_the_variable_at_construction(alias: str, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(OracleSetupError, match="set the environment variable OPENAI_API_KEY"):
        create_oracle(OracleConfig(name=alias))
    monkeypatch.setenv("OPENAI_API_KEY", "")  # set but empty is still missing
    with pytest.raises(OracleSetupError, match="OPENAI_API_KEY"):
        create_oracle(OracleConfig(name=alias))
    with pytest.raises(OracleSetupError, match="MY_TEAM_KEY"):
        create_oracle(OracleConfig(name=alias, options={"api_key_env": "MY_TEAM_KEY"}))


def test_the_key_can_come_from_a_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    key_file = tmp_path / "key.txt"
    key_file.write_text("sk-from-file-123456\n")
    with OpenAIServer() as server:
        oracle = oracle_for(server, name="chatgpt", model="gpt-3.5-turbo", api_key_file=key_file)
        assert oracle.rank(REQUEST).ok
        auth = {k.lower(): v for k, v in server.chat_calls[0].headers.items()}["authorization"]
    assert auth == "Bearer sk-from-file-123456"
    key_file.write_text("\n")
    with pytest.raises(OracleSetupError, match="is empty"):
        create_oracle(OracleConfig(name="chatgpt", options={"api_key_file": key_file}))
    with pytest.raises(OracleSetupError, match="does not exist"):
        create_oracle(OracleConfig(name="chatgpt", options={"api_key_file": tmp_path / "nope"}))


def test_the_class_builds_from_the_config_alone_and_takes_an_explicit_key(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with OpenAIServer() as server:
        config = OracleConfig(name="gpt-4", options={"api_base": server.api_base})
        oracle = ChatOracle(LiteLLMChat(config, api_key="sk-explicit-999"), config)
        assert isinstance(oracle, Oracle) and oracle.name == "gpt-4" and oracle.model == "gpt-4"
        assert oracle.rank(REQUEST).ok
        headers = {k.lower(): v for k, v in server.chat_calls[0].headers.items()}
        assert headers["authorization"] == "Bearer sk-explicit-999"


@pytest.mark.parametrize(
    ("alias", "model", "expected"),
    [
        ("chatgpt", "gpt-3.5-turbo", {"type": "json_object"}),  # JSON mode, no schemas
        ("gpt-4", "gpt-4", None),  # neither: prose-tolerant parsing does the work
        ("litellm", "gpt-4o", "json_schema"),  # structured outputs with the strict schema
    ],
)
def test_structured_output_follows_what_the_provider_accepts(alias: str, model: str, expected, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-format")
    with OpenAIServer() as server:
        verdict = oracle_for(server, name=alias, model=model).rank(REQUEST)
        body = server.chat_calls[0].body
    assert verdict.ok
    if expected == "json_schema":
        fmt = body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
        rank = fmt["json_schema"]["schema"]["properties"]["desired rank"]
        assert rank["items"]["enum"] == [0, 1, 2]
    else:
        assert body.get("response_format") == expected


def test_json_schema_off_sends_no_response_format() -> None:
    with OpenAIServer() as server:
        assert oracle_for(server, json_schema=False).rank(REQUEST).ok
        assert "response_format" not in server.chat_calls[0].body


def test_a_local_server_s_model_is_discovered() -> None:
    with OpenAIServer(models=("qwen2.5-0.5b-instruct",)) as server:
        oracle = oracle_for(server, model=None)
        assert oracle.model == "openai/qwen2.5-0.5b-instruct"
        assert oracle.rank(REQUEST).ok and server.chat_calls[0].body["model"] == "qwen2.5-0.5b-instruct"
    with OpenAIServer(models=("llama3", "mistral")) as server, pytest.raises(OracleSetupError, match="llama3, mistral"):
        oracle_for(server, model=None)


def test_local_model_names_get_the_openai_prefix_unless_they_name_a_provider() -> None:
    import litellm

    assert local_model_name("llama3", litellm) == "openai/llama3"
    assert local_model_name("ollama/llama3", litellm) == "ollama/llama3"
    assert local_model_name("openai/x", litellm) == "openai/x"
    assert local_model_name("meta-llama/Llama-3-8B", litellm) == "openai/meta-llama/Llama-3-8B"


def test_an_unreachable_local_server_fails_at_construction() -> None:
    with OpenAIServer() as server:
        api_base = server.api_base
    with pytest.raises(OracleSetupError, match="unreachable"):
        create_oracle(OracleConfig(name="local", options={"api_base": api_base, "serve_gguf": None}))


def test_a_budget_on_a_model_without_a_price_is_refused(monkeypatch) -> None:
    with pytest.raises(OracleSetupError, match="no price for model"):
        create_oracle(OracleConfig(name="litellm", model="openai/no-such-model-xyz", budget_usd=5.0))
    with OpenAIServer() as server:  # a local oracle is free: a budget is simply never reached
        assert oracle_for(server, budget_usd=0.0).rank(REQUEST).ok


def test_the_litellm_alias_needs_a_model() -> None:
    with pytest.raises(OracleSetupError, match=r"needs oracle\.model"):
        create_oracle(OracleConfig(name="litellm"))


def test_registered_oracles_and_the_example_plugin() -> None:
    found = {(i.name, i.distribution) for i in get_registry().items("oracle")}
    for name in ("chatgpt", "gpt-4", "local", "litellm"):
        assert (name, "cyclealign-oracles") in found
    assert ("echo", "cyclealign-oracle-echo") in found
    echo = create_oracle(OracleConfig(name="echo"))
    (verdict,) = echo.rank_many([REQUEST])
    assert isinstance(echo, Oracle) and verdict.order == (1, 2, 0) and verdict.response == "hello there"


def test_litellm_log_records_never_carry_the_key(monkeypatch, caplog) -> None:
    import logging

    key = "team7-Q9zLOGGEDabcdef123"  # no well-known prefix: only our own filter knows it is a secret
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with OpenAIServer() as server:
        oracle_for(server, name="chatgpt", model="gpt-3.5-turbo")
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("LiteLLM").warning("call failed for %s", key)
        logging.getLogger("httpx").warning(f"retrying {key} later")
    assert len(caplog.records) == 2 and key not in caplog.text
    assert "call failed for ***" in caplog.text and "retrying *** later" in caplog.text
