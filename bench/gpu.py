"""The GPU benchmark: sampler, DPO step, full fine-tuning MFU and a run's time split, side by side, in one go.

On a seeded random 1.1B llama built from a config (hidden 2048, intermediate
5632, 22 layers, 32/4 heads, vocabulary 32,000, bfloat16; nothing from a hub),
LoRA r=8 on q/k/v/o:

1. sampler: today's decoding loop (``whitebox.sampler=eager``), the static one
   (``whitebox.sampler=static``, ``whitebox.cuda_graph=true``) and HF ``generate``
   on the same peft model, at B·l = 3, 32 and 128 sequences: ms per decoding step
   (the difference of two lengths, so the prompt's prefill cancels) and the
   fraction of the bandwidth bound (weight bytes / HBM bandwidth);
2. DPO step, 8 pairs of 256 + 128 tokens: ours (padded rows, prefix sharing,
   ``train.compile``) against TRL's ``DPOTrainer`` as a user runs it (defaults),
   gradient checkpointing off on both, then on on both: steady-state steps/s and
   peak memory, each contender in a process of its own;
3. full fine-tuning MFU of PRO with l = 4, FLOPs counted over the tokens the step
   computes (6 · parameters · tokens; the prompt once per candidate set with prefix
   sharing), against 989 TFLOP/s (dense bf16, H100/H200);
4. one ``cyclealign run`` (in-process oracle that answers at once): each tick
   split into sampling, training, waiting for the oracle, and the rest.

    python bench/gpu.py                 # one H100/H200-class GPU, about 6 minutes
    python bench/gpu.py --toy           # a tiny float32 llama on the CPU (tests the script)
    python bench/gpu.py --only sampler dpo --bandwidth-tbs 3.35

The keys under test (``whitebox.sampler``, ``whitebox.cuda_graph``,
``train.compile``) are checked against the installed build's config: an older
build's rows say which key it lacks.  Without TRL the DPO rows of TRL say why.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONTENT_ONLY = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # a prompt is exactly its tokens
SPECIALS = ["<pad>", "</s>", "<s>", "<unk>"]
PEAK_TFLOPS = 989.0  # dense bf16, H100/H200 SXM
BANDWIDTH_TBS = {"H200": 4.8, "H100": 3.35}  # HBM, by device name
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


@dataclass(frozen=True)
class Sizes:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    dtype: str
    waves: tuple[tuple[int, int], ...]  # (prompts B, samples l) per sampler row
    sample_prompt: int
    new_tokens: tuple[int, int]  # two lengths: their difference times the decoding steps alone
    dpo: tuple[int, int, int]  # pairs, prompt tokens, response tokens
    dpo_steps: int
    mfu: tuple[int, int, int, int]  # prompts, candidates, prompt tokens, response tokens
    mfu_steps: int
    cycle: tuple[int, int, int, int]  # prompts, prompt_batch, samples, new tokens


FULL = Sizes(2048, 5632, 22, 32, 4, 32000, "bfloat16", ((1, 3), (8, 4), (32, 4)), 128, (16, 48),
             (8, 256, 128), 8, (4, 4, 256, 128), 4, (24, 8, 3, 64))  # fmt: skip
TOY = Sizes(64, 128, 2, 4, 2, 512, "float32", ((1, 3), (8, 4), (32, 4)), 16, (4, 12),
            (8, 32, 16), 2, (2, 4, 32, 16), 2, (4, 2, 3, 8))  # fmt: skip


def has_key(section: str, key: str) -> bool:
    """Whether this build's config knows ``section.key`` (an older build lacks some keys: their rows say so)."""
    from cyclealign import config

    model = {"whitebox": config.WhiteboxConfig, "train": config.TrainConfig}[section]
    return key in model.model_fields


def word_text(n: int, offset: int = 0) -> str:
    """A text of exactly ``n`` tokens with the bench tokenizer (one word each)."""
    return " ".join(f"w{(offset + 7 * i) % 400}" for i in range(n))


