"""The example third-party chat backend gets re-asking, caching and the budget from the framework.

The plugin (``examples/cyclealign-oracle-echo``) only completes chats; everything
asserted here is the framework's doing.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from cyclealign.config import load_config
from cyclealign.run.entry import run
from tests.support.paths import REPO
from tests.support.tiny_models import tiny_llama_dir

ECHO = REPO / "examples/cyclealign-oracle-echo/src/cyclealign_oracle_echo/__init__.py"


def code_lines(path: Path) -> int:
    """Lines of code: docstrings, comments and blank lines not counted."""
    source = path.read_text()
    docs: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and ast.get_docstring(node) is not None:
            docs.update(range(node.body[0].lineno, node.body[0].end_lineno + 1))
    return sum(
        1
        for n, line in enumerate(source.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#") and n not in docs
    )


def test_the_echo_plugin_is_a_chat_backend_of_at_most_30_lines() -> None:
    from cyclealign.oracle import ChatBackend
    from cyclealign_oracle_echo import EchoChat

    assert issubclass(EchoChat, ChatBackend)
    assert code_lines(ECHO) <= 30


@pytest.fixture
def echo_config(tmp_path: Path):
    model_dir = tiny_llama_dir(tmp_path / "model")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["How do I bake bread?", "Is tea healthy?"]))

    def make(run_dir: Path, *extra: str):
        return load_config(
            overrides=[
                f"whitebox.model={model_dir}",
                "whitebox.max_new_tokens=8",
                "oracle.name=echo",
                "oracle.model=echo/sloppy",
                "oracle.max_parse_retries=1",
                f"data.source={prompts}",
                "cycle.max_interactions=2",
                "cycle.early_stop=false",
                f"run.dir={run_dir}",
                "run.progress=false",
                *extra,
            ]
        )

    return make


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "interactions.jsonl").read_text().rstrip("\n").split("\n")]


@pytest.mark.slow
def test_malformed_answers_are_re_asked_and_answers_cached(echo_config, tmp_path: Path) -> None:
    cache = tmp_path / "echo-cache.sqlite"
    first = run(echo_config(tmp_path / "first", f"oracle.cache_path={cache}"))
    rows = records(tmp_path / "first")
    assert len(rows) == 4 and all(r["oracle"]["order"] is not None for r in rows)
    assert all(r["oracle"]["attempts"] == 2 for r in rows)  # prose first, JSON after the error was fed back
    assert first.summary["oracle"]["parse_retries"] == 4 and first.summary["oracle"]["http_calls"] == 8
    assert first.summary["oracle"]["cost_usd"] > 0

    second = run(echo_config(tmp_path / "second", f"oracle.cache_path={cache}"))
    assert second.summary["oracle"]["http_calls"] == 0 and second.summary["oracle"]["cache_hits"] == 8
    assert second.summary["oracle"]["cost_usd"] == 0.0
    assert [r["oracle"]["order"] for r in records(tmp_path / "second")] == [r["oracle"]["order"] for r in rows]


@pytest.mark.slow
def test_the_budget_stops_an_echo_run_before_it_would_be_exceeded(echo_config, tmp_path: Path) -> None:
    probe = run(echo_config(tmp_path / "probe"))
    per_interaction = probe.summary["oracle"]["cost_usd"] / probe.summary["interactions"]
    budget = 2.5 * per_interaction
    result = run(echo_config(tmp_path / "run", f"oracle.budget_usd={budget}"))
    assert result.totals.stopped.startswith("budget")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "budget"
    assert 0 < result.summary["oracle"]["cost_usd"] <= budget
    assert 0 < result.summary["interactions"] < probe.summary["interactions"]
