"""Registers the litellm chat backends through the `cyclealign` entry-point group, like any third party.

- ``chatgpt``: gpt-3.5-turbo (the paper's oracle), key from ``OPENAI_API_KEY``;
- ``gpt-4``: gpt-4, key from ``OPENAI_API_KEY``;
- ``local``: any OpenAI-compatible server at ``oracle.options.api_base`` (llama.cpp, vLLM, ollama), or, with
  no ``api_base``, a llama.cpp server the project starts itself for ``oracle.options.serve_gguf``;
- ``litellm``: any litellm model string in ``oracle.model`` (keys as litellm reads them from the environment,
  or from ``oracle.options.api_key_env`` / ``oracle.options.api_key_file``);
- ``reward-model``: a local reward model in ``oracle.options.model`` ranks the candidates, at no cost and
  with no answer of its own (``cyclealign_oracles.reward_model``).

The four chat factories return a chat backend; the framework wraps it in its ranking oracle.  They take
the options of :class:`~cyclealign_oracles.options.LiteLLMOptions`, checked by the framework; the
defaults of each name live in ``cyclealign_oracles.providers.ALIASES``.  ``reward-model`` returns a
whole ``Oracle`` and takes :class:`~cyclealign_oracles.options.RewardModelOptions`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

from cyclealign.config import OracleConfig
from cyclealign_oracles.options import LiteLLMOptions, RewardModelOptions

hookimpl = pluggy.HookimplMarker("cyclealign")


def _factory(alias: str) -> Callable[..., Any]:
    def make(config: OracleConfig, options: LiteLLMOptions | None = None) -> Any:
        from cyclealign_oracles.litellm_chat import LiteLLMChat

        if config.name != alias:  # reached through another name: the alias decides the defaults
            config = config.model_copy(update={"name": alias})
        return LiteLLMChat(config, options=options)

    make.__name__ = f"make_{alias.replace('-', '_')}"
    return make


def make_reward_model(config: OracleConfig, options: RewardModelOptions) -> Any:
    """A reward-model oracle (torch and the model load only when one is asked for)."""
    from cyclealign_oracles.reward_model import RewardModelOracle

    return RewardModelOracle(config, options)


@hookimpl
def register_oracles(register: Any) -> None:
    for name, description in (
        ("chatgpt", "OpenAI gpt-3.5-turbo via litellm (the paper's oracle)"),
        ("gpt-4", "OpenAI GPT-4 via litellm"),
        ("local", "an OpenAI-compatible server (llama.cpp, vLLM, ollama) or a managed llama.cpp"),
        ("litellm", "any litellm model string in oracle.model"),
    ):
        register(name, _factory(name), description, options=LiteLLMOptions)
    register(
        "reward-model",
        make_reward_model,
        "a local reward model (oracle.options.model) ranks the candidates: no cost, no answer of its own",
        options=RewardModelOptions,
    )
