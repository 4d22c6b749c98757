"""Does the loop learn?  The cycle on the embedded SmolLM2 against a ranker whose preference is known and measurable.

The ranker is a rule: brevity, ``1 - tokens / max_new_tokens`` of an answer (the white-box's tokenizer;
an answer cut at the limit scores 0).  ``preferred`` ranks the shortest answer first, ``reversed`` the
longest.  It is an ``Oracle`` plugin registered in this process (``bench-brevity``), so the run is the
real ``cyclealign run`` session: sampling, self-ranking, PRO + SFT on the LoRA adapter, the journal.

For each seed, the held-out score is the mean brevity of fresh samples (``--draws`` per prompt, the
white-box's own sampling settings) on prompts the run never saw, before training and after it, drawn
with the same sample keys both times (the same random streams, so the change is the model's).  The
loop learns when the preferred ranking raises the score and the reversed one lowers it, each by more
than the spread over seeds.

    python bench/learning.py [--full] [--seeds 0 1] [--prompts 6] [--interactions 2] [--new-tokens 64]

The defaults are the settings measured in docs/performance.md (about 6.5 minutes on 2 idle cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pluggy  # noqa: E402

from cyclealign import plugins  # noqa: E402
from cyclealign.config import Config, load_config  # noqa: E402
from cyclealign.protocols import OracleRequest, OracleVerdict, Prompt  # noqa: E402
from cyclealign.usage import OracleStats  # noqa: E402

ORACLE = "bench-brevity"

# Questions that invite a short answer of a few sentences, so that answers can grow and shrink
# inside the token limit.  The last HELD_OUT are never trained on.
QUESTIONS = [
    "Briefly, why do leaves change colour in autumn?",
    "In a sentence or two, what is a good way to start learning to cook?",
    "Give me a short tip for sleeping better.",
    "Briefly, how do bees make honey?",
    "In one or two sentences, what does a compiler do?",
    "What is a quick way to cool down on a hot day?",
    "Briefly, why is exercise good for you?",
    "In a few words, what is photosynthesis?",
    "Give me one idea for a rainy afternoon.",
    "Briefly, how does a bicycle stay upright?",
    "What is a simple way to save money each month?",
    "In a sentence, why do we have seasons?",
    "Briefly, what makes a good friend?",
    "Give me a short tip for learning a new language.",
    "In one or two sentences, what is a rainbow?",
    "Briefly, how do I keep a houseplant alive?",
    "What should I pack for a day at the beach?",
    "In a sentence or two, why does bread rise?",
    "Briefly, why do cats purr?",
    "Give me a short tip for staying focused while studying.",
    "In one or two sentences, what is a volcano?",
    "Briefly, how do I make a cup of tea?",
    "What is one way to be kinder to the environment?",
    "In a sentence, why is the ocean salty?",
    "Briefly, what does a doctor do?",
    "Give me a short idea for a birthday present.",
    "In one or two sentences, how do magnets work?",
    "Briefly, why should I drink water?",
]
HELD_OUT = 6


@dataclass(frozen=True)
class BrevityOptions:
    """``oracle.options`` of the bench's rule oracle."""

    reverse: bool = False
    max_new_tokens: int = 40


def brevity(tokenizer, text: str, max_new_tokens: int) -> float:
    """``1 - tokens / max_new_tokens``, at least 0: the preference this bench teaches and measures."""
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return max(0.0, 1.0 - n / max_new_tokens)


class BrevityOracle:
    """Ranks by brevity (``reverse``: longest first); no answer of its own, no cost."""

    def __init__(self, tokenizer, options: BrevityOptions) -> None:
        self.name, self.stats = ORACLE, OracleStats()
        self.tokenizer, self.options = tokenizer, options

    def rank_many(self, requests: Sequence[OracleRequest]) -> list[OracleVerdict]:
        verdicts = []
        for r in requests:
            scores = [brevity(self.tokenizer, a, self.options.max_new_tokens) for a in r.responses]
            sign = -1.0 if self.options.reverse else 1.0
            order = tuple(sorted(range(len(scores)), key=lambda i: (-sign * scores[i], i)))
            verdicts.append(OracleVerdict(order=order, response=None, raw=json.dumps({"brevity": scores})))
        self.stats.calls += len(requests)
        return verdicts

    def preflight(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class RulePlugin:
    """Registers ``bench-brevity`` in this process (the entry-point plugins stay as they are)."""

    tokenizer: object
    made: list[BrevityOracle] = field(default_factory=list)

    @pluggy.HookimplMarker("cyclealign")
    def register_oracles(self, register) -> None:
        def make(config, options: BrevityOptions) -> BrevityOracle:
            self.made.append(BrevityOracle(self.tokenizer, options))
            return self.made[-1]

        register(ORACLE, make, "the learning bench's rule: shorter answers first", options=BrevityOptions)


def config_for(args, tmp: Path, seed: int, reverse: bool) -> Config:
    prompts, name = tmp / "train.jsonl", "reversed" if reverse else "preferred"
    train = QUESTIONS[: len(QUESTIONS) - HELD_OUT][: args.prompts]
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in train))
    return load_config(
        overrides=[
            f"whitebox.max_new_tokens={args.new_tokens}",
            f"oracle.name={ORACLE}",
            f"oracle.options.reverse={str(reverse).lower()}",
            f"oracle.options.max_new_tokens={args.new_tokens}",
            "oracle.cache=false",
            f"data.source={prompts}",
            f"cycle.num_samples={args.samples}",
            f"cycle.max_interactions={args.interactions}",
            "cycle.early_stop=false",
            "cycle.icl=false",
            f"cycle.prompt_batch={args.wave}",
            f"train.lr={args.lr}",
            f"run.seed={seed}",
            f"run.dir={tmp / f'run-{seed}-{name}'}",
            "run.progress=false",
        ]
    )


