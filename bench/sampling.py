"""The sampler's speed: generated tokens per second for B prompts × l samples, and how close to the memory bound.

The white-box is the embedded SmolLM2-135M (float32, with its LoRA adapter, as
``cyclealign run`` samples it).  For each wave size B, the B prompts' l = 3
samples come from one ``sample_many`` call; beside it, the same prompts sampled
one call per prompt (the path before waves were batched).  A decoding step
must read every weight once, so ``weight bytes / memory bandwidth`` bounds a
step from below; the bandwidth is measured here (a large tensor summed), and
the bound's fraction is ``bound / measured`` time per decoding step.

    python bench/sampling.py [--batches 1 2 4 8] [--samples 3] [--new-tokens 48]
    python bench/sampling.py --paths [--rows 3 32]   # eager vs static decoding, ms/step, toy llama on the CPU
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


def toy_peft_llama(seed: int = 0):
    """A small random llama (4 layers, width 256, 8k vocabulary) with a LoRA adapter whose B is not zero."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=8192,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        pad_token_id=0,
        eos_token_id=1,
    )
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(LlamaForCausalLM(config), lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return model.eval()


def paths(rows_list: list[int], new_tokens: int) -> None:
    """Milliseconds per decoding step of the eager and the static path, same rows, every row running to the end."""
    from cyclealign.whitebox.keyed_noise import seed_tensor
    from cyclealign.whitebox.sampler import GumbelSampling, decode, row_generator
    from cyclealign.whitebox.static_sampling import StaticSampling

    torch.set_num_threads(1)  # one thread: steadier on a shared machine, and the CPU time is the work done
    model = toy_peft_llama()
    cfg = WhiteboxConfig(device="cpu", max_new_tokens=new_tokens)
    static = StaticSampling(cfg, torch.device("cpu"))
    print(f"toy llama (4 layers, width 256, vocab 8192) + LoRA, float32, {new_tokens} steps, CPU, 1 thread")
    print(f"{'rows':>5} {'eager ms/step':>14} {'static ms/step':>15} {'eager CPU ms':>13} {'static CPU ms':>14}")
    for rows in rows_list:
        ids = torch.randint(3, 8192, (rows, 32), generator=torch.Generator().manual_seed(rows))
        att = torch.ones_like(ids)
        keys = [f"bench:{r}" for r in range(rows)]

        def eager(ids=ids, att=att, keys=keys):
            gens = [row_generator(k, 0, torch.device("cpu")) for k in keys]
            return decode(model, ids, att, GumbelSampling(gens, 1.0, 0.95), new_tokens, eos_id=-1, pad_id=0)

        def fast(ids=ids, att=att, keys=keys):
            return static.decode(model, ids, att, seed_tensor(keys, 1), eos_id=-1, pad_id=0)

        walls, cpus = [], []
        for fn in (eager, fast):
            with torch.no_grad():
                fn()  # warm-up (the static path builds its decoder here)
                cpu = time.process_time()
                wall, (tokens, _) = timed(fn)
            walls.append(wall / tokens.shape[1] * 1e3)
            cpus.append((time.process_time() - cpu) / tokens.shape[1] * 1e3)
        print(f"{rows:>5} {walls[0]:>14.1f} {walls[1]:>15.1f} {cpus[0]:>13.1f} {cpus[1]:>14.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8], help="prompts per wave (B)")
    parser.add_argument("--samples", type=int, default=3, help="samples per prompt (l)")
    parser.add_argument("--new-tokens", type=int, default=48, help="whitebox.max_new_tokens")
    parser.add_argument("--paths", action="store_true", help="eager vs static decoding on a toy llama instead")
    parser.add_argument("--rows", type=int, nargs="+", default=[3, 32], help="sequences per wave (--paths)")
    args = parser.parse_args()
    if args.paths:
        paths(args.rows, args.new_tokens)
        return
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
