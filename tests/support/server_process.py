"""The OpenAI-speaking test server in a process of its own, as a benchmark's oracle."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def server_process(latency_s: float) -> Iterator[str]:
    """Start ``python -m tests.support.openai_server``; yield its ``api_base``; stop it on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.openai_server", "--latency", str(latency_s)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        api_base = proc.stdout.readline().strip()
        if not api_base.startswith("http://"):
            raise RuntimeError(f"the test server did not start (exit code {proc.poll()})")
        yield api_base
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
