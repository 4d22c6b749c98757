"""Prefix sharing: a prompt is encoded once, and each of its l candidates attends to that one encoding.

The padded path runs l rows of ``P + R`` tokens per prompt; here the prompt runs
once (``P`` tokens, its keys and values kept as a cache) and the candidates run
as ``l`` rows of ``R`` tokens on top of that cache, about ``P + l·R`` tokens in
all.  The cache is not detached, so gradients reach the prompt's positions
exactly as in the padded pass.  Which model families this is proven exact for
(by ``tests/test_prefix_sharing.py``) is ``PROVEN_FAMILIES``; the trainer falls
back to the padded path elsewhere.  The packed layout (``packed.py``) shares the
prompt without a cache and is what ``choose_sharing_path`` picks on CUDA and
under gradient checkpointing.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cyclealign.errors import ConfigError, WhiteboxError
from cyclealign.protocols import Candidate, Prompt
from cyclealign.whitebox.batching import encode_pairs, token_logps
from cyclealign.whitebox.forward_kwargs import cache_kwarg, keep_last, returned_cache

# ``config.model_type`` of the families whose shared log-probs and gradients equal the padded path's (tested).
PROVEN_FAMILIES = frozenset({"llama", "mistral", "qwen2", "gpt2"})


@dataclass
class SharedBatch:
    """B prompts (left-padded, so every prompt ends in the last column) and their ``B·n`` responses (right-padded)."""

    prompt_ids: torch.Tensor  # [B, P]
    prompt_mask: torch.Tensor  # [B, P]
    response_ids: torch.Tensor  # [B*n, R]
    response_mask: torch.Tensor  # [B*n, R]
    batch: int
    n: int

    def to(self, device: torch.device) -> SharedBatch:
        tensors = (self.prompt_ids, self.prompt_mask, self.response_ids, self.response_mask)
        return SharedBatch(*(t.to(device) for t in tensors), self.batch, self.n)

    @property
    def tokens(self) -> int:
        """Tokens the forward pass runs over (padding included)."""
        return self.prompt_ids.numel() + self.response_ids.numel()


def encode_shared(
    tokenizer: Any,
    prompts: Sequence[Prompt],
    candidates: Sequence[Sequence[Candidate]],
    max_length: int,
    max_prompt_tokens: int | None = None,
    prompt_format: str = "auto",
) -> SharedBatch:
    """The same pairs as ``encode_candidates`` (same cuts), laid out for one prompt pass and one response pass."""
    pairs = encode_pairs(tokenizer, prompts, candidates, max_length, max_prompt_tokens, prompt_format)
    n = len(candidates[0])
    p_width = max(len(p) for p, _ in pairs)
    r_width = max(len(r) for _, rs in pairs for r in rs)
    pad = tokenizer.pad_token_id
    prompt_ids = torch.full((len(pairs), p_width), pad, dtype=torch.long)
    prompt_mask = torch.zeros((len(pairs), p_width), dtype=torch.long)
    response_ids = torch.full((len(pairs) * n, r_width), pad, dtype=torch.long)
    response_mask = torch.zeros((len(pairs) * n, r_width), dtype=torch.long)
    for b, (p_ids, responses) in enumerate(pairs):
        prompt_ids[b, p_width - len(p_ids) :] = torch.tensor(p_ids)
        prompt_mask[b, p_width - len(p_ids) :] = 1
        for i, r_ids in enumerate(responses):
            response_ids[b * n + i, : len(r_ids)] = torch.tensor(r_ids)
            response_mask[b * n + i, : len(r_ids)] = 1
    return SharedBatch(prompt_ids, prompt_mask, response_ids, response_mask, len(pairs), n)


def shared_sequence_logps(model: Any, sb: SharedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs ``[B, n]`` (differentiable, through the shared prompt too) and lengths ``[B, n]``.

    Position ids count real tokens, so a response continues at its prompt's true
    length whatever the padding; the response pass's attention mask is the
    prompt's (repeated per candidate) followed by the response's own.
    """
    keep = keep_last(model)
    prompt_pos = (sb.prompt_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=sb.prompt_ids, attention_mask=sb.prompt_mask, position_ids=prompt_pos, use_cache=True, **keep)
    cache = returned_cache(out)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        raise WhiteboxError(
            f"{type(model).__name__} returned no expandable key/value cache: prefix sharing cannot work "
            "(set train.prefix_sharing=auto or false)"
        )
    first_logits = out.logits[:, -1].repeat_interleave(sb.n, dim=0)  # predicts each response's first token
    cache.batch_repeat_interleave(sb.n)
    prompt_len = sb.prompt_mask.sum(-1).repeat_interleave(sb.n)
    r_width = sb.response_ids.shape[1]
    position_ids = prompt_len[:, None] + torch.arange(r_width, device=prompt_len.device)[None, :]
    attention = torch.cat([sb.prompt_mask.repeat_interleave(sb.n, dim=0), sb.response_mask], dim=-1)
    logits = model(
        input_ids=sb.response_ids,
        attention_mask=attention,
        position_ids=position_ids,
        use_cache=True,
        **{cache_kwarg(model): cache},
    ).logits
    first = token_logps(first_logits, sb.response_ids[:, 0]).unsqueeze(-1)
    lp = torch.cat([first, token_logps(logits[:, :-1], sb.response_ids[:, 1:])], dim=-1)
    mask = sb.response_mask.bool()
    summed = torch.where(mask, lp, torch.zeros_like(lp)).sum(-1)  # where, not *: padding may hold NaN
    lengths = sb.response_mask.sum(-1)
    return summed.view(sb.batch, sb.n), lengths.view(sb.batch, sb.n)


