"""End to end: a tiny llama built here, a real OpenAI-speaking HTTP server on 127.0.0.1, litellm between them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cyclealign.config import load_config
from cyclealign.run.entry import run
from tests.support.openai_server import OpenAIServer
from tests.support.runs import tiny_overrides
from tests.support.tiny_models import tiny_llama_dir


@pytest.fixture
def tiny_run_config(tmp_path: Path):
    model_dir = tiny_llama_dir(tmp_path / "model")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "\n".join(json.dumps({"prompt": p}) for p in ["How do I bake bread?", "How do I hurt someone?"]) + "\n"
    )

    def make(server: OpenAIServer, run_dir: Path, *extra: str):
        return load_config(
            overrides=tiny_overrides(
                model_dir,
                prompts,
                server.api_base,
                run_dir,
                "data.max_prompts=2",
                "cycle.max_interactions=2",
                "cycle.early_stop=false",
                "train.lr=0.01",
                *extra,
            )
        )

    return make


def test_two_prompts_two_interactions_train_the_adapter(tiny_run_config, tmp_path: Path) -> None:
    with OpenAIServer() as server:
        cfg = tiny_run_config(server, tmp_path / "run")
        result = run(cfg)
        http_calls = len(server.requests)

    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    records = [json.loads(line) for line in (run_dir / "interactions.jsonl").read_text().rstrip("\n").split("\n")]
    assert [(r["prompt_id"], r["interaction"]) for r in records] == [
        (records[0]["prompt_id"], 0),
        (records[0]["prompt_id"], 1),
        (records[2]["prompt_id"], 0),
        (records[2]["prompt_id"], 1),
    ]
    assert http_calls == 4
    for r in records:
        assert len(r["candidates"]) == 3
        assert sorted(r["oracle"]["order"]) == [0, 1, 2] and sorted(r["self_order"]) == [0, 1, 2]
        means = r["candidate_mean_logps"]  # cycle.self_rank's default, recorded with every interaction
        assert r["self_rank"] == "mean_logp" and r["self_order"] == sorted(range(3), key=lambda i: (-means[i], i))
        assert r["oracle"]["raw"] and r["loss"] is not None and r["loss"]["total"] == r["loss"]["total"]
        assert set(r["timings"]) == {"sample_s", "oracle_s", "train_s", "ended_at"}
    demos = (run_dir / "demos.jsonl").read_text().rstrip("\n").split("\n")
    assert len(demos) == sum(len(r["agreement"]) >= 2 for r in records)
    config_text = (run_dir / "config.yaml").read_text()
    assert "cycle:" in config_text and "api_key:" not in config_text
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["prompts_done"] == 2 and summary["interactions"] == 4 and summary["oracle_failures"] == 0
    assert result.summary == summary

    # The LoRA weights moved away from their initialisation (B starts at zero in LoRA).
    weights = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and any(torch.count_nonzero(t) > 0 for t in lora_b)
    assert (run_dir / "adapter" / "adapter_config.json").exists()


def test_a_second_run_into_the_same_directory_is_refused(tiny_run_config, tmp_path: Path) -> None:
    from cyclealign.infra.store import RunDirError

    with OpenAIServer() as server:
        run(tiny_run_config(server, tmp_path / "run", "data.max_prompts=1", "cycle.max_interactions=1"))
        with pytest.raises(RunDirError, match="already holds a run"):
            run(tiny_run_config(server, tmp_path / "run", "data.max_prompts=1"))


def test_the_same_cycle_twice_with_one_cache_makes_no_http_calls_the_second_time(tiny_run_config, tmp_path: Path):
    cache = tmp_path / "shared-cache.sqlite"
    with OpenAIServer() as server:
        run(tiny_run_config(server, tmp_path / "first", f"oracle.cache_path={cache}"))
        first = len(server.chat_calls)
        second_result = run(tiny_run_config(server, tmp_path / "second", f"oracle.cache_path={cache}"))
        second = len(server.chat_calls) - first
    assert first == 4 and second == 0
    assert second_result.summary["oracle"]["cache_hits"] == 4
    a = [json.loads(x) for x in (tmp_path / "first" / "interactions.jsonl").read_text().rstrip("\n").split("\n")]
    b = [json.loads(x) for x in (tmp_path / "second" / "interactions.jsonl").read_text().rstrip("\n").split("\n")]
    assert [r["oracle"]["order"] for r in a] == [r["oracle"]["order"] for r in b]


def test_budget_stops_the_run_cleanly_with_everything_saved(tiny_run_config, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    run_dir = tmp_path / "run"
    with OpenAIServer() as server:
        cfg = tiny_run_config(
            server, run_dir, "oracle.name=chatgpt", "oracle.model=gpt-3.5-turbo", "oracle.budget_usd=0.0015"
        )
        result = run(cfg)
        paid = len(server.chat_calls)
    assert result.totals.stopped.startswith("budget") and 0 < paid < 4
    assert json.loads((run_dir / "run.json").read_text())["status"] == "budget"
    assert result.summary["oracle"]["cost_usd"] <= 0.0015
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()
    assert len((run_dir / "interactions.jsonl").read_text().rstrip("\n").split("\n")) == paid
