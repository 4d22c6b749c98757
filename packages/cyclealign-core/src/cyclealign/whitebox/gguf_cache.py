"""A GGUF model converted once to a Hugging Face directory, so that later loads take seconds, not a minute.

transformers reads a GGUF file three times per load (tokenizer, config,
weights), each time walking the whole metadata (for SmolLM2, a 49k-token
vocabulary) in Python: about 37 s on a 2-core machine.  The dequantized model
it produces is deterministic, so the first load saves it (``save_pretrained``:
config, safetensors weights, tokenizer) under the cache directory, keyed by the
file's path, size and modification time and the transformers version; every
later load reads that directory instead.  ``CYCLEALIGN_CACHE_DIR`` moves the
cache (default ``~/.cache/cyclealign``); ``whitebox.gguf_cache: false`` skips it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch


def cache_root() -> Path:
    return Path(os.environ.get("CYCLEALIGN_CACHE_DIR") or Path.home() / ".cache" / "cyclealign")


def converted_path(gguf: Path) -> Path:
    """Where the conversion of ``gguf`` lives (whether or not it exists yet)."""
    import transformers

    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    return cache_root() / "gguf" / f"{gguf.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def converted_dir(gguf: Path) -> Path:
    """An HF directory holding ``gguf``'s model and tokenizer, converted (once, atomically) if need be."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = converted_path(gguf)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    from cyclealign.infra.store import TEMP_PREFIX

    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{target.name}.", dir=target.parent))
    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # Dequantized on load, the weights are plain float32: what remains of GGUF is a flag that blocks saving.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)  # whole or not at all; another process that got there first wins
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
