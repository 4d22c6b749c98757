"""Sampling l responses to every prompt of a wave in one batched decoding loop, scored by the model's own log-probs."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from cyclealign.config import WhiteboxConfig
from cyclealign.errors import WhiteboxError
from cyclealign.protocols import Candidate, Prompt
from cyclealign.whitebox.batching import token_logps
from cyclealign.whitebox.forward_kwargs import cache_kwarg, keep_last, returned_cache
from cyclealign.whitebox.keyed_noise import seed_tensor
from cyclealign.whitebox.loading import WhiteBox
from cyclealign.whitebox.prompt_format import cut_ids, cut_text, encode_prompt, resolve_format
from cyclealign.whitebox.static_sampling import StaticSampling, resolve_sampler, static_unsupported


@contextlib.contextmanager
def skinny_head(model: Any) -> Iterator[None]:
    """On CPU, the output projection of a few decoding rows computed as ``W @ x.T``.

    For a batch of a few rows and a wide vocabulary, torch's ``linear`` on CPU
    picks a kernel that reads the weights at a fraction of the memory bandwidth
    (on SmolLM2's 49k × 576 head: 37 ms a step for 3 rows, against 10 ms for
    ``W @ x.T``).  Only sampling uses this; the log-probs it returns match the
    training path's to float rounding.
    """
    head = model.get_output_embeddings()
    weight = getattr(head, "weight", None)
    if type(head) is not torch.nn.Linear or weight is None or weight.device.type != "cpu":
        yield
        return

    def forward(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = (weight @ flat.T).T
        if head.bias is not None:
            out = out + head.bias
        return out.reshape(*x.shape[:-1], weight.shape[0])

    patched = head.__dict__.get("forward")  # someone else's instance-level forward (a hook) comes back after
    head.forward = forward
    try:
        yield
    finally:
        if patched is None:
            del head.forward
        else:
            head.forward = patched


def row_generator(key: str, index: int, device: torch.device) -> torch.Generator:
    """The private random stream of sample ``index`` of the prompt drawn under ``key``."""
    seed = int.from_bytes(hashlib.sha256(f"{key}:{index}".encode()).digest()[:8], "little")
    return torch.Generator(device=device).manual_seed(seed)


TOP_P_WINDOW = 1024  # tokens searched for the top-p set before falling back to a full sort


class GumbelSampling:
    """A logits processor that turns greedy decoding into temperature/top-p sampling, one stream per row.

    ``argmax(logits / T + Gumbel noise)`` over the top-p set is a draw from the
    top-p-renormalised ``softmax(logits / T)``.  Each row's noise comes from its
    own generator, so a prompt's samples do not depend on which prompts share
    its wave (or its process): a wave of B prompts draws what B separate calls
    would.
    """

    def __init__(self, generators: Sequence[torch.Generator], temperature: float, top_p: float) -> None:
        self.generators = list(generators)
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            scores = scores.masked_fill(self._outside_top_p(scores), float("-inf"))
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g, device=scores.device) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp_(min=1e-20)))
        return scores + gumbel

    def _outside_top_p(self, scores: torch.Tensor) -> torch.Tensor:
        """The tokens after the smallest most-likely set whose mass reaches ``top_p`` (the most likely always stays).

        The set nearly always lies within the top ``TOP_P_WINDOW`` tokens, found
        with ``topk`` (a full sort of a 49k vocabulary costs several times more per
        decoding step); when some row's window holds less than ``top_p``, the full sort decides.
        """
        probs = scores.softmax(-1)
        k = min(TOP_P_WINDOW, scores.shape[-1])
        top, order = probs.topk(k, dim=-1)
        if bool((top.sum(-1) < self.top_p).any()):
            top, order = probs.sort(dim=-1, descending=True)
        beyond = (top.cumsum(-1) - top) >= self.top_p  # the mass before a token already reaches top_p
        outside = torch.ones_like(probs, dtype=torch.bool)
        return outside.scatter(-1, order, beyond)


@torch.no_grad()
def decode(
    model: Any,
    input_ids: torch.Tensor,
    attention: torch.Tensor,
    choose: Callable[[torch.Tensor | None, torch.Tensor], torch.Tensor],
    max_new_tokens: int,
    *,
    eos_id: int,
    pad_id: int,
    stopped: Callable[[list[int]], bool] | None = None,
    check_every: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode left-padded rows with a key/value cache until every row has ended; (tokens, their log-probs).

    ``choose(None, logits)`` returns scores whose argmax is the next token
    (``GumbelSampling``: a sample).  The log-probs are the model's own
    (temperature 1) of the chosen tokens.  A row that has emitted EOS gets
    padding from then on, and decoding stops at the step where the last row
    ends: no step is spent on a batch that is already done.  ``stopped(tokens)``, asked
    every ``check_every`` steps of each unfinished row, ends a row early too (a base
    model that has begun an invented turn: the text from there is cut anyway).
    """
    keep, cache_name = keep_last(model), cache_kwarg(model)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True, **keep)
    cache = returned_cache(out)
    next_position = attention.sum(-1, keepdim=True)
    ended = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    tokens, logps = [], []
    for step in range(max_new_tokens):
        logits = out.logits[:, -1].float()
        token = torch.where(ended, pad_id, choose(None, logits).argmax(-1))
        tokens.append(token)
        logps.append(token_logps(logits, token))
        ended |= token == eos_id
        if stopped is not None and (step + 1) % check_every == 0:
            rows = torch.stack(tokens, dim=1).tolist()
            done = [not e and stopped(row) for e, row in zip(ended.tolist(), rows, strict=True)]
            ended |= torch.tensor(done, dtype=torch.bool, device=ended.device)
        if bool(ended.all()) or step == max_new_tokens - 1:
            break
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=-1)
        out = model(
            input_ids=token[:, None],
            attention_mask=attention,
            position_ids=next_position,
            use_cache=True,
            **{cache_name: cache},
            **keep,
        )
        next_position = next_position + 1
    return torch.stack(tokens, dim=1), torch.stack(logps, dim=1)


