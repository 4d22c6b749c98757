"""Counter-based sampling noise: each sample's Gumbel noise is a pure function of (its key, the step, the token).

The eager sampler keeps one ``torch.Generator`` per row, which a captured CUDA
graph cannot hold and which advances with every draw.  Here the noise of sample
``f"{key}:{index}"`` at decoding step ``t`` for vocabulary entry ``v`` is a hash
of those three numbers, computed with torch integer ops on the device: nothing
depends on the row's place in the batch, on which prompts share the wave, or on
the order in which steps run, and the per-row seeds and the step counter are
plain device tensors (graph-safe).

torch has no unsigned 64-bit arithmetic everywhere, and signed overflow is not
something to rely on, so the hash works on 32-bit lanes held in ``int64``: every
product is split so that it stays below 2**63.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

MASK32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9  # 2**32 / golden ratio: spreads consecutive counters over the 32-bit range
MIX_C1, MIX_C2 = 0x85EBCA6B, 0xC2B2AE35  # murmur3's finaliser constants
LANE_SALT = 0x68E31DA4


def sample_seed(key: str, index: int) -> int:
    """The 64-bit seed of sample ``index`` of the prompt drawn under ``key`` (signed, to fit an int64 tensor)."""
    seed = int.from_bytes(hashlib.sha256(f"{key}:{index}".encode()).digest()[:8], "little")
    return seed - (1 << 64) if seed >= 1 << 63 else seed


def seed_tensor(keys: Sequence[str], n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[len(keys)·n]`` int64 seeds, row ``b·n + i`` for sample ``i`` of prompt ``b`` (the sampler's row order)."""
    return torch.tensor([sample_seed(key, i) for key in keys for i in range(n)], dtype=torch.int64, device=device)


def _mulmod32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x · c) mod 2**32`` for ``0 <= x < 2**32``, with every intermediate below 2**49."""
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & MASK32


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finaliser: a bijection on [0, 2**32) in which every input bit flips about half the output."""
    x = x ^ (x >> 16)
    x = _mulmod32(x, MIX_C1)
    x = x ^ (x >> 13)
    x = _mulmod32(x, MIX_C2)
    return x ^ (x >> 16)


def row_step_keys(seeds: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 32-bit keys per row for one decoding step (``[R]`` each), mixed from the row's seed and the step."""
    lo, hi = seeds & MASK32, (seeds >> 32) & MASK32  # arithmetic shift, then masked: the top lane as unsigned
    k1 = _fmix32(lo ^ _mulmod32((step + 1) & MASK32, GOLDEN))
    k2 = _fmix32(hi ^ k1 ^ LANE_SALT)
    return k1, k2


def keyed_uniform(seeds: torch.Tensor, step: torch.Tensor, vocab: int) -> torch.Tensor:
    """``[R, vocab]`` float32 uniforms in (0, 1): row r's entry v is a hash of (seeds[r], step, v) alone.

    23 bits per uniform: ``(h + 0.5) / 2**23`` is exact in float32 (with 24 bits
    the top value would round to 1.0 and its Gumbel noise be infinite), never 0
    or 1, so the Gumbel transform stays finite (at most about 16.6).
    """
    k1, k2 = row_step_keys(seeds, step)
    index = torch.arange(vocab, dtype=torch.int64, device=seeds.device)
    h = _fmix32(_mulmod32(index, GOLDEN)[None, :] ^ k1[:, None])
    h = _fmix32(h ^ k2[:, None])
    return ((h >> 9).float() + 0.5) * (1.0 / (1 << 23))


def keyed_gumbel(seeds: torch.Tensor, step: torch.Tensor, vocab: int) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log(u))`` of ``keyed_uniform``."""
    return -torch.log(-torch.log(keyed_uniform(seeds, step, vocab)))


def outside_top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """The tokens after the smallest most-likely set whose mass reaches ``top_p``; a full sort, no host sync.

    The same set as the eager sampler's windowed search (``GumbelSampling._outside_top_p``),
    found without its data-dependent fallback, so it can run inside a CUDA graph.
    """
    probs = scores.softmax(-1)
    top, order = probs.sort(dim=-1, descending=True, stable=True)
    beyond = (top.cumsum(-1) - top) >= top_p  # the mass before a token already reaches top_p
    return torch.empty_like(beyond).scatter_(-1, order, beyond)


def keyed_choice(
    logits: torch.Tensor, seeds: torch.Tensor, step: torch.Tensor, temperature: float, top_p: float
) -> torch.Tensor:
    """The sampled token of every row: ``argmax(logits / T + Gumbel)`` over the top-p set (a top-p, tempered draw)."""
    scores = logits.float() / temperature
    if top_p < 1.0:
        scores = scores.masked_fill(outside_top_p(scores, top_p), float("-inf"))
    return (scores + keyed_gumbel(seeds, step, scores.shape[-1])).argmax(-1)
