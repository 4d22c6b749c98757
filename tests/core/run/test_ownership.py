"""The project deletes or replaces only what it wrote: user files in and around a run directory stay untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cyclealign.cli.main import app
from cyclealign.config import load_config
from cyclealign.errors import RunDirError
from cyclealign.infra.store import TEMP_PREFIX, RunDir
from cyclealign.run.entry import resume, run
from tests.support.openai_server import OpenAIServer
from tests.support.paths import REPO
from tests.support.runs import tiny_overrides
from tests.support.tiny_models import tiny_llama_dir

ROOT = REPO


def user_files(directory: Path) -> dict[str, str]:
    """What a user keeps in ``directory``: ``.git/`` with objects, notes, a folder, a hidden temp-looking file."""
    files = {
        ".git/HEAD": "ref: refs/heads/main\n",
        ".git/objects/ab/cdef": "blob",
        ".notes.tmp": "my own temporary notes",
        ".checkpointish/keep": "hidden, not ours",
        "thesis.txt": "precious",
        "sub/data.csv": "a,b\n1,2\n",
    }
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return snapshot(directory, files)


def snapshot(directory: Path, names) -> dict[str, str]:
    return {n: hashlib.sha256((directory / n).read_bytes()).hexdigest() for n in names if (directory / n).is_file()}


def test_overwrite_refuses_a_directory_that_holds_no_run_and_names_what_is_there(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    before = user_files(victim)
    for overwrite in (True, False):
        with pytest.raises(RunDirError, match=r"holds no CycleAlign run \(\.checkpointish/, \.git/, \.notes\.tmp"):
            RunDir(victim).prepare({}, overwrite=overwrite)
    assert snapshot(victim, before) == before


def test_the_cli_refuses_overwrite_of_a_foreign_directory_with_one_red_line(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    before = user_files(victim)
    pairs = ROOT / "examples/data/preference-pairs.jsonl"
    sets = ["--set", f"run.dir={victim}", "--set", "run.overwrite=true"]
    example = str(ROOT / "configs/offline-example.yaml")
    commands = [["run", *sets], ["train", example, "--set", f"offline.source={pairs}", *sets]]
    for args in commands:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "holds no CycleAlign run" in result.output and "thesis.txt" in result.output
        assert "Traceback" not in result.output
    assert snapshot(victim, before) == before


def test_example_configs_do_not_overwrite() -> None:
    for path in (ROOT / "configs").glob("*.yaml"):
        assert "overwrite: true" not in path.read_text(), path


@pytest.mark.slow
def test_overwrite_and_resume_of_a_real_run_leave_every_user_file_untouched(tmp_path: Path) -> None:
    model = tiny_llama_dir(tmp_path / "model")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["How do I bake bread?", "Is tea healthy?"]))
    run_dir = tmp_path / "run"
    with OpenAIServer() as server:

        def settings(*extra: str) -> list[str]:
            return tiny_overrides(model, prompts, server.api_base, run_dir, "cycle.max_interactions=1", *extra)

        run(load_config(overrides=settings()))
        before = user_files(run_dir)  # the user keeps their own things beside the run
        (run_dir / f"{TEMP_PREFIX}demos.jsonl.x.tmp").write_text("half")  # what a killed write of ours leaves
        result = run(load_config(overrides=settings("run.overwrite=true", "run.seed=7")))
        assert result.summary["prompts_done"] == 2
        assert snapshot(run_dir, before) == before
        assert not (run_dir / f"{TEMP_PREFIX}demos.jsonl.x.tmp").exists()
        (run_dir / f"{TEMP_PREFIX}state.json.y.tmp").write_text("half")
        resume(run_dir)
    assert snapshot(run_dir, before) == before
    assert not (run_dir / f"{TEMP_PREFIX}state.json.y.tmp").exists()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    assert json.loads((run_dir / "config.yaml").read_text().split("seed: ")[1].split("\n")[0]) == 7