# ---------------------------------------------------------------- the model
def build_model(directory: Path, s: Sizes) -> None:
    """A seeded random llama of ``s`` and a word-level tokenizer of its vocabulary, saved for the workers."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({f"w{i}": len(SPECIALS) + i for i in range(s.vocab - len(SPECIALS))})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", bos_token="<s>")
    tok.padding_side = "left"
    tok.chat_template = CONTENT_ONLY
    config = LlamaConfig(
        vocab_size=s.vocab,
        hidden_size=s.hidden,
        intermediate_size=s.intermediate,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):  # a 1.1B model initialises in seconds on the GPU
        model = LlamaForCausalLM(config).to(getattr(torch, s.dtype))
    model.save_pretrained(directory)
    tok.save_pretrained(directory)


def device_kind() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def median_step_s(step: Any, steps: int) -> float:
    """The median wall time of ``steps`` calls of ``step()``, the device synchronised after each."""
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_mb() -> float:
    """This process's peak: CUDA memory allocated, or the peak RSS on a CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def whitebox_config(model_dir: str, s: Sizes, **extra: Any) -> Any:
    from cyclealign.config import WhiteboxConfig

    return WhiteboxConfig(
        model=model_dir, dtype=s.dtype, lora_r=8, lora_alpha=16, max_prompt_tokens=1024, prompt_format="chat_template",
        **extra,
    )  # fmt: skip


# ---------------------------------------------------------------- 1. sampler
SAMPLER_MODES = ("eager", "static", "generate")


def sampler_options(mode: str) -> dict[str, Any] | str:
    """The whitebox keys of a sampler mode, or why this build cannot run it."""
    if mode == "generate":
        return {}
    if not has_key("whitebox", "sampler"):
        return {} if mode == "eager" else "whitebox.sampler is not in this build's config"
    options: dict[str, Any] = {"sampler": mode}
    if mode == "static" and device_kind() == "cuda":
        if not has_key("whitebox", "cuda_graph"):
            return "whitebox.cuda_graph is not in this build's config"
        options["cuda_graph"] = True
    return options


def timed_wave(fn: Any) -> tuple[float, int]:
    """(seconds, decoding steps) of one wave; the steps are the longest row's tokens."""
    sync()
    t0 = time.perf_counter()
    steps = fn()
    sync()
    return time.perf_counter() - t0, steps


def sampler_worker(model_dir: str, s: Sizes, mode: str) -> dict:
    from cyclealign.protocols import Prompt
    from cyclealign.whitebox import load_whitebox
    from cyclealign.whitebox.sampler import HFSampler

    options = sampler_options(mode)
    if isinstance(options, str):
        return {"skipped": options}
    wb = load_whitebox(whitebox_config(model_dir, s, **options), seed=0)
    weight_bytes = sum(p.numel() * p.element_size() for p in wb.model.parameters())
    rows = []
    for b, n in s.waves:
        prompts = [Prompt.from_text(f"q{i}", word_text(s.sample_prompt, i)) for i in range(b)]
        keys = [f"bench:{i}" for i in range(b)]

        def wave(new: int, prompts=prompts, keys=keys, n=n) -> int:
            if mode == "generate":
                return generate_wave(wb, prompts, n, new)
            sampler = HFSampler(wb, wb.config.model_copy(update={"max_new_tokens": new}))
            cands = sampler.sample_many(prompts, n, keys)
            return max(c.n_tokens for cs in cands for c in cs)

        wave(s.new_tokens[0])  # warm-up (a static cache or CUDA graph is made here)
        wave(s.new_tokens[1])
        short = [timed_wave(lambda: wave(s.new_tokens[0])) for _ in range(2)]
        long = [timed_wave(lambda: wave(s.new_tokens[1])) for _ in range(2)]
        (t1, n1), (t2, n2) = min(short), min(long)
        per_step = (t2 - t1) / max(n2 - n1, 1)
        rows.append({"seqs": b * n, "ms_step": per_step * 1e3, "tok_s": b * n / per_step})
    return {"weight_bytes": weight_bytes, "rows": rows}


