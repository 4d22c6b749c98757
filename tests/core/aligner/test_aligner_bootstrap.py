"""`cyclealign aligner bootstrap`: two rounds of correct → export → train → merged model, a real SIGKILL inside
round 2, and a resume that ends with the very model of a run that never stopped.

Real parts throughout: a tiny llama built here is the first upstream (set ``BOOTSTRAP_TEST_MODEL=embedded:smollm2``
to run the same test on the embedded SmolLM2; minutes on a CPU), a tiny corrector rewrites its answers, each round
is a whole ``cyclealign train`` run with LoRA and DPO, and every run is a subprocess of the real command line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cyclealign.aligner import Corrector, CorrectorPrompt
from cyclealign.cli.main import app
from tests.support.tiny_models import tiny_llama, tiny_llama_dir, tiny_tokenizer
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
QUESTIONS = ["How do I bake bread?", "Why is the sky blue?", "Tips for running?", "How do I keep basil alive?"]
RUN_S = 600  # the most a whole tiny bootstrap may take on a loaded 2-core machine (torch start-up included)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("bootstrap-inputs")
    tok = tiny_tokenizer()
    Corrector(tiny_llama(len(tok), seed=3), tok, CorrectorPrompt(max_prompt_tokens=256)).save(tmp / "corrector")
    (tmp / "q.jsonl").write_text(
        "".join(json.dumps({"id": f"q{i}", "question": q}) + "\n" for i, q in enumerate(QUESTIONS))
    )
    model = os.environ.get("BOOTSTRAP_TEST_MODEL") or str(tiny_llama_dir(tmp / "upstream"))
    return {"corrector": tmp / "corrector", "questions": tmp / "q.jsonl", "model": Path(model)}


def args(inputs: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    sets = ["whitebox.max_new_tokens=6", "bootstrap.max_new_tokens=6", "bootstrap.batch_size=2"]
    sets += [
        "offline.max_steps=2",
        "offline.epochs=2",
        "offline.batch_size=2",
        "offline.heldout_fraction=0.25",
        "train.lr=0.001",
    ]
    sets += ["run.progress=false", "run.seed=7"]
    out = ["aligner", "bootstrap", "--rounds", "2", "--upstream", str(inputs["model"])]
    out += ["--questions", str(inputs["questions"]), "--corrector", str(inputs["corrector"]), "--dir", str(run_dir)]
    return out + [a for s in sets for a in ("--set", s)] + list(extra)


def cli(arguments: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests/support/chaos_run.py"), *arguments],
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=RUN_S)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{out}\n{err}"
    return out


def steps_done(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "run.json").read_text()).get("rounds", {})
    except (OSError, ValueError):
        return {}


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


@pytest.mark.slow
def test_two_rounds_then_a_kill_inside_round_2_resumes_to_the_same_model(inputs: dict, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    out = finished(cli(args(inputs, whole)))
    for k in (1, 2):  # every round's corrections, pairs, training run and merged model
        r = whole / f"round-{k}"
        assert {"corrected.jsonl", "preferences.jsonl", "train", "model"} <= {p.name for p in r.iterdir()}
        assert (r / "model" / "config.json").is_file() and (r / "train" / "adapter" / "adapter_config.json").is_file()
    summary = json.loads((whole / "summary.json").read_text())
    table = summary["table"]
    assert [row["round"] for row in table] == [1, 2] and summary["rounds_finished"] == 2
    assert table[1]["upstream"] == "round-1/model" and table[1]["model"] == "round-2/model"
    for row in table:  # the counts are those of the corrected file, and the pairs those the export kept
        rows = [json.loads(x) for x in (whole / f"round-{row['round']}" / "corrected.jsonl").read_text().splitlines()]
        changed = sum(x["corrected"].strip() != x["original"].strip() for x in rows)
        assert (row["answers"], row["changed"], row["kept"]) == (len(QUESTIONS), changed, len(QUESTIONS) - changed)
        texts = [(x["original"].strip(), x["corrected"].strip()) for x in rows]
        pairs = sum(o != c and o != "" and c != "" for o, c in texts)
        assert row["pairs"] == pairs > 1 and row["steps"] == 2  # an empty answer or correction is no pair
    assert (
        "corrected vs original, per round" in out
        and "| round | answers | changed | kept | pairs | steps | held-out margin | upstream |"
        in (whole / "summary.md").read_text()
    )
    round1, round2 = tensors(whole / "round-1" / "model"), tensors(whole / "round-2" / "model")
    assert any(not torch.equal(round1[k], round2[k]) for k in round1)  # round 2 trained on from round 1's model

    killed = tmp_path / "killed"
    proc = cli(args(inputs, killed))
    try:  # inside round 2: its pairs exported and its training begun, its model not yet recorded
        wait_until(
            lambda: "export" in steps_done(killed).get("2", {}) and (killed / "round-2/train/run.json").is_file(),
            RUN_S,
            "round 2's training to start",
            interval=0.005,
            process=proc,
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert "model" not in steps_done(killed)["2"], "the kill came after round 2 had finished"
    assert json.loads((killed / "run.json").read_text())["status"] == "running"
    (killed / "round-2" / "notes.txt").write_text("mine")  # files the project did not write survive the redo
    (killed / "round-2" / "train" / "notes.txt").write_text("mine too")

    again = CliRunner().invoke(app, ["aligner", "bootstrap", "--resume", str(whole), "--rounds", "3"])
    assert again.exit_code == 0, again.output  # a finished run goes on: rounds 1 and 2 skipped, round 3 added
    assert again.output.count("done before, skipped") == 8 and "round 3/3 · model: model in" in again.output
    extended = json.loads((whole / "summary.json").read_text())
    assert extended["rounds_finished"] == 3 and extended["table"][2]["upstream"] == "round-2/model"
    assert extended["table"][:2] == table
    resumed = finished(cli(["aligner", "bootstrap", "--resume", str(killed)]))
    assert "round 2/2 · correct: done before, skipped" in resumed and "round 2/2 · train: 2 steps" in resumed
    assert (killed / "round-2" / "notes.txt").read_text() == "mine"
    assert (killed / "round-2" / "train" / "notes.txt").read_text() == "mine too"
    a, b = tensors(whole / "round-2" / "model"), tensors(killed / "round-2" / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same round-2 model
    assert json.loads((killed / "run.json").read_text())["status"] == "completed"
    assert len(json.loads((killed / "run.json").read_text())["processes"]) == 2
    assert not list(killed.rglob(".cyclealign-tmp-*"))


def test_a_resume_changes_only_the_rounds_and_a_start_never_reuses_a_run(inputs: dict, tmp_path: Path) -> None:
    from cyclealign.aligner.bootstrap_state import BootstrapDir

    run_dir = tmp_path / "run"
    store = BootstrapDir(run_dir)
    store.create({"run": {"overwrite": False}})
    runner = CliRunner()
    out = runner.invoke(app, args(inputs, run_dir))
    assert out.exit_code == 2 and "already holds a run" in out.output and "--resume" in out.output
    out = runner.invoke(app, ["aligner", "bootstrap", "--resume", str(run_dir), "--set", "train.lr=1"])
    assert out.exit_code == 2 and "may change only bootstrap.rounds" in out.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("x")
    out = runner.invoke(app, args(inputs, tmp_path / "other"))
    assert out.exit_code == 2 and "is not empty (mine.txt)" in out.output
    out = runner.invoke(app, args(inputs, tmp_path / "new", "--set", "offline.source=x.jsonl"))
    assert out.exit_code == 2 and "offline.source" in out.output and not (tmp_path / "new").exists()
    help_text = runner.invoke(app, ["aligner", "bootstrap", "--help"], terminal_width=200).output
    assert "--rounds" in help_text and "round-K/model" in help_text and "--resume" in help_text


def test_a_round_with_nothing_to_train_on_says_why(tmp_path: Path) -> None:
    from cyclealign.aligner.bootstrap import step_export
    from cyclealign.errors import DataError

    rows = [
        {"question": "Q?", "original": "Same.", "corrected": "Same."},
        {"question": "R?", "original": "", "corrected": "x"},
    ]
    (tmp_path / "corrected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(
        DataError, match=r"round 3: nothing to train on: .* changed 1 of 2 answers, and 1 rows have an empty"
    ):
        step_export(3, tmp_path)
    rows.append({"question": "S?", "original": "No.", "corrected": "Yes, like this."})
    (tmp_path / "corrected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert step_export(3, tmp_path) == {"pairs": 1, "unchanged": 1, "empty": 1}
    pairs = [json.loads(x) for x in (tmp_path / "preferences.jsonl").read_text().splitlines()]
    assert pairs == [{"prompt": "S?", "chosen": "Yes, like this.", "rejected": "No."}]


def test_the_example_config_validates() -> None:
    from cyclealign.aligner.bootstrap import BootstrapConfig
    from cyclealign.config import load_config

    cfg = load_config(ROOT / "configs" / "aligner-bootstrap-example.yaml", schema=BootstrapConfig)
    assert cfg.bootstrap.rounds == 2 and cfg.loss.name == "dpo" and not cfg.offline.source
    assert (ROOT / cfg.bootstrap.questions).is_file()
