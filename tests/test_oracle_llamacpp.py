"""The real llama-cpp-python server with the embedded SmolLM2 GGUF, managed by the project."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from cyclealign.config import OracleConfig
from cyclealign.plugins import create_oracle
from cyclealign.prompts import STATIC_DEMONSTRATION
from cyclealign.protocols import OracleRequest

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp]


@pytest.fixture(autouse=True)
def _needs_llama_cpp() -> None:
    # Not a skip: the test session installs the [local] extra, so a missing server is a broken install.
    assert importlib.util.find_spec("llama_cpp") is not None, (
        'install the local extra: pip install "cyclealign-core[local]"'
    )


def test_embedded_local_oracle_returns_a_schema_valid_ranking(tmp_path: Path) -> None:
    oracle = create_oracle(OracleConfig(cache_path=tmp_path / "cache.sqlite"))  # the defaults: managed llama.cpp
    server_pid = None
    try:
        assert oracle.api_base.startswith("http://127.0.0.1:")
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
        server_pid = oracle._on_close.__self__.pid  # the ManagedLlamaServer behind the oracle
    finally:
        oracle.close()
    for verdict, n in zip(verdicts, (4, 2), strict=True):
        assert verdict.ok, verdict.error
        assert sorted(verdict.order) == list(range(n)) and len(verdict.response) >= 16
        assert verdict.cost_usd == 0.0
    assert server_pid is not None
    assert not Path(f"/proc/{server_pid}").exists() or _is_zombie(server_pid), "llama.cpp server left running"


def _is_zombie(pid: int | None) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