class HFSampler:
    """The ``Sampler`` of a Hugging Face model.

    The B prompts of a wave are left-padded into one batch and their ``B·n``
    responses come from one decoding loop (``decode``), which stops as soon as
    every sequence has ended.  The loop's logits give each sampled token's
    temperature-1 log-prob, so self-ranking needs no second forward pass.  A
    response keeps its EOS token, so training also teaches the model where to
    stop.  Randomness comes from one stream per sample, keyed by the
    prompt's key (the engine's ``seed:prompt:interaction``): a generator on the
    eager path, a counter-based hash on the static one (``whitebox.sampler``,
    ``static_sampling.py``); the two paths draw different, equally valid samples.
    """

    def __init__(self, whitebox: WhiteBox, cfg: WhiteboxConfig | None = None) -> None:
        self.wb = whitebox
        self.cfg = cfg or whitebox.config
        self.format = resolve_format(whitebox.tokenizer, self.cfg.prompt_format)  # whitebox/prompt_format.py
        self.mode = resolve_sampler(self.cfg.sampler, whitebox.device.type)
        if self.mode == "static":
            reason = static_unsupported(whitebox.model, self.cfg.max_prompt_tokens + self.cfg.max_new_tokens)
            if reason is not None and self.cfg.sampler == "static":
                raise WhiteboxError(f"whitebox.sampler=static: {reason} (set whitebox.sampler: eager)")
            self.mode = "eager" if reason is not None else "static"
        self.static = StaticSampling(self.cfg, whitebox.device) if self.mode == "static" else None

    def sample(self, prompt: Prompt, n: int, key: str = "0") -> list[Candidate]:
        """``n`` responses to one prompt (a wave of one)."""
        return self.sample_many([prompt], n, [key])[0]

    @torch.no_grad()
    def sample_many(self, prompts: Sequence[Prompt], n: int, keys: Sequence[str]) -> list[list[Candidate]]:
        """``n`` responses to each prompt, from one ``generate`` call; ``keys[b]`` seeds prompt b's draws."""
        if len(keys) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(keys)} random keys")
        if not prompts:
            return []
        model, tok, device = self.wb.model, self.wb.tokenizer, self.wb.device
        encoded = [encode_prompt(tok, p, self.cfg.max_prompt_tokens, self.format)[0] for p in prompts]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for b, ids in enumerate(encoded):
            input_ids[b, width - len(ids) :] = torch.tensor(ids)
            attention[b, width - len(ids) :] = 1
        rows_ids = input_ids.repeat_interleave(n, dim=0).to(device)  # row b*n + i: sample i of prompt b
        rows_att = attention.repeat_interleave(n, dim=0).to(device)
        ends = {
            "eos_id": tok.eos_token_id,
            "pad_id": tok.pad_token_id,
            "stopped": self._began_a_turn if self.format in ("hh", "alpaca") else None,
        }
        was_training = model.training
        model.eval()
        try:
            with skinny_head(model):
                if self.static is not None:
                    seeds = seed_tensor(keys, n, device)
                    generated, logps = self.static.decode(model, rows_ids, rows_att, seeds, **ends)
                else:
                    generators = [row_generator(key, i, device) for key in keys for i in range(n)]
                    processor = GumbelSampling(generators, self.cfg.temperature, self.cfg.top_p)
                    generated, logps = decode(model, rows_ids, rows_att, processor, self.cfg.max_new_tokens, **ends)
        finally:
            model.train(was_training)
        rows = [self._candidate(generated[r], logps[r], tok, self.format) for r in range(generated.shape[0])]
        return [rows[b * n : (b + 1) * n] for b in range(len(prompts))]

    def _began_a_turn(self, ids: list[int]) -> bool:
        """Whether a sample has already written a turn of its own (where ``_candidate`` will cut it)."""
        text = self.wb.tokenizer.decode(ids, skip_special_tokens=True)
        return cut_text(text, self.format) != text

    @staticmethod
    def _candidate(ids: torch.Tensor, logps: torch.Tensor, tok: Any, fmt: str = "chat_template") -> Candidate:
        """The sample up to its EOS, or up to the first turn it invented (``hh``/``alpaca``): ids, text, log-prob."""
        ids_list = ids.tolist()
        eos = tok.eos_token_id
        end = ids_list.index(eos) + 1 if eos in ids_list else len(ids_list)
        kept, _ = cut_ids(tok, ids_list[:end], fmt)
        end = len(kept)
        text = tok.decode(kept, skip_special_tokens=True).strip()
        return Candidate(text=text, token_ids=tuple(kept), sum_logp=float(logps[:end].sum()), source="whitebox")
