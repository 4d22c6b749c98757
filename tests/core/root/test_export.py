"""`cyclealign export`: a real (tiny) run's rankings as TRL pairs, ranked lists and Aligner triples,
opened with `datasets.load_from_disk`, deduplicated across run directories."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import pytest
from typer.testing import CliRunner

from cyclealign.cli.main import app
from cyclealign.errors import RunDirError
from cyclealign.export import export_runs
from tests.support.openai_server import OpenAIServer, Reply, ranking_reply, shown_responses

pytestmark = pytest.mark.slow  # one real tiny run (module fixture), shared by every test here

SKY = "Tell me about the sky."


def _oracle(call, index):
    """Ranks longest first with an answer of its own per call; never gives a valid answer about the sky."""
    text = call.first_user
    task = text[re.search(r"## Your task|Order the \d+ answers", text).start() :]
    if SKY in task:
        return Reply("I would rather not rank these.")
    shown = shown_responses(call)
    order = sorted(range(len(shown)), key=lambda k: (-len(shown[k][1]), k))
    return ranking_reply(order, response=f"The oracle's own answer, call {index}.")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two prompts × two interactions × three samples; the oracle ranks only the first prompt's."""
    from cyclealign.config import load_config
    from cyclealign.run.entry import run
    from tests.support.runs import tiny_overrides
    from tests.support.tiny_models import tiny_llama_dir

    tmp = tmp_path_factory.mktemp("export")
    model = tiny_llama_dir(tmp / "model")
    prompts = tmp / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("How do I bake bread?", SKY)))
    with OpenAIServer(_oracle) as server:
        extra = ("whitebox.max_new_tokens=8", "cycle.max_interactions=2", "cycle.early_stop=false")
        run(load_config(overrides=tiny_overrides(model, prompts, server.api_base, tmp / "run", *extra)))
    return tmp / "run"


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "interactions.jsonl").read_text().splitlines()]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_format_loads_with_datasets(run_dir: Path, tmp_path: Path) -> None:
    records = _records(run_dir)
    valid = [r for r in records if r["oracle"]["order"] is not None and r["oracle"]["response"]]
    assert len(records) == 4 and len(valid) == 2  # the sky's interactions failed: they give nothing
    report = export_runs([run_dir], tmp_path / "out")
    assert (report.interactions, report.ranked, report.unranked) == (4, 2, 2)

    trl = datasets.load_from_disk(str(tmp_path / "out" / "trl"))
    assert trl.column_names == ["prompt", "chosen", "rejected"]
    assert len(trl) > 0 and all(row["chosen"] != row["rejected"] for row in trl)
    assert set(trl["prompt"]) == {"How do I bake bread?"}
    ranked = datasets.load_from_disk(str(tmp_path / "out" / "ranked"))
    assert len(ranked) == 2
    for row, rec in zip(ranked, valid, strict=True):
        best_first = [rec["oracle"]["response"], *(rec["candidates"][i] for i in rec["oracle"]["order"])]
        assert row["responses"] == list(dict.fromkeys(best_first))  # the oracle's answer leads, as in training
        assert row["sources"][0] == "oracle" and set(row["sources"][1:]) == {"whitebox"}
        n = len(row["responses"])  # every ordered pair of this ranking, best as chosen
        pairs = [(row["responses"][i], row["responses"][j]) for i in range(n) for j in range(i + 1, n)]
        assert all((c, r) in set(zip(trl["chosen"], trl["rejected"], strict=True)) for c, r in pairs)
    assert len(trl) == sum(len(r) * (len(r) - 1) // 2 for r in ranked["responses"])

    aligner = datasets.load_from_disk(str(tmp_path / "out" / "aligner"))
    assert aligner.column_names == ["question", "answer", "correction", "correction_kind"]
    samples = len(records[0]["candidates"])
    assert samples == 3 and len(aligner) == len(valid) * samples
    assert [r["correction"] for r in aligner] == [rec["oracle"]["response"] for rec in valid for _ in range(samples)]
    assert [r["answer"] for r in aligner] == [c for rec in valid for c in rec["candidates"]]

    for fmt, table in (("trl", trl), ("ranked", ranked), ("aligner", aligner)):
        assert _jsonl(tmp_path / "out" / f"{fmt}.jsonl") == table.to_list()  # the JSONL twin holds the same rows
    saved = json.loads((tmp_path / "out" / "export.json").read_text())
    assert saved["rows"] == {"trl": len(trl), "ranked": 2, "aligner": 6} and saved["pairs"] == "all"


def test_aligner_rows_say_the_correction_is_the_oracles_own_answer_not_an_edit(run_dir: Path, tmp_path: Path) -> None:
    from cyclealign.aligner.triples import triples_from_run

    export_runs([run_dir], tmp_path / "out", formats=["aligner"])
    rows = _jsonl(tmp_path / "out" / "aligner.jsonl")
    assert rows and {r["correction_kind"] for r in rows} == {"oracle_answer"}
    table = datasets.load_from_disk(str(tmp_path / "out" / "aligner"))
    assert table["correction_kind"] == ["oracle_answer"] * len(rows)
    for rec in (r for r in _records(run_dir) if r["oracle"]["order"] is not None):
        # the oracle's one answer to the prompt stands beside every sample of its interaction: no per-sample edit
        paired = [r["answer"] for r in rows if r["correction"] == rec["oracle"]["response"]]
        assert paired == rec["candidates"] and rec["oracle"]["response"] not in rec["candidates"]
    assert [(t.question, t.answer, t.correction) for t in triples_from_run(run_dir)] == [
        (r["question"], r["answer"], r["correction"]) for r in rows
    ]


def test_best_worst_and_deduplication_across_run_dirs(run_dir: Path, tmp_path: Path) -> None:
    once = export_runs([run_dir], tmp_path / "once", formats=["trl"], pairs="best-worst")
    twice = export_runs([run_dir, run_dir], tmp_path / "twice", formats=["trl", "aligner"], pairs="best-worst")
    assert once.rows["trl"] == 2 and twice.rows["trl"] == 2 and twice.duplicates == {"trl": 2, "aligner": 6}
    trl = datasets.load_from_disk(str(tmp_path / "twice" / "trl"))
    valid = [r for r in _records(run_dir) if r["oracle"]["order"] is not None]
    assert trl["chosen"] == [r["oracle"]["response"] for r in valid]
    assert trl["rejected"] == [r["candidates"][r["oracle"]["order"][-1]] for r in valid]
    assert not (tmp_path / "twice" / "ranked").exists()


def test_the_cli_and_bad_run_directories(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(out), "-f", "aligner"])
    assert result.exit_code == 0, result.output
    assert "2 of 4 interactions ranked by the oracle" in result.output and "aligner 6 rows" in result.output
    result = CliRunner().invoke(app, ["export", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 2 and "holds no interactions.jsonl" in result.output
    result = CliRunner().invoke(app, ["export", str(run_dir), "--format", "csv"])
    assert result.exit_code == 2 and "'csv' is not one of trl, ranked, aligner" in result.output
    broken = tmp_path / "broken"
    broken.mkdir()
    lines = (run_dir / "interactions.jsonl").read_text().splitlines()
    bad = json.loads(lines[1])
    bad["oracle"]["order"] = [0, 0, 1]
    (broken / "interactions.jsonl").write_text("\n".join([lines[0], json.dumps(bad)]) + "\n")
    with pytest.raises(RunDirError, match=r"interactions\.jsonl:2: key 'oracle\.order' is not a ranking"):
        export_runs([broken], tmp_path / "x")
