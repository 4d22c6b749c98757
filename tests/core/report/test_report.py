"""`cyclealign report`: PNGs that open as images and a page that shows them, from a real (tiny) run."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from typer.testing import CliRunner

from cyclealign.cli.main import app
from cyclealign.evaluate.tables import write_table
from cyclealign.report.page import write_report

PNG = b"\x89PNG\r\n\x1a\n"


def make_run(tmp_path: Path) -> Path:
    """A real two-prompt run of a tiny llama against a local OpenAI-speaking server."""
    from cyclealign.config import load_config
    from cyclealign.run.entry import run
    from tests.support.openai_server import OpenAIServer
    from tests.support.runs import tiny_overrides
    from tests.support.tiny_models import tiny_llama_dir

    run_dir = tmp_path / "run"
    model = tiny_llama_dir(tmp_path / "model")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "How do I bake bread?"}) + "\n" + json.dumps({"prompt": "Why?"}) + "\n")
    with OpenAIServer() as server:
        extra = ("whitebox.max_new_tokens=8", "cycle.max_interactions=2", "cycle.early_stop=false")
        run(load_config(overrides=tiny_overrides(model, prompts, server.api_base, run_dir, *extra)))
    return run_dir


def _image_size(path: Path) -> tuple[int, int]:
    import matplotlib.image

    return matplotlib.image.imread(path).shape[:2]


def test_report_writes_images_and_pages_that_show_them(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    interactions = (run_dir / "interactions.jsonl").read_text().rstrip("\n").split("\n")
    assert len(interactions) == 4
    write_table(
        run_dir / "eval",
        "table1_reward",
        "Reward-model score (Table 1)",
        ["system", "harmless-base", "total"],
        [["tiny", 51.2, 51.2]],
    )
    write_table(
        run_dir / "eval" / "accuracy",
        "human_pair_accuracy",
        "Oracle ranking accuracy on fixed pairs",
        ["demonstrations", "pairs", "valid", "correct", "failures", "accuracy %", "accuracy (failures wrong) %"],
        [["none", 40, 40, 22, 0, 55.0, 55.0], ["static", 40, 38, 25, 2, 65.8, 62.5]],
    )
    result = CliRunner().invoke(app, ["report", str(run_dir)], terminal_width=200)
    assert result.exit_code == 0, result.output
    report = run_dir / "report"
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert pngs == [
        "agreement.png",
        "eval-accuracy-human_pair_accuracy.png",
        "eval-table1_reward.png",
        "losses.png",
        "oracle.png",
    ]
    for name in pngs:
        assert (report / name).read_bytes()[:8] == PNG
        height, width = _image_size(report / name)
        assert height > 100 and width > 100
    md = (report / "report.md").read_text()
    assert all(f"]({name})" in md for name in pngs)
    assert "| tiny | 51.2 | 51.2 |" in md and "| static | 40 | 38 | 25 | 2 | 65.8 | 62.5 |" in md
    assert "| interactions | 4 |" in md  # from summary.json
    page = (report / "report.html").read_text()
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == len(pngs)
    assert sorted(base64.b64decode(e)[:8] for e in embedded) == [PNG] * len(pngs)
    assert "<td>tiny</td>" in page and "<td>65.8</td>" in page


def test_report_tolerates_sparse_records(tmp_path: Path) -> None:
    run_dir = tmp_path / "sparse"
    run_dir.mkdir()
    rows = [
        {"prompt_id": "a", "interaction": 0, "oracle": None, "loss": None, "skipped_reason": "oracle failed"},
        {"prompt_id": "a", "interaction": 1, "candidates": ["x", "y", "z"], "agreement": [0, 2], "agreed_fully": False},
        {"prompt_id": "b", "interaction": 0, "oracle": {"order": [1, 0], "cost_usd": 0.002}, "loss": {"total": 1.5}},
    ]
    (run_dir / "interactions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = write_report(run_dir)
    assert page == run_dir / "report" / "report.html" and page.read_text().count("data:image/png") == 3
    assert "Evaluation" not in page.read_text()  # no eval tables, no section


def test_report_on_a_non_run_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no interactions.jsonl" in result.output


def test_missing_matplotlib_names_the_install(tmp_path: Path, monkeypatch) -> None:
    import sys

    (tmp_path / "interactions.jsonl").write_text(json.dumps({"interaction": 0}) + "\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = CliRunner().invoke(app, ["report", str(tmp_path)], terminal_width=200)
    assert result.exit_code == 2 and 'pip install "cyclealign-core[eval]"' in result.output
