"""The paper's evaluation protocol: Table 1 on every test row, its Totals weighted by subset size."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cyclealign.cli.main import app
from cyclealign.evaluate.reward import PAPER_TEST_SIZES, weighted_total
from tests.core.evaluate.test_eval import SHARED
from tests.support.tiny_models import tiny_llama_dir, tiny_reward_model_dir

SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
# The paper's Table 1: the four subset scores, then its Total.
PAPER_TABLE1 = {
    "LLaMA (zero-shot)": (53.59, 33.25, 40.48, 36.23, 40.67),
    "Alpaca (zero-shot)": (52.77, 53.85, 55.30, 55.43, 54.26),
    "ChatGLM (zero-shot)": (67.26, 62.14, 60.44, 63.86, 63.85),
    "ChatGPT (zero-shot)": (72.19, 68.28, 69.85, 71.02, 70.43),
    "PPO LLaMA": (61.97, 55.29, 59.78, 58.26, 58.65),
    "RRHF LLaMA": (64.63, 61.38, 63.26, 63.28, 63.12),
    "CycleAlign-RRHF LLaMA": (71.66, 67.05, 65.89, 67.95, 68.43),
    "PRO LLaMA": (72.86, 64.05, 65.56, 66.44, 67.40),
    "CycleAlign-PRO LLaMA": (70.62, 66.49, 67.67, 68.50, 68.41),
    "PRO Alpaca": (73.13, 64.56, 65.60, 66.51, 67.64),
    "CycleAlign-PRO Alpaca": (71.32, 67.89, 66.53, 68.92, 68.97),
}


@pytest.mark.parametrize("system", list(PAPER_TABLE1))
def test_the_papers_totals_are_subset_means_weighted_by_test_set_size(system: str) -> None:
    *subsets, total = PAPER_TABLE1[system]
    means = dict(zip(SUBSETS, subsets, strict=True))
    assert abs(weighted_total(means, PAPER_TEST_SIZES) - total) <= 0.01 + 1e-9
    plain = sum(subsets) / 4
    if system == "CycleAlign-PRO Alpaca":
        assert round(plain, 2) == 68.66  # the plain mean misses the paper's 68.97


def test_a_subset_without_a_size_is_an_error() -> None:
    with pytest.raises(ValueError, match="helpful-online"):
        weighted_total({"harmless-base": 50.0, "helpful-online": 60.0}, {"harmless-base": 10})


def _local_copy(root: Path) -> dict[str, int]:
    """Two small subsets: 7 real harmless-base test rows, 3 helpful-base rows made here."""
    with gzip.open(SHARED / "harmless-base" / "test.jsonl.gz", "rt") as f:
        harmless = [next(f) for _ in range(7)]
    helpful = [
        json.dumps({"chosen": f"\n\nHuman: {q}\n\nAssistant: {a}", "rejected": f"\n\nHuman: {q}\n\nAssistant: no"})
        + "\n"
        for q, a in [("How do I bake bread?", "Knead it."), ("Why is the sky blue?", "Scattering."), ("Hi", "Hello")]
    ]
    for name, rows in (("harmless-base", harmless), ("helpful-base", helpful)):
        (root / name).mkdir(parents=True)
        with gzip.open(root / name / "test.jsonl.gz", "wt") as f:
            f.writelines(rows)
    return {"harmless-base": 7, "helpful-base": 3}


def test_eval_reward_scores_every_test_row_by_default_and_weighs_the_total(tmp_path: Path) -> None:
    sizes = _local_copy(tmp_path / "hh")
    model, rm = tiny_llama_dir(tmp_path / "base"), tiny_reward_model_dir(tmp_path / "rm", initializer_range=1.0)
    args = ["eval", "reward", "--model", str(model), "--name", "tiny", "--reward-model", str(rm)]
    args += ["--data", str(tmp_path / "hh"), "--max-new-tokens", "4", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "scoring 10 of 10 test rows: every row" in result.output
    saved = [json.loads(x) for x in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in saved) == sorted(
        f"{s}-test-{n}" for s, count in sizes.items() for n in range(1, count + 1)
    )
    means = {s: sum(r["percent"] for r in saved if r["subset"] == s) / sizes[s] for s in sizes}
    pooled = sum(100 / (1 + math.exp(-r["score"])) for r in saved) / len(saved)
    header, row = (tmp_path / "out" / "table1_reward.csv").read_text().splitlines()
    assert header == "system,harmless-base,helpful-base,total,unweighted subset mean"
    cells = [float(x) for x in row.split(",")[1:]]
    assert cells[2] == pytest.approx(round(pooled, 2), abs=0.011)  # weighted by size = over every answer
    assert cells[3] == pytest.approx(round((means["harmless-base"] + means["helpful-base"]) / 2, 2), abs=0.011)
    assert abs(cells[2] - cells[3]) > 0.05  # the two Totals differ on unequal subsets
    print(f"rows scored {len(saved)}; total weighted {cells[2]} vs unweighted {cells[3]}")

    sub = CliRunner().invoke(app, [*args[:-2], "--out", str(tmp_path / "sub"), "--k", "4"], terminal_width=200)
    assert sub.exit_code == 0, sub.output
    assert "scoring 4 of 10 test rows: a stratified subsample (--k 4)" in sub.output
    assert len((tmp_path / "sub" / "answers.jsonl").read_text().splitlines()) == 4


def test_eval_reward_help_no_longer_claims_1000_is_the_papers_test_sample() -> None:
    out = CliRunner().invoke(app, ["eval", "reward", "--help"], terminal_width=200).output
    assert "the paper: 1000" not in out and "every row" in out
