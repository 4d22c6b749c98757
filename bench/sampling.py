"""The sampler's speed: generated tokens per second for B prompts × l samples, and how close to the memory bound.

The white-box is the embedded SmolLM2-135M (float32, with its LoRA adapter, as
``cyclealign run`` samples it).  For each wave size B, the B prompts' l = 3
samples come from one ``sample_many`` call; beside it, the same prompts sampled
one call per prompt (the path before waves were batched).  A decoding step
must read every weight once, so ``weight bytes / memory bandwidth`` bounds a
step from below; the bandwidth is measured here (a large tensor summed), and
the bound's fraction is ``bound / measured`` time per decoding step.

    python bench/sampling.py [--batches 1 2 4 8] [--samples 3] [--new-tokens 48]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from cyclealign.config import WhiteboxConfig
from cyclealign.protocols import Prompt
from cyclealign.whitebox import load_whitebox
from cyclealign.whitebox.sampler import HFSampler

QUESTIONS = [
    "How do I bake bread at home?",
    "What is a good way to start running?",
    "Why is the sky blue?",
    "How can I keep basil alive indoors?",
    "Give me three ideas for a rainy weekend.",
    "How do I write a polite complaint letter?",
    "What should I pack for a day hike?",
    "How do vaccines train the immune system?",
]


def bandwidth_gb_s(size_mb: int = 1024, repeats: int = 5) -> float:
    """Sustained read bandwidth: the best of ``repeats`` sums over a tensor far larger than any cache."""
    x = torch.ones(size_mb * 2**20 // 4, dtype=torch.float32)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best / 1e9


def timed(fn) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8], help="prompts per wave (B)")
    parser.add_argument("--samples", type=int, default=3, help="samples per prompt (l)")
    parser.add_argument("--new-tokens", type=int, default=48, help="whitebox.max_new_tokens")
    args = parser.parse_args()
    wb = load_whitebox(WhiteboxConfig(device="cpu", max_new_tokens=args.new_tokens), seed=0)
    sampler = HFSampler(wb)
    weight_bytes = sum(p.numel() * p.element_size() for p in wb.model.parameters())
    bw = bandwidth_gb_s()
    bound_step = weight_bytes / (bw * 1e9)
    prompts = [Prompt.from_text(f"q{i}", q) for i, q in enumerate(QUESTIONS)]
    sampler.sample_many(prompts[:1], args.samples, ["warm-up"])
    print(f"sampler: embedded SmolLM2-135M float32 + LoRA, {weight_bytes / 1e6:.0f} MB of weights, l={args.samples},")
    print(f"up to {args.new_tokens} new tokens; memory bandwidth {bw:.1f} GB/s, ", end="")
    print(f"so a decoding step takes at least {bound_step * 1e3:.1f} ms")
    header = f"{'B':>3} {'seqs':>5} {'tokens':>6} {'steps':>5} {'tok/s':>7} {'ms/step':>8} {'of bound':>8}"
    print(header + f" {'per-prompt tok/s':>16} {'wave ×':>7}")
    for b in args.batches:
        wave = prompts[:b]
        keys = [f"bench:{p.id}" for p in wave]
        wall, cands = timed(lambda wave=wave, keys=keys: sampler.sample_many(wave, args.samples, keys))
        tokens = sum(c.n_tokens for cs in cands for c in cs)
        steps = max(c.n_tokens for cs in cands for c in cs)  # generate stops when the longest has ended
        wall_one, singles = timed(
            lambda wave=wave, keys=keys: [sampler.sample(p, args.samples, k) for p, k in zip(wave, keys, strict=True)]
        )
        tokens_one = sum(c.n_tokens for cs in singles for c in cs)
        per_step = wall / steps
        rate, rate_one = tokens / wall, tokens_one / wall_one
        print(
            f"{b:>3} {b * args.samples:>5} {tokens:>6} {steps:>5} {rate:>7.1f} {per_step * 1e3:>8.1f} "
            f"{bound_step / per_step:>8.2f} {rate_one:>16.1f} {rate / rate_one:>7.2f}"
        )


if __name__ == "__main__":
    main()
