"""Model cards: every saved adapter, model and corrector carries a README.md the hub's ModelCard loads."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from huggingface_hub import ModelCard

from cyclealign.config import load_config
from cyclealign.run.entry import run
from cyclealign.whitebox.model_card import write_model_card
from tests.support.openai_server import OpenAIServer
from tests.support.runs import tiny_overrides
from tests.support.tiny_models import tiny_llama_dir


def test_the_adapter_of_a_tiny_run_has_a_card_with_its_base_model_tags_and_numbers(tmp_path: Path) -> None:
    model_dir, prompts, run_dir = tiny_llama_dir(tmp_path / "model"), tmp_path / "prompts.jsonl", tmp_path / "run"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in ["How do I bake bread?", "Why rain?"]))
    with OpenAIServer() as server:
        overrides = tiny_overrides(model_dir, prompts, server.api_base, run_dir, "cycle.max_interactions=2")
        run(load_config(overrides=[*overrides, "cycle.early_stop=false", "loss.sft_weight=0.5"]))
    records = [json.loads(line) for line in (run_dir / "interactions.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())

    card = ModelCard.load(run_dir / "adapter" / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == str(model_dir) and data["library_name"] == "peft"
    assert {"cyclealign", "cyclealign-pro"} <= set(data["tags"])
    facts = data["cyclealign"]
    assert facts["interactions"] == len(records) == summary["interactions"] == 4
    assert facts["agreement_rate"] == round(summary["agreement_rate"], 4)
    assert facts["oracle_cost_usd"] == round(sum(r["oracle"]["cost_usd"] for r in records), 6)
    assert facts["oracle"] == "openai/tiny-oracle" and facts["loss"] == "pro" and facts["sft_weight"] == 0.5
    assert facts["data_source"] == str(prompts)
    assert "| interactions | 4 |" in card.text and "api_base" not in card.content and "127.0.0.1" not in card.content


def test_a_full_model_or_corrector_card_names_transformers_and_shows_the_eval_tables(tmp_path: Path) -> None:
    run_dir, target = tmp_path / "run", tmp_path / "run" / "corrector"
    target.mkdir(parents=True)
    config = {"whitebox": {"model": "org/base-7b"}, "loss": {"name": "rrhf", "sft_weight": "auto"}, "data": {}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "steps.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "table3.csv").write_text("model,win,tie,lose\nours,6,3,1\n")
    (run_dir / "eval" / "table3.md").write_text("# Table 3: harmlessness against the base\n")

    card = ModelCard.load(write_model_card(target, run_dir, kind="corrector"))
    data = card.data.to_dict()
    assert data["base_model"] == "org/base-7b" and data["library_name"] == "transformers"
    assert data["tags"] == ["cyclealign", "cyclealign-rrhf"]
    assert data["cyclealign"]["training_steps"] == 2 and data["cyclealign"]["sft_weight"] == "auto"
    assert "### Table 3: harmlessness against the base" in card.text and "| ours | 6 | 3 | 1 |" in card.text
