"""Oracles: the ranking protocol over a chat backend (the seam plugins implement), and what keeps it robust."""

from cyclealign.oracle.backend import ChatBackend, ChatError, ChatReply, ChatRequest, FormatRejected
from cyclealign.oracle.cache import OracleCache, cache_key
from cyclealign.oracle.ranker import ChatOracle
from cyclealign.oracle.secrets import read_api_key, redact
from cyclealign.usage import OracleStats, Usage

__all__ = [
    "ChatBackend",
    "ChatError",
    "ChatOracle",
    "ChatReply",
    "ChatRequest",
    "FormatRejected",
    "OracleCache",
    "OracleStats",
    "Usage",
    "cache_key",
    "read_api_key",
    "redact",
]
