"""Black-box oracles for CycleAlign through litellm: ChatGPT, GPT-4, any local OpenAI-compatible server.

A chat backend (:class:`LiteLLMChat`) plus the managed llama.cpp server; the
ranking protocol around it (retries, cache, budget, parsing) is the framework's.
"""

from cyclealign_oracles.litellm_chat import LiteLLMChat
from cyclealign_oracles.local_server import ManagedLlamaServer
from cyclealign_oracles.options import LiteLLMOptions
from cyclealign_oracles.providers import ALIASES

__all__ = ["ALIASES", "LiteLLMChat", "LiteLLMOptions", "ManagedLlamaServer"]
