"""The litellm backends' own options (``oracle.options``): where the model lives, where its key is, what to serve.

The framework's policy around each call (retries, pacing, cache, budget, context)
stays in core's ``oracle`` section; these settings mean something to these
backends only.  Keys themselves are never options: only where to read them from.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class LiteLLMOptions(BaseModel):
    """``oracle.options`` of ``chatgpt``, ``gpt-4``, ``local`` and ``litellm``."""

    model_config = ConfigDict(extra="forbid")

    api_base: str | None = Field(
        None, description="an OpenAI-compatible endpoint (local: llama.cpp, vLLM, ollama; or a proxy)"
    )
    api_key_env: str | None = Field(
        None, description="environment variable holding the API key (chatgpt/gpt-4: OPENAI_API_KEY)"
    )
    api_key_file: Path | None = Field(None, description="file holding the API key (its first line)")
    serve_gguf: str | None = Field(
        "embedded:smollm2", description="local without api_base: the GGUF the project serves itself with llama.cpp"
    )
    server_ctx: int = Field(4096, ge=512, description="context size of the managed llama.cpp server")
    json_schema: bool = Field(True, description="ask for schema-constrained JSON where the provider supports it")


__all__ = ["LiteLLMOptions"]
