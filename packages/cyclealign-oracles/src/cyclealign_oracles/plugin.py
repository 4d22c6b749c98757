"""Registers the litellm oracles through the `cyclealign` entry-point group, like any third party.

- ``chatgpt``: gpt-3.5-turbo (the paper's oracle), key from ``OPENAI_API_KEY``;
- ``gpt-4``: gpt-4, key from ``OPENAI_API_KEY``;
- ``local``: any OpenAI-compatible server at ``oracle.api_base`` (llama.cpp, vLLM, ollama), or, with no
  ``api_base``, a llama.cpp server the project starts itself for ``oracle.serve_gguf``;
- ``litellm``: any litellm model string in ``oracle.model`` (keys as litellm reads them from the environment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy

from cyclealign.config import OracleConfig
from cyclealign.prompts import RANKING_SCHEMA

hookimpl = pluggy.HookimplMarker("cyclealign")

OPENAI_JSON = {"type": "json_object"}  # gpt-3.5-turbo and gpt-4 accept JSON mode, not schemas
LLAMA_CPP_JSON = {"type": "json_object", "schema": RANKING_SCHEMA}  # grammar-constrained; exact per request


def _openai_factory(default_model: str, alias: str):
    def make(config: OracleConfig) -> Any:
        from cyclealign_oracles.litellm_oracle import LiteLLMOracle, OracleSetupError, read_api_key

        key = read_api_key(config, "OPENAI_API_KEY")
        if not key and config.api_base is None:
            env = config.api_key_env or "OPENAI_API_KEY"
            raise OracleSetupError(
                f"oracle {alias!r} needs an API key: set the environment variable {env} "
                "(or point oracle.api_key_env / oracle.api_key_file elsewhere)"
            )
        return LiteLLMOracle(
            config,
            name=alias,
            model=config.model or default_model,
            api_key=key,
            api_base=config.api_base,
            response_format=OPENAI_JSON,
        )

    return make


def _resolve_gguf(spec: str) -> Path:
    if spec == "embedded:smollm2":
        from cyclealign.whitebox.loading import embedded_gguf_path

        return embedded_gguf_path()
    return Path(spec).expanduser()


def make_local(config: OracleConfig) -> Any:
    from cyclealign_oracles.litellm_oracle import LiteLLMOracle, OracleSetupError, read_api_key

    server = None
    api_base = config.api_base
    model = config.model
    if api_base is None:
        if not config.serve_gguf:
            raise OracleSetupError("oracle 'local' needs oracle.api_base, or oracle.serve_gguf to serve a GGUF itself")
        from cyclealign_oracles.local_server import ManagedLlamaServer

        gguf = _resolve_gguf(config.serve_gguf)
        server = ManagedLlamaServer(gguf, n_ctx=config.server_ctx).start()
        api_base = server.api_base
        model = model or f"openai/{gguf.name}"
    try:
        return LiteLLMOracle(
            config,
            name="local",
            model=model or "openai/local",
            api_key=read_api_key(config, None) or "not-needed",
            api_base=api_base,
            response_format=LLAMA_CPP_JSON,
            free=True,
            on_close=server.stop if server else None,
        )
    except BaseException:
        if server is not None:
            server.stop()
        raise


def make_litellm(config: OracleConfig) -> Any:
    from cyclealign_oracles.litellm_oracle import LiteLLMOracle, OracleSetupError, read_api_key

    if not config.model:
        raise OracleSetupError("oracle 'litellm' needs oracle.model, a litellm model string like 'anthropic/claude-…'")
    return LiteLLMOracle(
        config, name="litellm", model=config.model, api_key=read_api_key(config, None), api_base=config.api_base
    )


@hookimpl
def register_oracles(register: Any) -> None:
    register("chatgpt", _openai_factory("gpt-3.5-turbo", "chatgpt"), "OpenAI gpt-3.5-turbo via litellm (the paper)")
    register("gpt-4", _openai_factory("gpt-4", "gpt-4"), "OpenAI GPT-4 via litellm")
    register("local", make_local, "any OpenAI-compatible server (llama.cpp, vLLM, ollama), or a managed llama.cpp")
    register("litellm", make_litellm, "any litellm model string in oracle.model")
