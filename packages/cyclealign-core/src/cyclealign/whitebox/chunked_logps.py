"""Response log-probs from hidden states, a chunk of tokens at a time: never all [tokens × vocabulary] logits.

The LM head is the largest activation of a training step (float32 logits over a
~50–150k vocabulary for every scored token).  Here only the positions that
predict a response token reach the head, a chunk at a time; each chunk runs
under activation checkpointing, so backward recomputes that chunk's logits
instead of keeping every chunk's for it.  Peak logits memory is one chunk's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from cyclealign.whitebox.batching import token_logps

CHUNK_TOKENS = 2048  # tokens per head call: [2048 × 150k] float32 logits are ~1.2 GB, [2048 × 50k] ~0.4 GB


def _chunk_logps(head: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) of one chunk: the head, an upcast to float32 for half precision, log-softmax, gather."""
    return token_logps(head(hidden), targets)


def chunked_token_logps(
    head: Any, hidden: torch.Tensor, targets: torch.Tensor, chunk_tokens: int = CHUNK_TOKENS
) -> torch.Tensor:
    """``log softmax(head(hidden))[targets]`` for ``hidden`` ``[T, H]`` and ``targets`` ``[T]``, chunk by chunk.

    Equal to one call of the head over all ``T`` rows (values and gradients),
    but holding at most ``chunk_tokens`` rows of logits at once, in forward and
    in backward alike.  Without gradients the chunks run plainly (nothing to
    recompute).
    """
    if hidden.dim() != 2 or targets.dim() != 1 or hidden.shape[0] != targets.shape[0]:
        raise ValueError(
            f"hidden [T, H] and targets [T] expected, got {tuple(hidden.shape)} and {tuple(targets.shape)}"
        )
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be at least 1 (got {chunk_tokens})")
    grad = torch.is_grad_enabled() and (hidden.requires_grad or _head_trains(head))
    out = []
    for start in range(0, hidden.shape[0], chunk_tokens):
        h, t = hidden[start : start + chunk_tokens], targets[start : start + chunk_tokens]
        if grad:
            out.append(checkpoint(_chunk_logps, head, h, t, use_reentrant=False))
        else:
            out.append(_chunk_logps(head, h, t))
    if not out:
        return hidden.new_zeros(0, dtype=torch.float32 if hidden.dtype in (torch.float16, torch.bfloat16) else None)
    return torch.cat(out)


def _head_trains(head: Any) -> bool:
    """Whether any parameter of the head (a tied embedding, a LoRA on lm_head, full fine-tuning) takes a gradient."""
    return any(p.requires_grad for p in head.parameters()) if isinstance(head, torch.nn.Module) else False
