"""A LoRA adapter folded into its base weights for one sampling wave, the original tensors swapped back after.

Unmerged, every adapted projection costs a base matmul, two small adapter
matmuls, a dropout, a scale and an add, each a kernel launch and most a dtype
copy; a decoding step of a 22-layer model spends more time launching them
than reading weights.  For the wave, each adapted layer is replaced in its
parent by its own base layer whose weight is ``W + scale·B·A``; afterwards the
original weight tensor object and the LoRA layer go back in place, so training
continues on exactly the weights it had (nothing is subtracted, which in
bfloat16 would drift).  The merged weights live in buffers kept from wave to
wave, so a CUDA graph captured over them stays valid while the adapter learns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class _Swap:
    parent: torch.nn.Module
    attr: str
    lora: torch.nn.Module
    base: torch.nn.Module
    weight: torch.nn.Parameter


def _lora_layer_class() -> type | None:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return None
    return LoraLayer


def _active(layer: Any) -> list[str]:
    """The adapters this layer adds in its forward (none if disabled or already merged into the base)."""
    if getattr(layer, "disable_adapters", False) or getattr(layer, "merged", False):
        return []
    return [name for name in layer.active_adapters if name in layer.lora_A]


def _mergeable(layer: Any) -> bool:
    """A plain LoRA on a Linear/Conv1D weight: no DoRA, no adapter bias, no embedding or convolution variant."""
    base = layer.get_base_layer()
    if not isinstance(getattr(base, "weight", None), torch.nn.Parameter) or base.weight.numel() == 0:
        return False  # e.g. a ZeRO-3 partitioned weight
    for name in _active(layer):
        if getattr(layer, "use_dora", {}).get(name, False) or getattr(layer, "lora_bias", {}).get(name, False):
            return False
        if not isinstance(layer.lora_A[name], torch.nn.Linear):
            return False
    return type(layer).__name__ == "Linear"


def lora_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, str, Any]] | None:
    """(qualified name, parent, attribute, layer) of every LoRA layer; None when one of them cannot be merged."""
    cls = _lora_layer_class()
    if cls is None:
        return []
    found = []
    for name, parent in model.named_modules():
        for attr, child in parent.named_children():
            if isinstance(child, cls):
                if not _mergeable(child):
                    return None
                found.append((f"{name}.{attr}" if name else attr, parent, attr, child))
    return found


class AdapterMerger:
    """Folds a peft model's LoRA layers into their base weights for the span of a ``with merged(model)``."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def _buffer(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The persistent merged-weight tensor of one layer (reallocated only if its shape, dtype or device changed)."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._buffers[name] = torch.empty_like(like, memory_format=torch.contiguous_format)
        return buf

    @torch.no_grad()
    def _merge_one(self, name: str, layer: Any) -> torch.Tensor:
        weight = layer.get_base_layer().weight
        precision = torch.promote_types(weight.dtype, torch.float32)  # the sum in float32 at least, then rounded once
        merged = weight.to(precision)
        for adapter in _active(layer):
            merged = merged + layer.get_delta_weight(adapter).to(precision)
        return self._buffer(name, weight).copy_(merged)

    @contextlib.contextmanager
    def merged(self, model: torch.nn.Module) -> Iterator[bool]:
        """Yield True with every LoRA layer merged, or False (model untouched) when there is nothing to merge.

        Whatever happens inside, every parent gets its LoRA layer back and every
        base layer its original weight tensor (the same object, bit for bit).
        """
        layers = lora_layers(model)
        if not layers:
            yield False
            return
        swaps: list[_Swap] = []
        try:
            for name, parent, attr, layer in layers:
                base = layer.get_base_layer()
                swap = _Swap(parent, attr, layer, base, base.weight)
                merged = self._merge_one(name, layer)
                swaps.append(swap)
                base._parameters["weight"] = torch.nn.Parameter(merged, requires_grad=False)
                setattr(parent, attr, base)
            yield True
        finally:
            for swap in reversed(swaps):
                swap.base._parameters["weight"] = swap.weight
                setattr(swap.parent, swap.attr, swap.lora)
