"""The settings of a small, fast run: a tiny in-test llama against a local OpenAI-speaking server."""

from __future__ import annotations

from pathlib import Path


def tiny_overrides(model_dir: Path, prompts: Path, api_base: str, run_dir: Path, *extra: str) -> list[str]:
    """``--set`` style overrides; later entries in ``extra`` win."""
    return [
        f"whitebox.model={model_dir}",
        "whitebox.max_new_tokens=12",
        f"oracle.options.api_base={api_base}",
        "oracle.model=openai/tiny-oracle",
        "oracle.options.serve_gguf=null",
        "oracle.backoff_base_s=0.01",
        f"data.source={prompts}",
        f"run.dir={run_dir}",
        "run.progress=false",
        "run.checkpoint_interval_s=0",  # a checkpoint after every wave: what the resume tests kill between
        *extra,
    ]
