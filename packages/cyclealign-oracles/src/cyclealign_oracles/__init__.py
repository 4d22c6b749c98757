"""Black-box oracles for CycleAlign through litellm: ChatGPT, GPT-4, any local OpenAI-compatible server."""

from cyclealign_oracles.cache import OracleCache, cache_key
from cyclealign_oracles.litellm_oracle import LiteLLMOracle, OracleStats, TransportError
from cyclealign_oracles.local_server import LocalServerError, ManagedLlamaServer, embedded_gguf_path
from cyclealign_oracles.providers import ALIASES, OracleSetupError

__all__ = [
    "ALIASES",
    "LiteLLMOracle",
    "LocalServerError",
    "ManagedLlamaServer",
    "OracleCache",
    "OracleSetupError",
    "OracleStats",
    "TransportError",
    "cache_key",
    "embedded_gguf_path",
]
