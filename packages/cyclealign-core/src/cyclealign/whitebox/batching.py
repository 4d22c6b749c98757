"""One padded forward pass over every candidate of every prompt, prompt tokens masked out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cyclealign.protocols import Candidate, Prompt
from cyclealign.whitebox.forward_kwargs import keep_last
from cyclealign.whitebox.prompt_format import encode_prompt


@dataclass
class EncodedBatch:
    """``B·n`` sequences (prompt + response), padded; ``response_mask`` marks response tokens."""

    input_ids: torch.Tensor  # [B*n, L]
    attention_mask: torch.Tensor  # [B*n, L]
    response_mask: torch.Tensor  # [B*n, L] bool
    batch: int
    n: int

    def to(self, device: torch.device) -> EncodedBatch:
        return EncodedBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.response_mask.to(device),
            self.batch,
            self.n,
        )


def response_ids(tokenizer: Any, candidate: Candidate) -> list[int]:
    """Sampled candidates keep their own ids; text-only ones (the oracle's) are tokenized + EOS."""
    if candidate.token_ids:
        return list(candidate.token_ids)
    ids = tokenizer(candidate.text, add_special_tokens=False)["input_ids"]
    return [*ids, tokenizer.eos_token_id]


def encode_pairs(
    tokenizer: Any,
    prompts: Sequence[Prompt],
    candidates: Sequence[Sequence[Candidate]],
    max_length: int,
    max_prompt_tokens: int | None = None,
    prompt_format: str = "auto",
) -> list[tuple[list[int], list[list[int]]]]:
    """(prompt ids, response ids of each candidate) per prompt, every pair fitting in ``max_length``.

    A response keeps at most ``max_length - 1`` tokens; the prompt loses its
    oldest tokens until its longest candidate fits (one token always stays).
    Every candidate of a prompt is thus conditioned on the same prompt, which a
    ranking loss compares them under, and which prefix sharing needs.
    """
    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
    n = len(candidates[0])
    if any(len(c) != n for c in candidates):
        raise ValueError("every prompt in one batch needs the same number of candidates")
    pairs = []
    for prompt, cands in zip(prompts, candidates, strict=True):
        p_ids, _ = encode_prompt(tokenizer, prompt, max_prompt_tokens or max_length, prompt_format)
        r_ids = [response_ids(tokenizer, cand)[: max_length - 1] for cand in cands]
        keep = max(1, max_length - max(len(r) for r in r_ids))
        pairs.append((p_ids[-keep:], r_ids))
    return pairs


def encode_candidates(
    tokenizer: Any,
    prompts: Sequence[Prompt],
    candidates: Sequence[Sequence[Candidate]],
    max_length: int,
    max_prompt_tokens: int | None = None,
    prompt_format: str = "auto",
) -> EncodedBatch:
    """Every (prompt, candidate) pair as one padded row (the tokenizer's padding side), see ``encode_pairs``."""
    pairs = encode_pairs(tokenizer, prompts, candidates, max_length, max_prompt_tokens, prompt_format)
    rows = [(p_ids + r_ids, len(p_ids)) for p_ids, responses in pairs for r_ids in responses]
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    left = getattr(tokenizer, "padding_side", "right") == "left"
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    response = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, (ids, start) in enumerate(rows):
        offset = width - len(ids) if left else 0
        input_ids[r, offset : offset + len(ids)] = torch.tensor(ids)
        attention[r, offset : offset + len(ids)] = 1
        response[r, offset + start : offset + len(ids)] = True
    return EncodedBatch(input_ids, attention, response, len(prompts), len(candidates[0]))


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] without materialising the whole log-softmax.

    Half-precision logits (bfloat16/float16 weights) are upcast to float32 first,
    so log-probs, and every loss built on them, are float32 whatever the weights.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def sequence_logps(model: Any, enc: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response-token log-probs ``[B, n]`` (differentiable) and true lengths ``[B, n]``.

    Position ids count real tokens only, so a padded row sees exactly the
    positions it would see alone.  Only the columns from the first response
    token on are projected onto the vocabulary (``logits_to_keep``): with long
    prompts and large vocabularies that projection dominates memory.
    """
    position_ids = (enc.attention_mask.cumsum(-1) - 1).clamp(min=0)
    width = enc.input_ids.shape[1]
    predicts = enc.response_mask[:, 1:].any(0)  # column c's logits predict token c + 1
    first = int(predicts.nonzero()[0]) if bool(predicts.any()) else width - 1
    kwargs: dict[str, Any] = {"use_cache": False, **keep_last(model, width - first)}
    if len(kwargs) == 1:  # the model cannot project only the last columns
        first = 0
    logits = model(
        input_ids=enc.input_ids, attention_mask=enc.attention_mask, position_ids=position_ids, **kwargs
    ).logits
    logits = logits[:, -(width - first) :]  # a model that ignores the hint still returns every column
    lp = token_logps(logits[:, :-1], enc.input_ids[:, first + 1 :])
    mask = enc.response_mask[:, first + 1 :]
    summed = torch.where(mask, lp, torch.zeros_like(lp)).sum(-1)  # where, not *: padding may hold NaN
    lengths = enc.response_mask[:, 1:].sum(-1)
    return summed.view(enc.batch, enc.n), lengths.view(enc.batch, enc.n)
