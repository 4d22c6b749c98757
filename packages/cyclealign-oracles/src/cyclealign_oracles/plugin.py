"""Registers the litellm chat backends through the `cyclealign` entry-point group, like any third party.

- ``chatgpt``: gpt-3.5-turbo (the paper's oracle), key from ``OPENAI_API_KEY``;
- ``gpt-4``: gpt-4, key from ``OPENAI_API_KEY``;
- ``local``: any OpenAI-compatible server at ``oracle.options.api_base`` (llama.cpp, vLLM, ollama), or, with
  no ``api_base``, a llama.cpp server the project starts itself for ``oracle.options.serve_gguf``;
- ``litellm``: any litellm model string in ``oracle.model`` (keys as litellm reads them from the environment,
  or from ``oracle.options.api_key_env`` / ``oracle.options.api_key_file``).

Each factory returns a chat backend; the framework wraps it in its ranking oracle.  All four take the
options of :class:`~cyclealign_oracles.options.LiteLLMOptions`, checked by the framework.
The defaults of each name live in ``cyclealign_oracles.providers.ALIASES``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

from cyclealign.config import OracleConfig
from cyclealign_oracles.options import LiteLLMOptions

hookimpl = pluggy.HookimplMarker("cyclealign")


def _factory(alias: str) -> Callable[..., Any]:
    def make(config: OracleConfig, options: LiteLLMOptions | None = None) -> Any:
        from cyclealign_oracles.litellm_chat import LiteLLMChat

        if config.name != alias:  # reached through another name: the alias decides the defaults
            config = config.model_copy(update={"name": alias})
        return LiteLLMChat(config, options=options)

    make.__name__ = f"make_{alias.replace('-', '_')}"
    return make


@hookimpl
def register_oracles(register: Any) -> None:
    for name, description in (
        ("chatgpt", "OpenAI gpt-3.5-turbo via litellm (the paper's oracle)"),
        ("gpt-4", "OpenAI GPT-4 via litellm"),
        ("local", "an OpenAI-compatible server (llama.cpp, vLLM, ollama) or a managed llama.cpp"),
        ("litellm", "any litellm model string in oracle.model"),
    ):
        register(name, _factory(name), description, options=LiteLLMOptions)
