"""The first-party oracles' own options (``oracle.options``).

The litellm backends': where the model lives, where its key is, what to serve.
The reward-model oracle's: which local directory ranks, on which device.

The framework's policy around each call (retries, pacing, cache, budget, context)
stays in core's ``oracle`` section; these settings mean something to these
backends only.  Keys themselves are never options: only where to read them from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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


class RewardModelOptions(BaseModel):
    """``oracle.options`` of ``reward-model``: a local sequence-classification reward model ranks the candidates."""

    model_config = ConfigDict(extra="forbid")

    model: Path = Field(description="a local reward-model directory (Hugging Face format, one logit)")
    kind: Literal["classifier", "oasst-pythia"] = Field(
        "classifier",
        description="classifier: AutoModelForSequenceClassification fed (question, answer); oasst-pythia: "
        "OpenAssistant's Pythia reward-model layout (as `eval reward --reward-kind`)",
    )
    batch_size: int = Field(8, ge=1, description="(question, answer) pairs per forward pass")
    device: str = Field("auto", description="auto: this process's GPU (cuda:LOCAL_RANK), else the CPU; or cpu, cuda:1")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights' dtype; auto: bfloat16 on CUDA, float32 elsewhere"
    )
    max_length: int = Field(1024, ge=8, description="tokens per pair at most (the oldest context is cut first)")


__all__ = ["LiteLLMOptions", "RewardModelOptions"]
