"""Training-step speed and memory: our DPO and PRO steps beside TRL's ``DPOTrainer``, and prefix sharing on vs off.

The model: a llama of hidden size 256, 4 layers and SmolLM2's 49,152-token
vocabulary (its tokenizer comes from the embedded GGUF), LoRA r=8 on the
attention projections, float32 on the CPU.  The work of one step: 8 prompts of
64 tokens, each with a chosen and a rejected response of 40 tokens.  Every
contender runs in its own process (peak memory is that process's peak RSS),
one warm-up step, then ``--steps`` timed steps.

Prefix sharing is measured on PRO with l = 4 candidates, prompts of 256 tokens
and responses of 64, on two models: the embedded SmolLM2-135M (30 layers, one
prompt a step), where the transformer body dominates the cost as in any real
model, and the benchmark llama above (two prompts a step), whose 49k-vocabulary
head costs three times its 4-layer body: sharing saves body tokens only, so
there it cannot exceed about 1.6x.

TRL runs twice: as a user runs it (``DPOConfig`` defaults, which turn on
``bf16`` -- a bfloat16 autocast on the CPU -- and gradient checkpointing), and
matched to our step's work (``bf16=False``, no checkpointing).  Both are timed
in steady state, after two warm-up steps.

    python bench/train_step.py [--steps 5] [--threads 2] [--no-sharing]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT_TOKENS, RESPONSE_TOKENS, PAIRS = 64, 40, 8
SHARED_PROMPT, SHARED_RESPONSE, SHARED_L = 256, 64, 4
SHARED_B = {"smollm2": 1, "h256": 2}  # prompts per step
CONTENT_ONLY = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # the prompt is its tokens, nothing added


def build_model(directory: Path) -> None:
    """The benchmark llama (random weights, seeded) with SmolLM2's tokenizer, saved for the workers."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from cyclealign.embedded import embedded_gguf_path

    gguf = embedded_gguf_path(RuntimeError, needs_gguf=True)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.chat_template = CONTENT_ONLY
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)


def words(tok, word: str, n: int) -> str:
    """A text of exactly ``n`` tokens (one ``word`` token each), checked."""
    text = (word * n).lstrip()
    got = len(tok(text, add_special_tokens=False)["input_ids"])
    if got != n:
        raise SystemExit(f"{word!r}×{n} is {got} tokens with this tokenizer")
    return text


