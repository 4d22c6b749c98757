"""Oracle throughput against a local HTTP server with a fixed latency, as a ratio of the ideal.

With `c` calls in flight and a latency of `t` seconds, the ideal is `c / t` calls
per second.  For each concurrency level the oracle ranks `c × rounds` prompts
through litellm and real HTTP; the table shows achieved calls per second and the
achieved/ideal ratio (1.0 = the client adds no overhead and never idles).

    python bench/oracle_throughput.py [--latency 0.2] [--rounds 8] [--concurrency 1 4 16 32]
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


def measure(server: OpenAIServer, concurrency: int, calls: int) -> float:
    """Wall seconds to rank ``calls`` distinct prompts at the given concurrency (no cache, no retries)."""
    oracle = create_oracle(
        OracleConfig(
            name="local",
            options={"api_base": server.api_base, "serve_gguf": None},
            model="openai/bench",
            concurrency=concurrency,
            cache=False,
            timeout_s=30,
            max_retries=0,
        )
    )
    requests = [OracleRequest(prompt=f"c{concurrency} q{i}", responses=("a", "bb", "ccc")) for i in range(calls)]
    t0 = time.monotonic()
    verdicts = oracle.rank_many(requests)
    wall = time.monotonic() - t0
    oracle.close()
    failed = [v.error for v in verdicts if not v.ok]
    if failed:
        raise SystemExit(f"{len(failed)} calls failed, e.g. {failed[0]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the server takes per call")
    parser.add_argument("--rounds", type=int, default=8, help="calls per level = concurrency × rounds")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    args = parser.parse_args()
    with OpenAIServer(latency_s=args.latency) as server:
        measure(server, 1, 1)  # warm-up: litellm sets itself up on its first call
        print(f"{'concurrency':>11} {'calls':>6} {'wall s':>7} {'calls/s':>8} {'ideal/s':>8} {'ratio':>6}")
        for c in args.concurrency:
            calls = c * args.rounds
            wall = measure(server, c, calls)
            achieved, ideal = calls / wall, c / args.latency
            print(f"{c:>11} {calls:>6} {wall:>7.2f} {achieved:>8.1f} {ideal:>8.1f} {achieved / ideal:>6.2f}")


if __name__ == "__main__":
    main()
