"""Oracle throughput against a local HTTP server with fixed latency, as a ratio of the ideal.

The ideal for `c` concurrent calls of latency `t` is `c / t` calls per second.
Prints achieved throughput and that ratio for a few concurrency levels, all
measured side by side in one run.

    python bench/oracle_throughput.py [--calls 128] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cyclealign.config import OracleConfig
from cyclealign.plugins import create_oracle
from cyclealign.protocols import OracleRequest
from tests.support.openai_server import OpenAIServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=128)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    args = parser.parse_args()
    requests = [OracleRequest(prompt=f"q{i}", responses=("a", "bb", "ccc")) for i in range(args.calls)]
    print(f"{'concurrency':>11} {'calls':>6} {'wall s':>7} {'calls/s':>8} {'ideal/s':>8} {'ratio':>6}")
    with OpenAIServer(latency_s=args.latency) as server:
        for c in args.concurrency:
            oracle = create_oracle(
                OracleConfig(
                    name="local",
                    api_base=server.api_base,
                    model="openai/bench",
                    serve_gguf=None,
                    concurrency=c,
                    cache=False,
                    timeout_s=30,
                )
            )
            calls = requests[: max(c * 4, min(args.calls, c * 8))]
            t0 = time.monotonic()
            verdicts = oracle.rank_many(calls)
            wall = time.monotonic() - t0
            assert all(v.ok for v in verdicts)
            achieved = len(calls) / wall
            ideal = c / args.latency
            print(f"{c:>11} {len(calls):>6} {wall:>7.2f} {achieved:>8.1f} {ideal:>8.1f} {achieved / ideal:>6.2f}")


if __name__ == "__main__":
    main()