def generate_wave(wb: Any, prompts: list, n: int, new: int) -> int:
    """HF ``generate`` on the same peft model: sampling, exactly ``new`` tokens (no early end), l per prompt."""
    import torch

    tok = wb.tokenizer
    enc = tok([p.text for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)
    wb.model.eval()
    with torch.no_grad():
        out = wb.model.generate(
            input_ids=enc["input_ids"].to(wb.device),
            attention_mask=enc["attention_mask"].to(wb.device),
            do_sample=True,
            temperature=wb.config.temperature,
            top_p=wb.config.top_p,
            max_new_tokens=new,
            min_new_tokens=new,
            num_return_sequences=n,
            pad_token_id=tok.pad_token_id,
        )
    return out.shape[1] - enc["input_ids"].shape[1]


# ---------------------------------------------------------------- 2. DPO step
def pair_texts(s: Sizes) -> tuple[str, str, str]:
    _, p_len, r_len = s.dpo
    return word_text(p_len), word_text(r_len - 1, 1), word_text(r_len - 1, 2)  # responses end with EOS


def ours_dpo_worker(model_dir: str, s: Sizes, gc: bool, variant: str) -> dict:
    """Our ``PolicyTrainer.step``: ``padded`` rows, ``shared`` prompt (prefix sharing) or ``compile``d."""
    from cyclealign.config import TrainConfig
    from cyclealign.protocols import Candidate, LossBatch, Prompt
    from cyclealign.whitebox import build_trainer, load_whitebox
    from cyclealign_losses import DpoLoss

    if variant == "compile" and not has_key("train", "compile"):
        return {"skipped": "train.compile is not in this build's config"}
    pairs, p_len, r_len = s.dpo
    wb = load_whitebox(whitebox_config(model_dir, s), seed=0)
    extra = {"compile": True} if variant == "compile" else {}
    sharing: Any = {"padded": False, "shared": True}.get(variant, "auto")
    train = TrainConfig(lr=1e-4, max_length=p_len + r_len, prefix_sharing=sharing, gradient_checkpointing=gc, **extra)
    trainer = build_trainer(wb, DpoLoss(sft_weight=0.0, beta=0.1), train)
    tok = wb.tokenizer
    prompt, chosen, rejected = pair_texts(s)
    cands = tuple(
        Candidate(t, token_ids=(*tok(t, add_special_tokens=False)["input_ids"], tok.eos_token_id))
        for t in (chosen, rejected)
    )
    batches = [LossBatch(Prompt.from_text(f"p{i}", prompt), cands, (1.0, 0.0), 0) for i in range(pairs)]
    for _ in range(2):  # warm-up (and compilation)
        trainer.step(batches)
    reset_peak()
    step_s = median_step_s(lambda: trainer.step(batches), s.dpo_steps)
    return {"step_s": step_s, "peak_mb": peak_mb(), "prefix_sharing": trainer.prefix_sharing}


def trl_dpo_worker(model_dir: str, s: Sizes, gc: bool) -> dict:
    """TRL's ``DPOTrainer`` as a user runs it: ``DPOConfig`` defaults but batch, steps and checkpointing.

    Differs from defaults only in: ``per_device_train_batch_size`` (8, as TRL's
    default), ``max_steps``, ``gradient_checkpointing`` (set to the row's),
    ``save_strategy="no"``, ``report_to=[]`` and, on a CPU, ``use_cpu=True``.
    Timing is steady state: the step ends' stamps after two warm-up steps.
    """
    if importlib.util.find_spec("trl") is None:
        return {"skipped": "trl is not installed (pip install trl datasets)"}
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    pairs, _, _ = s.dpo
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, s.dtype))
    prompt, chosen, rejected = pair_texts(s)
    data = Dataset.from_dict(
        {"prompt": [prompt] * pairs, "chosen": [" " + chosen] * pairs, "rejected": [" " + rejected] * pairs}
    )
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2:
                reset_peak()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(
            output_dir=out,
            per_device_train_batch_size=pairs,
            max_steps=s.dpo_steps + 2,
            gradient_checkpointing=gc,
            save_strategy="no",
            report_to=[],
            use_cpu=device_kind() == "cpu",
        )
        lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS)
        trainer = DPOTrainer(
            model=model, args=args, train_dataset=data, processing_class=tok, peft_config=lora, callbacks=[Stamp()]
        )
        trainer.train()
    times = [b - a for a, b in itertools.pairwise(stamps[1:])]  # after two warm-up steps
    return {"step_s": statistics.median(times), "peak_mb": peak_mb(), "bf16": bool(args.bf16)}


