"""A whole run ranked by a local reward model: `oracle.name=reward-model`, a tiny llama white-box, a tiny
llama reward model, the real session.  Its rankings are the reward model's order, it trains on the samples
alone (the reward model writes no answer), a second run on the same cache makes no forward pass, and
`eval oracle-accuracy` with the same model as reference finds every compared pair right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaForSequenceClassification
from typer.testing import CliRunner

from cyclealign.cli.main import app
from cyclealign.config import load_config
from cyclealign.data.hh_rlhf import dialogue_text
from cyclealign.evaluate.run_accuracy import prompt_of
from cyclealign.run.entry import run
from tests.support.tiny_models import tiny_llama_dir, tiny_llama_reward_model_dir

PROMPTS = ["How do I bake bread?", "Why is the sky blue?"]


def _config(tmp_path: Path, run_dir: Path, rm: Path, cache: Path):
    model = tmp_path / "model"
    if not model.exists():
        tiny_llama_dir(model)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return load_config(
        overrides=[
            f"whitebox.model={model}",
            "whitebox.max_new_tokens=8",
            "oracle.name=reward-model",
            f"oracle.options.model={rm}",
            "oracle.options.batch_size=2",
            f"oracle.cache_path={cache}",
            f"data.source={prompts}",
            "cycle.max_interactions=2",
            "cycle.early_stop=false",
            "train.lr=0.01",
            f"run.dir={run_dir}",
            "run.progress=false",
        ]
    )


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "interactions.jsonl").read_text().splitlines()]


def _independent_scores(rm: Path, records: list[dict]) -> list[list[float]]:
    """Each candidate scored alone, straight through transformers (no batch, no padding, no cyclealign scorer)."""
    tok = AutoTokenizer.from_pretrained(rm)
    model = AutoModelForSequenceClassification.from_pretrained(rm).eval()
    out = []
    with torch.no_grad():
        for r in records:
            question = dialogue_text(prompt_of(r))
            out.append([float(model(**tok(question, c, return_tensors="pt")).logits[0, 0]) for c in r["candidates"]])
    return out


@pytest.fixture
def forward_calls(monkeypatch) -> list[int]:
    """Rows the reward model's forward pass saw, one entry per call."""
    calls: list[int] = []
    real = LlamaForSequenceClassification.forward

    def counting(self, *args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        calls.append(int(ids.shape[0]))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForSequenceClassification, "forward", counting)
    return calls


def test_a_run_ranked_by_a_reward_model_then_replayed_from_the_cache(tmp_path: Path, forward_calls) -> None:
    rm = tiny_llama_reward_model_dir(tmp_path / "rm", seed=3)
    cache = tmp_path / "shared-cache.sqlite"
    first = run(_config(tmp_path, tmp_path / "first", rm, cache))
    run_calls = list(forward_calls)  # before this test scores anything itself
    assert json.loads((tmp_path / "first" / "run.json").read_text())["status"] == "completed"
    records = _records(tmp_path / "first")
    assert len(records) == 4
    for r, scores in zip(records, _independent_scores(rm, records), strict=True):
        assert len(set(scores)) == len(scores)  # no tie: the order is the scores' alone
        expected = sorted(range(len(scores)), key=lambda i: -scores[i])
        assert r["oracle"]["order"] == expected
        shown_scores = json.loads(r["oracle"]["raw"])["scores"]  # recorded in the order shown
        assert [shown_scores[r["shown_order"].index(i)] for i in range(len(scores))] == pytest.approx(scores, abs=1e-5)
        assert r["oracle"]["response"] is None and r["oracle"]["cost_usd"] == 0.0
        assert r["loss"] is not None and r["loss"]["total"] == r["loss"]["total"]  # trained on the 3 samples alone
    pairs = sum(len(set(r["candidates"])) for r in records)
    assert sum(run_calls) >= pairs and max(run_calls) <= 2  # oracle.options.batch_size=2
    summary = first.summary["oracle"]
    assert summary["http_calls"] == len(run_calls) and summary["cost_usd"] == 0.0
    assert summary["cache_hits"] == 0 and summary["failures"] == 0

    before = len(forward_calls)
    second = run(_config(tmp_path, tmp_path / "second", rm, cache))
    assert len(forward_calls) == before  # every answer came from the cache: no forward pass at all
    assert second.summary["oracle"]["cache_hits"] == 4 and second.summary["oracle"]["http_calls"] == 0
    again = _records(tmp_path / "second")
    assert [r["oracle"]["order"] for r in again] == [r["oracle"]["order"] for r in records]
    assert all(r["oracle"]["cached"] for r in again)

    # The same directory as the reference ranker of Figure 4: the run's own rankings are all right.
    args = ["eval", "oracle-accuracy", "--run", str(tmp_path / "first"), "--reward-model", str(rm), "--every", "2"]
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    total = json.loads((tmp_path / "first" / "eval" / "oracle_accuracy_training.json").read_text())["total"]
    assert total["pairs"] > 0 and total["correct"] == total["pairs"] and total["failures"] == 0
