"""The object API as a notebook uses it: a model, a tokenizer, a dataset and a Python ranker, no files first.

The same run through ``cyclealign run`` (the model saved to disk, the same prompts in a
JSONL file, the same function registered as a plugin oracle) gives the same records and
adapter; a run stopped by the stop flag and resumed from Python ends as the uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cyclealign import CycleAlignTrainer, plugins
from cyclealign.cli.main import app
from cyclealign.errors import ConfigError, WhiteboxError
from cyclealign.oracle.callable import CallableOracle
from tests.support.compare import assert_close
from tests.support.tiny_models import tiny_llama_pair

PROMPTS = ["How do I bake bread at home?", "Why is the sky blue?", "How can I keep basil alive?"]
ARGS: dict[str, Any] = {
    "whitebox": {"max_new_tokens": 10},
    "cycle": {"max_interactions": 2, "early_stop": False, "num_samples": 3},
    "train": {"lr": 0.01},
    "run": {"progress": False, "checkpoint_interval_s": 0},
}


def longest_first(prompt: str, answers: list[str]) -> list[int]:
    """The notebook's oracle: a plain function ranking the longest answer first."""
    return sorted(range(len(answers)), key=lambda i: (-len(answers[i]), i))


class RankerPlugin:
    """Makes the same function reachable by name for the command line."""

    __name__ = "test-object-api-ranker"

    @pluggy.HookimplMarker("cyclealign")
    def register_oracles(self, register):  # type: ignore[no-untyped-def]
        register("longest-first", lambda config: CallableOracle(longest_first), "the test's ranking function")


@pytest.fixture
def ranker_plugin() -> Iterator[None]:
    plugin = RankerPlugin()
    plugins.register_plugin(plugin)
    try:
        yield
    finally:
        plugins.unregister_plugin(plugin)


def dataset() -> Any:
    datasets = pytest.importorskip("datasets")  # the venv has it; a bare install still has the list path below
    return datasets.Dataset.from_dict({"prompt": PROMPTS})


def args(run_dir: Path) -> dict[str, Any]:
    return {**ARGS, "run": {**ARGS["run"], "dir": str(run_dir)}}


def records(run_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run_dir / "interactions.jsonl").read_text().splitlines()]
    for r in rows:  # wall-clock seconds, the one thing two equal runs do not share
        r.pop("timings")
        if r["loss"]:
            r["loss"].pop("step_s")
    return rows


def assert_same_run(a: Path, b: Path) -> None:
    assert_close(records(a), records(b), "interactions")
    wa = load_file(a / "adapter" / "adapter_model.safetensors")
    wb = load_file(b / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and wa
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=1e-6, rtol=0, msg=name)


def test_a_notebook_run_equals_the_same_run_through_the_cli(ranker_plugin: None, tmp_path: Path) -> None:
    model, tokenizer = tiny_llama_pair()
    trainer = CycleAlignTrainer(
        model=model, tokenizer=tokenizer, oracle=longest_first, train_dataset=dataset(), args=args(tmp_path / "api")
    )
    summary = trainer.train()
    assert summary["prompts_done"] == 3 and summary["interactions"] == 6
    saved = trainer.save_model(tmp_path / "saved")
    assert (saved / "adapter_model.safetensors").is_file() and (saved / "adapter_config.json").is_file()

    # The same run from files: the model saved to disk, the prompts in a JSONL file, the function by name.
    model_dir = tmp_path / "model"
    model, tokenizer = tiny_llama_pair()
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"id": f"prompt-{n}", "prompt": p} for n, p in enumerate(PROMPTS, 1)]  # the ids rows in memory get
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "cli.yaml").write_text(json.dumps(args(tmp_path / "cli")))
    sets = [f"whitebox.model={model_dir}", f"data.source={prompts}", "oracle.name=longest-first"]
    result = CliRunner().invoke(app, ["run", str(tmp_path / "cli.yaml"), *(a for s in sets for a in ("--set", s))])
    assert result.exit_code == 0, result.output
    assert "CycleAlign run" in result.output  # the command's own summary, printed as before

    assert_same_run(tmp_path / "api", tmp_path / "cli")
    config = (tmp_path / "api" / "config.yaml").read_text()
    assert "whitebox:\n  model: in-memory:" in config and "source: in-memory:" in config


def test_a_resume_from_python_ends_as_the_uninterrupted_run(tmp_path: Path) -> None:
    def stop_after_first(prompt: str, answers: list[str]) -> list[int]:
        calls.append(prompt)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl+C in the notebook: the run stops after this step and saves
        return longest_first(prompt, answers)

    calls: list[str] = []
    model, tokenizer = tiny_llama_pair()
    first = CycleAlignTrainer(
        model=model, tokenizer=tokenizer, oracle=stop_after_first, train_dataset=PROMPTS, args=args(tmp_path / "run")
    )
    stopped = first.train()
    assert stopped["stopped"] and stopped["prompts_done"] < 3
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"

    with pytest.raises(WhiteboxError, match="not the one this run was started with"):
        other, _ = tiny_llama_pair(seed=1)  # a different model: refused before anything runs
        CycleAlignTrainer(model=other, tokenizer=tokenizer, oracle=stop_after_first, resume_from=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"model=: this run was started with whitebox\.model=in-memory:"):
        CycleAlignTrainer(oracle=stop_after_first, train_dataset=PROMPTS, resume_from=tmp_path / "run")
    with pytest.raises(ConfigError, match="train_dataset=: not the one"):
        CycleAlignTrainer(
            model=tiny_llama_pair()[0], tokenizer=tokenizer, oracle=stop_after_first, train_dataset=PROMPTS[:2],
            resume_from=tmp_path / "run",
        )  # fmt: skip

    model, tokenizer = tiny_llama_pair()  # a fresh kernel: the same model built again
    resumed = CycleAlignTrainer(
        model=model, tokenizer=tokenizer, oracle=stop_after_first, train_dataset=PROMPTS, resume_from=tmp_path / "run"
    ).train()
    assert resumed["prompts_done"] == 3 and not resumed["stopped"]

    model, tokenizer = tiny_llama_pair()
    whole = CycleAlignTrainer(
        model=model, tokenizer=tokenizer, oracle=longest_first, train_dataset=PROMPTS, args=args(tmp_path / "whole")
    )
    whole.train()
    assert_same_run(tmp_path / "run", tmp_path / "whole")


def test_the_readme_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's notebook example, with a tiny local model standing in for the hub id (no network in tests)."""
    pytest.importorskip("datasets")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### From Python: trainer objects", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    model, tokenizer = tiny_llama_pair()
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    assert code.count('"HuggingFaceTB/SmolLM2-135M-Instruct"') == 2
    code = code.replace('"HuggingFaceTB/SmolLM2-135M-Instruct"', repr(str(tmp_path / "tiny")))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["summary"]["interactions"] == 4
    assert (tmp_path / "my-adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "runs" / "notebook" / "interactions.jsonl").is_file()