# ---------------------------------------------------------------- 3. MFU
def mfu_worker(model_dir: str, s: Sizes, sharing: bool) -> dict:
    """Full fine-tuning, PRO over l candidates: achieved FLOP/s over the tokens the step actually computes."""
    from cyclealign.config import TrainConfig
    from cyclealign.protocols import Candidate, LossBatch, Prompt
    from cyclealign.whitebox import build_trainer, load_whitebox
    from cyclealign_losses import ProLoss

    b, n, p_len, r_len = s.mfu
    wb = load_whitebox(whitebox_config(model_dir, s, finetune="full"), seed=0)
    trainer = build_trainer(
        wb, ProLoss(sft_weight=1.0), TrainConfig(lr=1e-5, max_length=p_len + r_len, prefix_sharing=sharing)
    )
    tok = wb.tokenizer
    cands = tuple(
        Candidate(t, token_ids=(*tok(t, add_special_tokens=False)["input_ids"], tok.eos_token_id))
        for t in (word_text(r_len - 1, k + 1) for k in range(n))
    )
    batches = [
        LossBatch(Prompt.from_text(f"p{i}", word_text(p_len)), cands, tuple(range(n, 0, -1)), 0) for i in range(b)
    ]
    trainer.step(batches)
    reset_peak()
    step_s = median_step_s(lambda: trainer.step(batches), s.mfu_steps)
    params = sum(p.numel() for p in wb.model.parameters()) - wb.model.get_input_embeddings().weight.numel()
    tokens = b * (p_len + n * r_len) if trainer.prefix_sharing else b * n * (p_len + r_len)
    flops = 6 * params * tokens  # forward + backward over matmul weights; attention scores left out (<1% here)
    return {"step_s": step_s, "tokens": tokens, "tflops": flops / step_s / 1e12, "peak_mb": peak_mb(),
            "prefix_sharing": trainer.prefix_sharing}  # fmt: skip


# ---------------------------------------------------------------- 4. a run's time split
def instant_oracle_plugin() -> Any:
    """An in-process chat backend that ranks longest first at once: the run waits on nothing but itself."""
    import re

    from cyclealign.hookspecs import hookimpl
    from cyclealign.oracle import ChatBackend, ChatReply, Usage

    answer = re.compile(r"<<<Response-(\d+)>>>\n(.*?)\n<<<END Response-\1>>>", re.S)

    class Instant(ChatBackend):
        def __init__(self, config: Any) -> None:
            self.model = "instant"

        def complete(self, request: Any) -> Any:
            task = request.messages[-1]["content"].rsplit("## Your task", 1)[-1]
            texts = [t for _, t in answer.findall(task)]
            order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
            best = texts[order[0]] if texts else "ok"
            return ChatReply(json.dumps({"desired rank": order, "response": best}), Usage(1, 0, 0, 0.0))

    class Plugin:
        @hookimpl
        def register_oracles(self, register: Any) -> None:
            register("instant", Instant, "bench: ranks longest first, at once")

    return Plugin()


def cycle_worker(model_dir: str, s: Sizes) -> dict:
    from cyclealign import plugins
    from cyclealign.config import load_config
    from cyclealign.infra.store import read_jsonl
    from cyclealign.run.entry import run

    plugins.register_plugin(instant_oracle_plugin(), name="bench-instant")
    n_prompts, batch, samples, new = s.cycle
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": word_text(32, i)}) + "\n" for i in range(n_prompts)))
        sets = [
            f"whitebox.model={model_dir}", f"whitebox.dtype={s.dtype}", f"whitebox.max_new_tokens={new}",
            "whitebox.prompt_format=chat_template", "oracle.name=instant", "oracle.serve_gguf=null",
            "oracle.cache=false", f"oracle.concurrency={batch}", f"data.source={prompts}", "data.max_prompts=null",
            f"cycle.prompt_batch={batch}", f"cycle.num_samples={samples}", "cycle.max_interactions=2",
            "cycle.early_stop=false", f"run.dir={Path(tmp) / 'run'}", "run.progress=false",
        ]  # fmt: skip
        run(load_config(overrides=sets))
        records = read_jsonl(Path(tmp) / "run" / "interactions.jsonl")
    ticks: dict[float, dict] = {}
    for r in records:  # the records of a tick share its timings
        ticks.setdefault(r["timings"]["ended_at"], r["timings"])
    ends = sorted(ticks)
    steady = [ticks[t] for t in ends[1:]]  # the first tick carries the start-up
    wall = ends[-1] - ends[0]
    split = {k: sum(t.get(f"{k}_s", 0.0) for t in steady) for k in ("sample", "train", "oracle")}
    return {"ticks": len(steady), "wall_s": wall, **split, "other": wall - sum(split.values())}


