"""Figure 4 as the paper measures it: the oracle's ranking accuracy on a real run's own candidates against a
tiny reward model's order, per interval of interactions; `report` with two runs draws one curve per run."""

from __future__ import annotations

import json
import shutil
from itertools import combinations
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cyclealign.cli.main import app
from cyclealign.evaluate.run_accuracy import Interval, pair_outcomes, prompt_of, score_intervals
from tests.support.openai_server import OpenAIServer, Reply, default_behaviour
from tests.support.tiny_models import tiny_llama_dir, tiny_reward_model_dir

PROMPTS = ["How do I bake bread?", "Why is the sky blue?"]


def _sometimes_refusing(call, index: int) -> Reply:
    """Longest answer first, except every third call, which gives no usable ranking."""
    if index % 3 == 2:
        return Reply("I would rather not rank these.")
    return default_behaviour(call, index)


def make_run(tmp_path: Path, name: str, *extra: str) -> Path:
    """A real run: a tiny llama, 2 prompts x 2 interactions, against a local OpenAI-speaking server."""
    from cyclealign.config import load_config
    from cyclealign.run.entry import run
    from tests.support.runs import tiny_overrides

    run_dir = tmp_path / name
    model = tmp_path / "model"
    if not model.exists():
        tiny_llama_dir(model)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    with OpenAIServer(_sometimes_refusing) as server:
        settings = ("whitebox.max_new_tokens=6", "cycle.max_interactions=2", "cycle.early_stop=false")
        settings += ("oracle.max_parse_retries=0", "oracle.cache=false", *extra)
        run(load_config(overrides=tiny_overrides(model, prompts, server.api_base, run_dir, *settings)))
    return run_dir


def test_pair_arithmetic_by_hand() -> None:
    # oracle: 2 > 0 > 1; reward: 0.9, 0.1, 0.5 -> pairs (0,1) right, (0,2) wrong, (1,2) right
    assert pair_outcomes([2, 0, 1], [0.9, 0.1, 0.5]) == (3, 2, 0)
    assert pair_outcomes([0, 1, 2], [0.3, 0.3, 0.5]) == (2, 0, 1)  # the tie is left out
    rows = [(["a", "b", "c"], [2, 0, 1]), (["a", "b", "c"], None), (["a", "b", "c"], [0, 1, 2])]
    scores = [[0.9, 0.1, 0.5], [1.0, 2.0, 3.0], [0.3, 0.3, 0.5]]
    first, second = score_intervals(rows, scores, every=2)
    assert first == Interval(1, 2, ranked=1, failures=1, pairs=3, correct=2, tied=0, top1_correct=0)
    assert second == Interval(3, 3, ranked=1, failures=0, pairs=2, correct=0, tied=1, top1_correct=0)
    assert first.accuracy == pytest.approx(2 / 3) and second.accuracy == 0.0 and first.top1 == 0.0
    with pytest.raises(ValueError, match="--every"):
        score_intervals(rows, scores, every=0)


def test_prompt_text_turns_back_into_a_dialogue() -> None:
    from cyclealign.protocols import Message, Prompt

    p = Prompt("x", (Message("user", "hi\nthere"), Message("assistant", "hello"), Message("user", "bread?")))
    assert prompt_of({"prompt": p.text, "prompt_id": "x"}) == p
    assert prompt_of({"prompt": "plain question", "prompt_id": "y"}).messages == (Message("user", "plain question"),)


def _expected(records: list[dict], scores: list[list[float]], start: int, end: int) -> tuple[int, int, int]:
    """(ranked, pairs, correct) counted directly: for every pair, is the higher-reward one earlier in the order?"""
    ranked = pairs = correct = 0
    for r, s in zip(records[start - 1 : end], scores[start - 1 : end], strict=True):
        order = r["oracle"]["order"]
        if order is None:
            continue
        ranked += 1
        for i, j in combinations(range(len(s)), 2):
            if s[i] != s[j]:
                pairs += 1
                hi, lo = (i, j) if s[i] > s[j] else (j, i)
                correct += order.index(hi) < order.index(lo)
    return ranked, pairs, correct


