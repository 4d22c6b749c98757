"""``whitebox.sampler``: which decoding path a wave takes, and the static one's merged adapter and shape cache.

``eager`` is the step-by-step loop of ``sampler.decode`` (a dynamic cache, one
``torch.Generator`` per row, a host sync every step).  ``static`` merges the
LoRA adapter for the wave (``merged_adapter``), decodes with a static cache
whose step is replayed from a CUDA graph (``static_decode``) and draws its
noise from counter-based keyed streams (``keyed_noise``).  Wave shapes are
rounded up to buckets (rows to a power of two, length to a multiple of 64) so a
few decoders, and their captured graphs, serve every wave.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

import torch

from cyclealign.config import WhiteboxConfig
from cyclealign.whitebox.merged_adapter import AdapterMerger
from cyclealign.whitebox.static_decode import DecodeSettings, StaticDecoder

LENGTH_QUANTUM = 64  # cache lengths are multiples of this
MAX_SHAPES = 4  # decoders (caches and graphs) kept, least recently used dropped first
STATIC_ATTENTION = ("sdpa", "eager")  # implementations that take the decoder's 4-D mask


def resolve_sampler(setting: str, device_type: str) -> Literal["eager", "static"]:
    """``auto``: the static path on CUDA (where launch overhead dominates a step), the eager one elsewhere."""
    if setting == "auto":
        return "static" if device_type == "cuda" else "eager"
    if setting not in ("eager", "static"):
        raise ValueError(f"whitebox.sampler: {setting!r} is not one of auto, eager, static")
    return setting  # type: ignore[return-value]


def static_unsupported(model: Any, length: int) -> str | None:
    """Why the static path cannot decode sequences of up to ``length`` tokens with this model (None: it can)."""
    try:
        from transformers.cache_utils import Cache, StaticLayer  # noqa: F401
    except ImportError:
        return "this transformers version has no per-layer StaticLayer cache (transformers >= 4.56 has)"
    if any(hasattr(p, "ds_id") for p in model.parameters()):
        return "DeepSpeed ZeRO-3 partitions the weights (its hooks gather them inside every forward)"
    attn = getattr(model.config, "_attn_implementation", None)
    if attn not in STATIC_ATTENTION:
        return f"attention implementation {attn!r} does not take a 4-D mask (use sdpa or eager)"
    text = model.config.get_text_config(decoder=True)
    kinds = set(getattr(text, "layer_types", None) or ["full_attention"])
    if not kinds <= {"full_attention", "sliding_attention"}:
        return f"layer types {sorted(kinds)} are not plain attention"
    if getattr(text, "attention_chunk_size", None) is not None:
        return "chunked attention is not supported"
    window = getattr(text, "sliding_window", None)
    if window is not None and window < length:
        return f"a sliding window of {window} tokens is shorter than prompt + new tokens ({length})"
    return None


def bucket_rows(rows: int) -> int:
    """The next power of two: waves of 3, 6, 12, 24 sequences use 4, 8, 16, 32 rows."""
    return 1 << max(0, rows - 1).bit_length()


def bucket_length(tokens: int) -> int:
    return -(-tokens // LENGTH_QUANTUM) * LENGTH_QUANTUM


def weights_key(module: torch.nn.Module) -> tuple[int, ...]:
    """Where every parameter and buffer lives: a captured graph is valid only while none of them has moved."""
    return tuple(t.data_ptr() for t in (*module.parameters(), *module.buffers()))


class StaticSampling:
    """The static decoding path: merged adapter, bucketed static caches, graphs kept while the weights stay put."""

    def __init__(self, cfg: WhiteboxConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.use_graph = cfg.cuda_graph and device.type == "cuda"
        self.merger = AdapterMerger()
        self._decoders: OrderedDict[tuple[int, int], StaticDecoder] = OrderedDict()
        self._weights: tuple[int, ...] = ()

    @torch.no_grad()
    def decode(
        self,
        model: Any,
        input_ids: torch.Tensor,
        attention: torch.Tensor,
        seeds: torch.Tensor,
        *,
        eos_id: int,
        pad_id: int,
        stopped: Callable[[list[int]], bool] | None = None,
        check_every: int = 8,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, log-probs) of every row, as ``sampler.decode`` returns them, with keyed noise."""
        with self.merger.merged(model) as merged:
            module = model.get_base_model() if merged else model
            settings = DecodeSettings(
                self.cfg.max_new_tokens, self.cfg.temperature, self.cfg.top_p, eos_id, pad_id, self.use_graph
            )
            decoder = self._decoder(module, input_ids.shape[0], input_ids.shape[1], settings, input_ids.device)
            return decoder.decode(input_ids, attention, seeds.to(input_ids.device), stopped, check_every)

    def _decoder(
        self, module: Any, rows: int, width: int, settings: DecodeSettings, device: torch.device
    ) -> StaticDecoder:
        """The decoder of this wave's bucket, built on first use; all dropped when a weight has moved."""
        key = weights_key(module)
        if key != self._weights:
            self._decoders.clear()
            self._weights = key
        shape = (bucket_rows(rows), bucket_length(width + settings.max_new_tokens))
        decoder = self._decoders.get(shape)
        if decoder is None or decoder.model is not module or decoder.settings != settings:
            decoder = StaticDecoder(module, *shape, settings, device)
            self._decoders[shape] = decoder
            while len(self._decoders) > MAX_SHAPES:
                self._decoders.popitem(last=False)
        self._decoders.move_to_end(shape)
        return decoder
