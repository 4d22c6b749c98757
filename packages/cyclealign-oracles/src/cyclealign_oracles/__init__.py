"""Black-box oracles for CycleAlign through litellm: ChatGPT, GPT-4, any local OpenAI-compatible server."""

from cyclealign_oracles.cache import OracleCache, cache_key
from cyclealign_oracles.litellm_oracle import LiteLLMOracle, OracleSetupError, OracleStats, TransportError
from cyclealign_oracles.local_server import LocalServerError, ManagedLlamaServer

__all__ = [
    "LiteLLMOracle",
    "LocalServerError",
    "ManagedLlamaServer",
    "OracleCache",
    "OracleSetupError",
    "OracleStats",
    "TransportError",
    "cache_key",
]
