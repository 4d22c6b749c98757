"""Packed prefix sharing: each prompt once, followed by its responses, all in ONE sequence with a sharing mask.

Layout of one prompt with l responses: ``prompt | r1 | r2 | … | rl``.  Every
response's position ids continue from the prompt's end (``P, P+1, …``), and
a response token attends to its own prompt and causally to itself, never to
another response.  All prompts of a batch go into the same row, one after the
other (``doc`` tells them apart), so there is no padding at all.

The rule is one ``mask_mod``; how the model receives it follows its attention
implementation: a FlexAttention ``BlockMask`` under ``flex_attention`` (fused
kernels that skip the masked blocks; nothing ``[q × k]`` is built), else a dense
4D mask (boolean for sdpa, additive for eager).  FlexAttention has no backward
on the CPU, so there the dense form serves.  Unlike the key/value-cache path
(``prefix.py``) this is one ordinary forward, so gradient checkpointing works.
Only the positions that predict a response token reach the LM head, in chunks
(``chunked_logps.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cyclealign.protocols import Candidate, Prompt
from cyclealign.whitebox.batching import encode_pairs
from cyclealign.whitebox.chunked_logps import CHUNK_TOKENS, chunked_token_logps

FLEX = "flex_attention"
MASKABLE = (FLEX, "sdpa", "eager")  # attention implementations that take the sharing mask


def attention_of(model: Any) -> str:
    """The attention implementation the model runs now (``eager`` when it says nothing)."""
    return getattr(base_model(model).config, "_attn_implementation", None) or "eager"


@dataclass
class PackedBatch:
    """Prompts and their candidates packed into one row; ``counts[b]`` candidates for prompt ``b`` (may differ)."""

    input_ids: torch.Tensor  # [1, T]
    position_ids: torch.Tensor  # [1, T]
    doc: torch.Tensor  # [T] which prompt a token belongs to
    seg: torch.Tensor  # [T] 0 for prompt tokens, i + 1 for candidate i's
    source: torch.Tensor  # [N] the position whose hidden state predicts each response token
    target: torch.Tensor  # [N] that response token
    owner: torch.Tensor  # [N] its candidate, flat over the batch
    lengths: torch.Tensor  # [C] response tokens per candidate
    counts: tuple[int, ...]

    def to(self, device: torch.device) -> PackedBatch:
        fields = (self.input_ids, self.position_ids, self.doc, self.seg, self.source, self.target, self.owner)
        moved = (t.to(device) for t in (*fields, self.lengths))
        return PackedBatch(*moved, self.counts)

    @property
    def tokens(self) -> int:
        """Tokens the forward pass runs over."""
        return self.input_ids.shape[1]


def encode_packed(
    tokenizer: Any,
    prompts: Sequence[Prompt],
    candidates: Sequence[Sequence[Candidate]],
    max_length: int,
    max_prompt_tokens: int | None = None,
    prompt_format: str = "auto",
) -> PackedBatch:
    """The same (prompt, response) cuts as ``encode_candidates``, packed; prompts may have different counts."""
    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
    ids: list[int] = []
    pos: list[int] = []
    doc: list[int] = []
    seg: list[int] = []
    source: list[int] = []
    target: list[int] = []
    owner: list[int] = []
    lengths: list[int] = []
    for b, (prompt, cands) in enumerate(zip(prompts, candidates, strict=True)):
        [(p_ids, responses)] = encode_pairs(tokenizer, [prompt], [cands], max_length, max_prompt_tokens, prompt_format)
        last_prompt = len(ids) + len(p_ids) - 1
        ids += p_ids
        pos += range(len(p_ids))
        doc += [b] * len(p_ids)
        seg += [0] * len(p_ids)
        for i, r_ids in enumerate(responses):
            start = len(ids)
            ids += r_ids
            pos += range(len(p_ids), len(p_ids) + len(r_ids))
            doc += [b] * len(r_ids)
            seg += [i + 1] * len(r_ids)
            source += [last_prompt, *range(start, start + len(r_ids) - 1)][: len(r_ids)]
            target += r_ids
            owner += [len(lengths)] * len(r_ids)
            lengths.append(len(r_ids))

    def t(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long)

    counts = tuple(len(c) for c in candidates)
    return PackedBatch(t(ids)[None], t(pos)[None], t(doc), t(seg), t(source), t(target), t(owner), t(lengths), counts)


def sharing_mask_mod(doc: torch.Tensor, seg: torch.Tensor) -> Any:
    """The rule: same prompt, causal, and the key is a prompt token or in the query's own response."""

    def mask_mod(batch: Any, head: Any, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return (doc[q] == doc[k]) & (k <= q) & ((seg[k] == 0) | (seg[k] == seg[q]))

    return mask_mod


def attention_mask_for(pb: PackedBatch, implementation: str, dtype: torch.dtype) -> Any:
    """The sharing rule in the form ``implementation`` takes: a ``BlockMask``, or a dense ``[1, 1, T, T]`` mask."""
    mask_mod = sharing_mask_mod(pb.doc, pb.seg)
    size = pb.tokens
    if implementation == FLEX:
        from torch.nn.attention.flex_attention import create_block_mask

        on_gpu = pb.doc.device.type == "cuda"  # compiled: the block mask without a dense [T, T] intermediate
        return create_block_mask(mask_mod, 1, None, size, size, device=pb.doc.device, _compile=on_gpu)
    idx = torch.arange(size, device=pb.doc.device)
    allowed = mask_mod(0, 0, idx[:, None], idx[None, :])[None, None]
    if implementation == "eager":  # eager adds the mask to the scores
        return torch.zeros(allowed.shape, dtype=dtype, device=idx.device).masked_fill(~allowed, torch.finfo(dtype).min)
    return allowed


def base_model(model: Any) -> Any:
    """The ``…ForCausalLM`` under a peft wrapper (LoRA layers stay in place, so ``disable_adapter`` still works)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def body_and_head(model: Any) -> tuple[Any, Any]:
    """The transformer body (hidden states, final norm included) and the LM head of a causal LM."""
    base = base_model(model)
    body, head = getattr(base, "base_model", None), base.get_output_embeddings()
    if body is None or body is base or head is None:
        raise TypeError(f"{type(base).__name__} has no separate body and LM head: the packed path cannot score it")
    return body, head


def packed_candidate_logps(
    model: Any, pb: PackedBatch, body: Any = None, chunk_tokens: int = CHUNK_TOKENS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs ``[C]`` (flat over the batch, differentiable) and lengths ``[C]``.

    ``body`` may be a compiled version of the model's body (``train.compile``).
    """
    plain_body, head = body_and_head(model)
    implementation = attention_of(model)
    if implementation not in MASKABLE:
        raise ValueError(f"attention {implementation!r} takes no sharing mask: the packed path needs one of {MASKABLE}")
    mask = attention_mask_for(pb, implementation, next(head.parameters()).dtype)
    out = (plain_body if body is None else body)(
        input_ids=pb.input_ids, attention_mask=mask, position_ids=pb.position_ids, use_cache=False
    )
    hidden = out.last_hidden_state[0]
    lp = chunked_token_logps(head, hidden.index_select(0, pb.source), pb.target, chunk_tokens)
    summed = torch.zeros(len(pb.lengths), dtype=lp.dtype, device=lp.device).index_add(0, pb.owner, lp)
    return summed, pb.lengths


def split_by_prompt(values: torch.Tensor, counts: Sequence[int]) -> list[torch.Tensor]:
    """Flat per-candidate values as one ``[n_b]`` tensor per prompt."""
    return list(torch.split(values, list(counts)))


def packed_sequence_logps(model: Any, pb: PackedBatch, body: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, n]`` log-probs and lengths, for a batch whose prompts all have ``n`` candidates (as the other paths)."""
    if len(set(pb.counts)) > 1:
        raise ValueError(f"candidate counts differ ({pb.counts}): use packed_candidate_logps and split_by_prompt")
    summed, lengths = packed_candidate_logps(model, pb, body)
    shape = (len(pb.counts), pb.counts[0] if pb.counts else 0)
    return summed.view(shape), lengths.view(shape)


def supports_flex(model: Any) -> bool:
    """Whether the model's class declares FlexAttention support (transformers' ``_supports_flex_attn``)."""
    return bool(getattr(base_model(model), "_supports_flex_attn", False))


@contextlib.contextmanager
def attention_implementation(model: Any, implementation: str | None) -> Iterator[None]:
    """Run the model under ``implementation`` for the duration (forward and backward, recomputation included).

    The trainer holds it over a whole step, so a checkpointed layer recomputes
    with the same kernel; outside a step (sampling) the loaded one serves.
    """
    base = base_model(model)
    before = getattr(base.config, "_attn_implementation", None)
    if implementation is None or implementation == before:
        yield
        return
    base.set_attn_implementation(implementation)
    try:
        yield
    finally:
        base.set_attn_implementation(before)