@pytest.mark.slow
def test_oracle_accuracy_on_a_runs_candidates_and_two_curves_in_the_report(tmp_path: Path, monkeypatch) -> None:
    from cyclealign.evaluate.reward_model import RewardScorer
    from cyclealign.evaluate.run_accuracy import prompt_of as rebuild

    rm = tiny_reward_model_dir(tmp_path / "rm", seed=1)
    full = make_run(tmp_path, "full")
    no_icl = tmp_path / "no-icl"  # a second run directory: the same journal, measured at another interval
    shutil.copytree(full, no_icl)
    records = [json.loads(x) for x in (full / "interactions.jsonl").read_text().splitlines()]
    assert len(records) == 4 and any(r["oracle"]["order"] is None for r in records)

    args = ["eval", "oracle-accuracy", "--run", str(full), "--reward-model", str(rm), "--every", "3"]
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    saved = json.loads((full / "eval" / "oracle_accuracy_training.json").read_text())
    assert [(i["start"], i["end"]) for i in saved["intervals"]] == [(1, 3), (4, 4)]

    scorer = RewardScorer(rm)
    scores = [scorer.score([rebuild(r)] * len(r["candidates"]), r["candidates"]) for r in records]
    items = [json.loads(x) for x in (full / "eval" / "oracle_accuracy_training_items.jsonl").read_text().splitlines()]
    assert [x for i in items for x in i["scores"]] == pytest.approx([x for s in scores for x in s])
    for iv in saved["intervals"]:
        ranked, pairs, correct = _expected(records, scores, iv["start"], iv["end"])
        assert (iv["ranked"], iv["pairs"], iv["correct"]) == (ranked, pairs, correct)
        assert iv["failures"] == iv["end"] - iv["start"] + 1 - ranked
        assert iv["accuracy"] == (pytest.approx(correct / pairs) if pairs else None)
    assert saved["total"]["pairs"] == sum(i["pairs"] for i in saved["intervals"]) > 0
    assert (full / "eval" / "oracle_accuracy_training.csv").read_text().startswith("interactions,ranked,")

    args = ["eval", "oracle-accuracy", "--run", str(no_icl), "--reward-model", str(rm), "--every", "1"]
    assert CliRunner().invoke(app, args).exit_code == 0

    import matplotlib.figure

    drawn: dict[str, list] = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def spy(fig, path, *a, **kw):
        drawn[Path(path).name] = [
            (ln.get_label(), list(ln.get_xdata()), list(ln.get_ydata())) for ln in fig.axes[0].lines
        ]
        return real_savefig(fig, path, *a, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    out = tmp_path / "fig4"
    result = CliRunner().invoke(app, ["report", str(full), str(no_icl), "--out", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    curves = {label: (xs, ys) for label, xs, ys in drawn["figure4.png"]}
    assert set(curves) == {"full", "no-icl"}
    for run_dir, label in ((full, "full"), (no_icl, "no-icl")):
        data = json.loads((run_dir / "eval" / "oracle_accuracy_training.json").read_text())
        points = [(i["end"], 100 * i["accuracy"]) for i in data["intervals"] if i["accuracy"] is not None]
        assert curves[label][0] == [p[0] for p in points]
        assert curves[label][1] == pytest.approx([p[1] for p in points])
    assert len(curves["no-icl"][0]) > len(curves["full"][0])  # --every 1 against --every 3
    assert [d[0] for d in drawn["agreement.png"]] == ["full", "no-icl"]
    assert "figure4.png" in (out / "compare.md").read_text() and (out / "compare.html").is_file()
    assert (full / "report" / "eval-oracle_accuracy_training.png").is_file()  # each run's own report draws it too


def test_old_oracle_accuracy_options_name_the_new_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "oracle-accuracy", "--data", str(tmp_path), "--mode", "static"])
    assert result.exit_code == 2 and "eval human-pair-accuracy" in result.output
    result = CliRunner().invoke(app, ["eval", "oracle-accuracy", "--run", str(tmp_path), "--reward-model", "x"])
    assert result.exit_code == 2 and "no interactions.jsonl" in result.output and "Traceback" not in result.output