# ---------------------------------------------------------------- workers (each in its own process)
def ours(model_dir: Path | str, loss_name: str, steps: int, sharing: bool, shape: tuple[int, int, int, int]) -> dict:
    """Our ``PolicyTrainer.step`` over ``shape`` = (prompts, candidates, prompt tokens, response tokens)."""
    from cyclealign.config import TrainConfig, WhiteboxConfig
    from cyclealign.protocols import Candidate, LossBatch, Prompt
    from cyclealign.whitebox import build_trainer, load_whitebox
    from cyclealign_losses import DpoLoss, ProLoss

    b, n, p_len, r_len = shape
    cfg = WhiteboxConfig(model=str(model_dir), lora_r=8, lora_alpha=16, lora_dropout=0.0, device="cpu")
    wb = load_whitebox(cfg.model_copy(update={"max_prompt_tokens": p_len}), seed=0)
    wb.tokenizer.chat_template = CONTENT_ONLY  # the prompt is exactly its p_len tokens
    loss = DpoLoss(sft_weight=0.0, beta=0.1) if loss_name == "dpo" else ProLoss(sft_weight=1.0)
    trainer = build_trainer(wb, loss, TrainConfig(lr=1e-4, max_length=p_len + r_len, prefix_sharing=sharing))
    tok = wb.tokenizer
    prompt = words(tok, " hello", p_len)
    # Responses are given as token ids (as sampled ones are) and end with EOS, like TRL's.
    response_words = [" yes", " no", " maybe", " hello"]
    cands = [
        Candidate(
            w, token_ids=(*tok(words(tok, w, r_len - 1), add_special_tokens=False)["input_ids"], tok.eos_token_id)
        )
        for w in response_words[:n]
    ]
    batches = [LossBatch(Prompt.from_text(f"p{i}", prompt), tuple(cands), tuple(range(n, 0, -1)), 0) for i in range(b)]
    trainer.step(batches)  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.step(batches)
        times.append(time.perf_counter() - t0)
    return {"step_s": sorted(times)[len(times) // 2], "prefix_sharing": trainer.prefix_sharing}


# What a user leaves at TRL's defaults but ours does not do: DPOConfig turns both on (unlike TrainingArguments);
# on a CPU, bf16 means the forward runs under a bfloat16 autocast, and checkpointing recomputes it in backward.
TRL_MATCHED = {"bf16": False, "gradient_checkpointing": False}


def trl_dpo(model_dir: Path, steps: int, matched: bool = False) -> dict:
    """TRL's ``DPOTrainer`` as a user runs it: ``DPOConfig`` defaults (sigmoid loss, reference = adapter off).

    Set here: the batch (8, TRL's default too), ``max_steps``, ``use_cpu`` and no
    saving or reporting.  ``matched``: also ``TRL_MATCHED``, the same work as our
    step (float32, no recomputation).  Timed in steady state: from the end of the
    second step on (the first carries TRL's lazy set-up).
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompt = words(tok, " hello", PROMPT_TOKENS)
    data = {
        "prompt": [prompt] * PAIRS,
        "chosen": [" " + words(tok, " yes", RESPONSE_TOKENS - 1)] * PAIRS,  # TRL appends EOS: 40 tokens
        "rejected": [" " + words(tok, " no", RESPONSE_TOKENS - 1)] * PAIRS,
    }
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(
            output_dir=out,
            per_device_train_batch_size=PAIRS,
            max_steps=steps + 2,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            **(TRL_MATCHED if matched else {}),
        )
        lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_dict(data),
            processing_class=tok,
            peft_config=lora,
            callbacks=[Stamp()],
        )
        trainer.train()
    times = [b - a for a, b in itertools.pairwise(stamps[1:])]  # two warm-up steps
    return {"step_s": sorted(times)[len(times) // 2], "bf16": args.bf16, "gc": args.gradient_checkpointing}


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    model_dir = Path(args.model_dir)
    pairs = (PAIRS, 2, PROMPT_TOKENS, RESPONSE_TOKENS)
    kind = args.worker
    if kind in ("trl-dpo", "trl-matched"):
        result = trl_dpo(model_dir, args.steps, matched=kind == "trl-matched")
    elif kind in ("ours-dpo", "ours-pro"):
        result = ours(model_dir, kind.split("-")[1], args.steps, sharing="auto", shape=pairs)
    elif kind.startswith("sharing-"):  # sharing-{on,off}-{smollm2,h256}
        _, switch, family = kind.split("-")
        model = "embedded:smollm2" if family == "smollm2" else model_dir
        shape = (SHARED_B[family], SHARED_L, SHARED_PROMPT, SHARED_RESPONSE)
        result = ours(model, "pro", args.steps, sharing=switch == "on", shape=shape)
    else:
        raise SystemExit(f"unknown worker {kind}")
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def run_worker(kind: str, model_dir: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--model-dir", str(model_dir)]
    cmd += ["--steps", str(args.steps), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{kind} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per contender (the median is reported)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads per process")
    parser.add_argument("--no-sharing", action="store_true", help="skip the prefix-sharing table")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "llama"
        build_model(model_dir)
        kinds = ("trl-dpo", "trl-matched", "ours-dpo", "ours-pro")
        res = {kind: run_worker(kind, model_dir, args) for kind in kinds}
        print(f"DPO/PRO step: {PAIRS} pairs of {PROMPT_TOKENS} + {RESPONSE_TOKENS} tokens, llama h=256 ×4, LoRA r=8")
        print(f"trl-dpo: DPOConfig defaults (bf16={res['trl-dpo']['bf16']}, ", end="")
        print(f"gradient_checkpointing={res['trl-dpo']['gc']}); trl-matched: also {TRL_MATCHED}, as ours")
        print(f"{'contender':>11} {'s/step':>7} {'steps/s':>8} {'peak MB':>8} {'speed ×TRL':>10} {'memory ×TRL':>11}")
        base = res["trl-dpo"]
        for kind, r in res.items():
            speed, memory = base["step_s"] / r["step_s"], r["peak_rss_mb"] / base["peak_rss_mb"]
            print(f"{kind:>11} {r['step_s']:>7.3f} {1 / r['step_s']:>8.2f} {r['peak_rss_mb']:>8.0f}", end="")
            print(f" {speed:>10.2f} {memory:>11.2f}")
        if args.no_sharing:
            return
        print(f"prefix sharing, PRO: l={SHARED_L}, P={SHARED_PROMPT}, R={SHARED_RESPONSE}")
        print(f"{'model':>8} {'prompts':>7} {'shared s':>8} {'padded s':>8}", end="")
        print(f" {'shared MB':>9} {'padded MB':>9} {'speed-up':>8}")
        for family in ("smollm2", "h256"):
            on = run_worker(f"sharing-on-{family}", model_dir, args)
            off = run_worker(f"sharing-off-{family}", model_dir, args)
            assert on["prefix_sharing"] and not off["prefix_sharing"]
            print(f"{family:>8} {SHARED_B[family]:>7} {on['step_s']:>8.3f} {off['step_s']:>8.3f}", end="")
            print(f" {on['peak_rss_mb']:>9.0f} {off['peak_rss_mb']:>9.0f} {off['step_s'] / on['step_s']:>7.2f}x")


if __name__ == "__main__":
    main()