# ---------------------------------------------------------------- the driver
def worker(spec: str, model_dir: str, s: Sizes) -> dict:
    kind, *rest = spec.split(":")
    if kind == "sampler":
        return sampler_worker(model_dir, s, rest[0])
    if kind == "ours-dpo":
        return ours_dpo_worker(model_dir, s, rest[0] == "gc", rest[1])
    if kind == "trl-dpo":
        return trl_dpo_worker(model_dir, s, rest[0] == "gc")
    if kind == "mfu":
        return mfu_worker(model_dir, s, rest[0] == "shared")
    if kind == "cycle":
        return cycle_worker(model_dir, s)
    raise SystemExit(f"unknown worker {spec}")


def run_worker(spec: str, model_dir: Path, args: argparse.Namespace) -> dict:
    """One contender in a fresh process (fresh CUDA memory statistics); its failure is a row, not the end.

    ``--inline`` (the default with ``--toy``) runs it in this process instead: the
    imports are paid once, but peak memory is then the whole run's.
    """
    if args.inline:
        try:
            return worker(spec, str(model_dir), TOY if args.toy else FULL)
        except Exception as e:  # a failing contender is a row of the table
            print(f"  [{spec} failed: {type(e).__name__}: {e}]", flush=True)
            return {"failed": type(e).__name__}
    cmd = [sys.executable, __file__, "--worker", spec, "--model-dir", str(model_dir), *(["--toy"] if args.toy else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-1500:]
        print(f"  [{spec} failed ({proc.returncode}) after {time.perf_counter() - t0:.0f} s]\n{tail}", flush=True)
        return {"failed": f"exit {proc.returncode}"}
    return json.loads(lines[-1][len("RESULT ") :])


def bandwidth_tbs(args: argparse.Namespace) -> tuple[float, str]:
    """The HBM bandwidth: the flag, else by device name (H200 4.8, H100 3.35 TB/s), else measured (a CPU)."""
    import torch

    if args.bandwidth_tbs:
        return args.bandwidth_tbs, "given"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, value in BANDWIDTH_TBS.items():
            if key in name:
                return value, f"{key} spec"
        return 3.35, f"unknown GPU {name!r}: H100's; pass --bandwidth-tbs"
    from bench.sampling import bandwidth_gb_s

    return bandwidth_gb_s(256) / 1e3, "measured"


def skipped(r: dict) -> str | None:
    return r.get("skipped") or r.get("failed")


def print_sampler(model_dir: Path, args: argparse.Namespace, s: Sizes) -> None:
    bw, source = bandwidth_tbs(args)
    res = {mode: run_worker(f"sampler:{mode}", model_dir, args) for mode in SAMPLER_MODES}
    weights = next((r["weight_bytes"] for r in res.values() if "weight_bytes" in r), 0)
    bound_ms = weights / (bw * 1e12) * 1e3
    print(
        f"\n1. sampler: {weights / 1e6:.1f} MB of weights, bandwidth {bw:g} TB/s ({source}): a step ≥ {bound_ms:.3f} ms"
    )
    print(f"{'B·l':>5}" + "".join(f" {m + ' ms/step':>17} {'of bound':>8}" for m in SAMPLER_MODES))
    for i, (b, n) in enumerate(s.waves):
        line = f"{b * n:>5}"
        for mode in SAMPLER_MODES:
            r = res[mode]
            if skipped(r):
                line += f" {'–':>17} {'':>8}"
            else:
                ms = r["rows"][i]["ms_step"]
                line += f" {ms:>17.2f} {bound_ms / ms:>8.2f}"
        print(line)
    for mode, r in res.items():
        if skipped(r):
            print(f"  {mode}: {skipped(r)}")


DPO_ROWS = [("trl-dpo", "TRL DPOTrainer (defaults)"), ("ours-dpo:padded", "ours, padded rows"),
            ("ours-dpo:shared", "ours, prefix sharing"), ("ours-dpo:compile", "ours, train.compile")]  # fmt: skip


def print_dpo(model_dir: Path, args: argparse.Namespace, s: Sizes) -> None:
    pairs, p_len, r_len = s.dpo
    print(f"\n2. DPO step: {pairs} pairs of {p_len} + {r_len} tokens, LoRA r=8, steady state (median of {s.dpo_steps})")
    print(
        f"{'checkpointing':>13} {'contender':>26} {'steps/s':>8} {'peak MB':>9} {'speed ×TRL':>10} {'memory ×TRL':>11}"
    )
    for gc in ("nogc", "gc"):
        rows = []
        for spec, label in DPO_ROWS:
            kind, *variant = spec.split(":")
            rows.append((label, run_worker(":".join([kind, gc, *variant]), model_dir, args)))
        base = rows[0][1]
        for label, r in rows:
            if skipped(r):
                print(f"{gc:>13} {label:>26} {skipped(r)}")
                continue
            ratio = (
                ""
                if skipped(base)
                else f" {base['step_s'] / r['step_s']:>10.2f} {r['peak_mb'] / base['peak_mb']:>11.2f}"
            )
            print(f"{gc:>13} {label:>26} {1 / r['step_s']:>8.2f} {r['peak_mb']:>9.0f}{ratio}")


def print_mfu(model_dir: Path, args: argparse.Namespace, s: Sizes) -> None:
    b, n, p_len, r_len = s.mfu
    peak = args.peak_tflops or (PEAK_TFLOPS if device_kind() == "cuda" else None)
    print(f"\n3. full fine-tuning, PRO: {b} prompts × l={n}, {p_len} + {r_len} tokens; peak {peak or 'n/a'} TFLOP/s")
    print(f"{'prompt':>8} {'tokens':>7} {'s/step':>7} {'TFLOP/s':>8} {'MFU':>6} {'peak MB':>9}")
    for variant in ("shared", "padded"):
        r = run_worker(f"mfu:{variant}", model_dir, args)
        if skipped(r):
            print(f"{variant:>8} {skipped(r)}")
            continue
        mfu = f"{r['tflops'] / peak:>6.1%}" if peak else f"{'n/a':>6}"
        print(f"{variant:>8} {r['tokens']:>7} {r['step_s']:>7.3f} {r['tflops']:>8.2f} {mfu} {r['peak_mb']:>9.0f}")


def print_cycle(model_dir: Path, args: argparse.Namespace, s: Sizes) -> None:
    n_prompts, batch, samples, new = s.cycle
    r = run_worker("cycle", model_dir, args)
    print(
        f"\n4. cyclealign run: {n_prompts} prompts, prompt_batch {batch}, l={samples}, {new} new tokens, instant oracle"
    )
    if skipped(r):
        print(f"  {skipped(r)}")
        return
    print(f"  {r['ticks']} steady ticks in {r['wall_s']:.2f} s:", end="")
    for key in ("sample", "train", "oracle", "other"):
        name = "waiting" if key == "oracle" else key
        print(f" {name} {r[key]:.2f} s ({r[key] / r['wall_s']:.0%})", end="")
    print()


SECTIONS = {"sampler": print_sampler, "dpo": print_dpo, "mfu": print_mfu, "cycle": print_cycle}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toy", action="store_true", help="a tiny float32 llama, few steps: runs on a CPU")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run only these sections")
    parser.add_argument("--bandwidth-tbs", type=float, help="HBM bandwidth in TB/s (default: by device name)")
    parser.add_argument("--peak-tflops", type=float, help=f"dense bf16 peak (default {PEAK_TFLOPS:g} on a GPU)")
    parser.add_argument(
        "--inline", action=argparse.BooleanOptionalAction, help="contenders in this process (default: with --toy)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    s = TOY if args.toy else FULL
    if args.inline is None:
        args.inline = args.toy and not args.worker
    if args.toy:
        import torch

        torch.set_num_threads(min(2, os.cpu_count() or 1))
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.model_dir, s)), flush=True)
        return
    started = time.perf_counter()
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"bench/gpu.py on {device}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch {torch.__version__}")
    print(f"model: llama {asdict(s) if args.toy else '1.1B'} (hidden {s.hidden}, {s.layers} layers), {s.dtype}")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "llama"
        build_model(model_dir, s)
        for name in args.only or list(SECTIONS):
            SECTIONS[name](model_dir, args, s)
            sys.stdout.flush()
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
