"""The cycle in steady state against an oracle with a fixed latency, as a fraction of the ideal.

A run of ``cyclealign run`` (the real session: run directory, checkpoints,
litellm, real HTTP) against a local OpenAI-speaking server that answers every
call after ``--latency`` seconds.  The server runs in a process of its own, as
an API or a local LLM server does: in ours, its request threads would hold the
interpreter lock that our oracle client needs.

Each interaction's record carries the wall time it ended at
(``timings.ended_at``).  Steady state is the time from the end of the first
tick to the end of the last, over the interactions in between, so start-up
(model load, the first tick) is not counted.  ``compute`` is the white-box's
own time per interaction in the same run (sampling + training, from the
records).  The ideal per interaction is ``max(compute, latency / B)``: the
oracle's wait fully hidden behind B concurrent calls, or compute never waiting.

    python bench/cycle_throughput.py [--latency 1.0] [--interactions 64] [--batches 1 4 8] [--model tiny|h256]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cyclealign.config import RunConfig, load_config  # noqa: E402
from cyclealign.infra.store import read_jsonl  # noqa: E402
from cyclealign.run.entry import run  # noqa: E402
from tests.support.runs import tiny_overrides  # noqa: E402
from tests.support.server_process import server_process  # noqa: E402
from tests.support.tiny_models import tiny_llama_dir  # noqa: E402

INTERACTIONS_PER_PROMPT = 2  # early stop off: every prompt makes exactly this many interactions


def measure(
    model: Path, api_base: str, tmp: Path, batch: int, interactions: int, new_tokens: int, ahead: bool = False
) -> dict:
    n_prompts = batch * max(2, -(-interactions // (INTERACTIONS_PER_PROMPT * batch)) + 1)  # + 1 wave of start-up
    prompts = tmp / f"prompts-{batch}.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"Question {i}: how do I bake bread?"}) + "\n" for i in range(n_prompts))
    )
    run_dir = tmp / f"run-{batch}{'-ahead' if ahead else ''}"
    overrides = tiny_overrides(
        model,
        prompts,
        api_base,
        run_dir,
        f"cycle.prompt_batch={batch}",
        f"cycle.max_interactions={INTERACTIONS_PER_PROMPT}",
        "cycle.early_stop=false",
        f"whitebox.max_new_tokens={new_tokens}",
        f"oracle.concurrency={max(batch, 1)}",
        "oracle.cache=false",
        "oracle.timeout_s=60",
        "data.max_prompts=null",
        f"run.checkpoint_interval_s={RunConfig().checkpoint_interval_s}",  # the default, not the tests' 0
        f"cycle.sample_ahead={str(ahead).lower()}",
    )
    run(load_config(overrides=overrides))
    records = read_jsonl(run_dir / "interactions.jsonl")  # not splitlines(): a sampled text may hold U+2028
    ticks: dict[float, list[dict]] = {}
    for r in records:  # the records of one tick share their sampling and training times
        ticks.setdefault(r["timings"]["ended_at"], []).append(r)
    ends = sorted(ticks)
    steady = [r for t in ends[1:] for r in ticks[t]]
    per_interaction = (ends[-1] - ends[0]) / len(steady)
    compute = sum(  # drawing ahead is compute too, though hidden behind the oracle's wait
        rs[0]["timings"]["sample_s"] + rs[0]["timings"]["train_s"] + rs[0]["timings"].get("sample_ahead_s", 0.0)
        for t, rs in ticks.items()
        if t != ends[0]
    )
    return {"per_interaction": per_interaction, "compute": compute / len(steady), "interactions": len(steady)}


def bench_model(kind: str, tmp: Path) -> Path:
    if kind == "tiny":
        return tiny_llama_dir(tmp / "tiny")
    from bench.train_step import build_model

    build_model(tmp / "h256")
    return tmp / "h256"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds the oracle server takes per call")
    parser.add_argument("--interactions", type=int, default=64, help="steady-state interactions per batch size")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8], help="cycle.prompt_batch values")
    parser.add_argument(
        "--model", choices=["tiny", "h256"], default="tiny", help="the white-box (see docs/performance.md)"
    )
    parser.add_argument("--new-tokens", type=int, default=12, help="whitebox.max_new_tokens")
    parser.add_argument(
        "--ahead",
        type=int,
        nargs="*",
        default=[8],
        help="prompt_batch values also measured with cycle.sample_ahead=true (opt-in, one step off-policy)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name, server_process(args.latency) as api_base:
        tmp = Path(tmp_name)
        model = bench_model(args.model, tmp)
        runs = [(b, False) for b in args.batches] + [(b, True) for b in args.ahead]
        rows = [(b, a, measure(model, api_base, tmp, b, args.interactions, args.new_tokens, a)) for b, a in runs]
    print(f"cycle, {args.model} white-box, oracle latency {args.latency:g} s, steady state")
    print(f"{'B':>3} {'sampling':>16} {'interactions':>12} {'s/interaction':>13} {'compute s':>9}", end="")
    print(f" {'latency/B':>9} {'ideal s':>8} {'ratio':>6}")
    for b, ahead, m in rows:
        ideal = max(m["compute"], args.latency / b)
        mode = "ahead (opt-in)" if ahead else "on-policy"
        print(
            f"{b:>3} {mode:>16} {m['interactions']:>12} {m['per_interaction']:>13.3f} {m['compute']:>9.3f} "
            f"{args.latency / b:>9.3f} {ideal:>8.3f} {ideal / m['per_interaction']:>6.2f}"
        )


if __name__ == "__main__":
    main()
