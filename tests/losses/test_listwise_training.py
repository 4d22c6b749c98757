"""LiPO-λ and DPO-PL in `cyclealign train` (a few steps raise a tiny model's held-out margin) and `cyclealign run`."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cyclealign.cli.main import app
from tests.support.openai_server import OpenAIServer
from tests.support.runs import tiny_overrides
from tests.support.tiny_models import tiny_llama_dir

BEST = [
    "Sure! Start slowly, run for one minute and walk for two.",
    "Mix flour, water, salt and yeast, knead, let it rise, then bake.",
    "You can keep basil alive with plenty of sunlight and regular watering.",
]
MIDDLE = ["Here are three ideas: a picnic in the park.", "The sky is blue because air scatters light."]
WORST = ["I cannot help with that.", "No.", "Ask someone else, I do not care."]


def ranked_lists(path: Path, n: int = 40, seed: int = 0) -> Path:
    """Lists of 2 to 4 responses, best first (the trainer groups them by length), some with explicit scores."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = 2 + i % 3
        responses = [rng.choice(BEST), *rng.sample(MIDDLE, k - 2), rng.choice(WORST)]
        row = {"prompt": f"Question number {i}: how do I do thing {i}?", "responses": responses}
        if i % 2:
            row["scores"] = [float(k - 1 - j) for j in range(k)]
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("model") / "tiny")


@pytest.mark.parametrize("loss", ["lipo", "dpo-pl"])
def test_a_few_train_steps_raise_the_heldout_margin(model_dir: Path, tmp_path: Path, loss: str) -> None:
    source = ranked_lists(tmp_path / "lists.jsonl")
    sets = [
        f"whitebox.model={model_dir}",
        f"offline.source={source}",
        f"run.dir={tmp_path / loss}",
        "run.progress=false",
        "train.lr=0.01",
        f"loss.name={loss}",
        "loss.options.beta=0.5",
        "loss.sft_weight=0",  # the listwise term alone moves the margin
        "offline.heldout_fraction=0.25",
    ]
    result = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / loss / "summary.json").read_text())
    before, after = summary["heldout_before"], summary["heldout_after"]
    assert summary["loss"] == loss and summary["heldout_examples"] == 10 and summary["steps"] == 8  # 30 / 4
    assert after["margin"] > before["margin"] + 0.05, (before, after)
    assert after["accuracy"] >= before["accuracy"]
    steps = [json.loads(line) for line in (tmp_path / loss / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 8 and all(s["rank"] > 0 for s in steps)
    assert json.loads((tmp_path / loss / "run.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("loss", ["lipo", "dpo-pl"])
def test_a_cycle_run_trains_with_each_against_the_adapter_switched_off(
    model_dir: Path, tmp_path: Path, loss: str
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["How do I bake bread?", "Why is it blue?"]))
    with OpenAIServer() as server:
        sets = tiny_overrides(
            model_dir, prompts, server.api_base, tmp_path / "run", f"loss.name={loss}", "cycle.max_interactions=2"
        )
        sets += ["cycle.early_stop=false", "train.lr=0.01", "data.max_prompts=2"]
        result = CliRunner().invoke(app, ["run", *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "run" / "interactions.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["loss"]["rank"] > 0 for r in records)
    n = len(records[0]["candidates"]) + 1  # the l samples and the oracle's own answer, ranked first
    if loss == "dpo-pl":  # a fresh adapter is the reference itself: s = 0, so the list's loss is log(n!)
        assert records[0]["loss"]["rank"] == pytest.approx(math.log(math.factorial(n)), rel=1e-5)
    weights = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    assert any(torch.count_nonzero(t) > 0 for name, t in weights.items() if "lora_B" in name)