def prefix_sharing_family(model: Any) -> str:
    """The ``model_type`` that decides whether prefix sharing is proven for ``model`` (peft wrappers looked through)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return str(getattr(getattr(base, "config", None), "model_type", type(base).__name__))


def choose_prefix_sharing(model: Any, setting: bool | str, gradient_checkpointing: bool = False) -> bool:
    """``train.prefix_sharing``: ``auto`` shares where proven exact and falls back to padded rows elsewhere.

    ``true`` insists (an unproven family is warned about; gradient checkpointing
    is refused, as it recomputes the forward and would grow the cache twice).
    """
    family = prefix_sharing_family(model)
    if setting == "auto":
        return family in PROVEN_FAMILIES and not gradient_checkpointing
    if not setting:
        return False
    if gradient_checkpointing:
        raise ConfigError(
            "train.prefix_sharing=true cannot be combined with train.gradient_checkpointing "
            "(recomputation would run the shared prompt's cache twice); use prefix_sharing=packed, auto or false"
        )
    if family not in PROVEN_FAMILIES:
        warnings.warn(
            f"train.prefix_sharing=true on model_type {family!r}, which is not among the families proven exact "
            f"({', '.join(sorted(PROVEN_FAMILIES))}); compare with prefix_sharing=false before trusting it",
            stacklevel=2,
        )
    return True


# Where ``auto``/``true`` pick the packed layout over the key/value cache: on CUDA (FlexAttention's fused
# kernels), and under gradient checkpointing (the cache path cannot recompute).  On the CPU without checkpointing
# the cache path stays: it was measured faster there (docs/performance.md, "Packed prefix sharing").
PACKED_ON_CPU = False


def choose_sharing_path(
    model: Any, setting: bool | str, gradient_checkpointing: bool = False, device: Any = None
) -> str:
    """``train.prefix_sharing`` → the layout of a step: ``padded`` rows, the shared ``cache``, or ``packed``.

    ``false``: padded; ``cache``: the key/value cache (refuses checkpointing);
    ``packed``: one packed sequence (any family with a separate body and head);
    ``true``/``auto``: packed on CUDA or under checkpointing, else the cache;
    ``auto`` only for the families proven exact, padded rows elsewhere.
    """
    if setting is False:
        return "padded"
    if setting == "cache":
        return "cache" if choose_prefix_sharing(model, True, gradient_checkpointing) else "padded"
    family = prefix_sharing_family(model)
    if setting == "auto" and family not in PROVEN_FAMILIES:
        return "padded"
    on_gpu = device is not None and torch.device(device).type == "cuda"
    if setting == "packed" or gradient_checkpointing or on_gpu or PACKED_ON_CPU:
        if family not in PROVEN_FAMILIES:
            warnings.warn(
                f"train.prefix_sharing={setting} on model_type {family!r}, which is not among the families proven "
                f"exact ({', '.join(sorted(PROVEN_FAMILIES))}); compare with prefix_sharing=false before trusting it",
                stacklevel=2,
            )
        return "packed"
    return "cache" if choose_prefix_sharing(model, setting, gradient_checkpointing) else "padded"