class HeldOut:
    """Fresh samples on the held-out prompts, scored by brevity, with the same keys before and after."""

    def __init__(self, config: Config, draws: int) -> None:
        from cyclealign.whitebox import load_whitebox
        from cyclealign.whitebox.sampler import HFSampler

        self.whitebox = load_whitebox(config.whitebox, seed=0)
        self.sampler = HFSampler(self.whitebox, config.whitebox)
        self.prompts = [Prompt.from_text(f"held-{i}", q) for i, q in enumerate(QUESTIONS[-HELD_OUT:])]
        self.draws, self.limit = draws, config.whitebox.max_new_tokens

    def load(self, adapter: Path | None) -> None:
        """The run's trained adapter into the LoRA slots (None: B = 0, the base model)."""
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        if adapter is None:
            with torch.no_grad():
                for name, p in self.whitebox.model.named_parameters():
                    if "lora_B" in name:
                        p.zero_()
            return
        set_peft_model_state_dict(self.whitebox.model, load_file(str(adapter / "adapter_model.safetensors")))

    def score(self, seed: int) -> float:
        keys = [f"held-out:{seed}:{p.id}" for p in self.prompts]
        samples = self.sampler.sample_many(self.prompts, self.draws, keys)
        tok = self.whitebox.tokenizer
        return statistics.fmean(brevity(tok, c.text, self.limit) for cands in samples for c in cands)


def spread(xs: Sequence[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def measure(args) -> dict[str, dict[int, tuple[float, float]]]:
    """``{ranking: {seed: (before, after)}}``."""
    from cyclealign.run.entry import run

    results: dict[str, dict[int, tuple[float, float]]] = {"preferred": {}, "reversed": {}}
    with tempfile.TemporaryDirectory(prefix="cyclealign-learning-") as tmp_name:
        tmp = Path(tmp_name)
        held = HeldOut(config_for(args, tmp, 0, False), args.draws)
        plugins.register_plugin(RulePlugin(held.whitebox.tokenizer), name="bench-learning")
        for seed in args.seeds:
            held.load(None)
            before = held.score(seed)
            for ranking in ("preferred", "reversed"):
                t0 = time.perf_counter()
                cfg = config_for(args, tmp, seed, ranking == "reversed")
                run(cfg)
                held.load(cfg.run.dir / "adapter")
                after = held.score(seed)
                results[ranking][seed] = (before, after)
                print(
                    f"seed {seed} {ranking:9s}: brevity {before:.3f} -> {after:.3f} ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    return results


def table(results: dict[str, dict[int, tuple[float, float]]]) -> tuple[str, bool]:
    """The markdown table of before/after/change per ranking (mean ± stdev over seeds), and the verdict."""
    lines = [
        "| ranking | seeds | held-out brevity before | after | change (mean ± sd) | per seed |",
        "|---|---|---|---|---|---|",
    ]
    changes = {}
    for ranking, per_seed in results.items():
        before = [b for b, _ in per_seed.values()]
        after = [a for _, a in per_seed.values()]
        delta = [a - b for b, a in per_seed.values()]
        changes[ranking] = delta
        each = ", ".join(f"{d:+.3f}" for d in delta)
        lines.append(
            f"| {ranking} | {len(delta)} | {statistics.fmean(before):.3f} ± {spread(before):.3f} | "
            f"{statistics.fmean(after):.3f} ± {spread(after):.3f} | "
            f"{statistics.fmean(delta):+.3f} ± {spread(delta):.3f} | {each} |"
        )
    up, down = changes["preferred"], changes["reversed"]
    ok = min(up) > 0 > max(down) and statistics.fmean(up) - statistics.fmean(down) > 2 * max(spread(up), spread(down))
    return "\n".join(lines), ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--full", action="store_true", help="3 seeds, 12 prompts x 3 interactions, 4 draws (not yet measured here)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--prompts", type=int, default=6, help="training prompts (at most 22)")
    parser.add_argument("--interactions", type=int, default=2, help="interactions per prompt (N)")
    parser.add_argument("--samples", type=int, default=3, help="l: answers sampled per interaction")
    parser.add_argument("--wave", type=int, default=3, help="prompts per tick (cycle.prompt_batch)")
    parser.add_argument("--new-tokens", type=int, default=64, help="whitebox.max_new_tokens")
    parser.add_argument("--draws", type=int, default=2, help="held-out samples per held-out prompt")
    parser.add_argument("--lr", type=float, default=5e-3, help="train.lr (LoRA)")
    args = parser.parse_args(argv)
    if args.full:
        args.seeds, args.prompts, args.interactions, args.draws = [0, 1, 2], 12, 3, 4
    if not 1 <= args.prompts <= len(QUESTIONS) - HELD_OUT:
        parser.error(f"--prompts must be between 1 and {len(QUESTIONS) - HELD_OUT}")
    interactions = args.prompts * args.interactions
    print(
        f"embedded SmolLM2, {interactions} interactions per run (l={args.samples}, {args.new_tokens} new tokens), "
        f"seeds {args.seeds}; held-out: {HELD_OUT} prompts x {args.draws} draws",
        flush=True,
    )
    t0 = time.perf_counter()
    text, ok = table(measure(args))
    print(text)
    print(
        f"\n{'LEARNS' if ok else 'NOT SHOWN'}: preferred raises brevity and reversed lowers it, beyond the spread "
        f"over seeds ({time.perf_counter() - t0:.0f} s in all)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
