"""One run lifecycle for `cyclealign run`, `cyclealign train` and `aligner train`: stop, checkpoint, resume, callbacks.

Each kind runs a real tiny llama (the cycle against the in-process echo oracle);
a real SIGTERM, sent from inside the run, is what stops it.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from rich.console import Console
from safetensors.torch import load_file
from typer.testing import CliRunner

from cyclealign.callbacks import Callback, RunInfo
from cyclealign.run.checkpoint import CheckpointState
from cyclealign.run.lifecycle import RunLifecycle
from tests.support.tiny_models import tiny_llama_dir

QUIET = Console(quiet=True)
VOLATILE = {"timings", "latency_s", "step_s", "cached", "cost_usd"}  # wall clocks; a redone call is cached, unpaid
PROMPTS = ["How do I bake bread?", "Is tea healthy?"]
TRIPLES = [
    {"question": "How do I bake bread?", "answer": "Bake it.", "correction": "Mix flour, water and yeast, then bake."},
    {"question": "Why is the sky blue?", "answer": "No idea.", "correction": "Air scatters short wavelengths more."},
    {"question": "Tips for running?", "answer": "Run.", "correction": "Start slowly, then walk a minute."},
    {"question": "How do I keep basil?", "answer": "Water.", "correction": "Sunlight and regular watering."},
]
PAIRS = [{"prompt": f"Question {i}: how?", "chosen": "A clear, kind answer.", "rejected": "No."} for i in range(10)]


class Recorder(Callback):
    """Every hook call, in order, with what the run directory held at that moment."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_run_start(self, info: RunInfo) -> None:
        self.events.append(("start", info))

    def on_interaction(self, record: dict[str, Any]) -> None:
        self.events.append(("interaction", record))

    def on_step(self, record: dict[str, Any]) -> None:
        self.events.append(("step", record))

    def on_checkpoint(self, info: dict[str, Any]) -> None:
        state = json.loads((Path(info["dir"]) / "state.json").read_text())
        self.events.append(("checkpoint", {**info, "state": state}))

    def on_run_end(self, summary: dict[str, Any]) -> None:
        self.events.append(("end", summary))

    def of(self, name: str) -> list[Any]:
        return [payload for kind, payload in self.events if kind == name]


class TermAfter(Callback):
    """A real SIGTERM to this process after the ``n``-th optimizer step (what ``kill`` or Ctrl+C does)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_step(self, record: dict[str, Any]) -> None:
        if record["step"] == self.n:
            os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Kind:
    name: str
    build: Callable[..., RunLifecycle]  # (run_dir, callbacks) -> the lifecycle, not yet run
    resume: Callable[..., Any]  # (run_dir, callbacks) -> RunResult
    journal: str  # the record file of its units
    weights: str  # where the trained weights end
    units: str  # the summary key of units done


def make_kind(name: str, root: Path) -> Kind:
    model = tiny_llama_dir(root / "model")
    if name == "cycle":
        from cyclealign.config import load_config
        from cyclealign.run.cycle_run import cycle_lifecycle
        from cyclealign.run.entry import resume

        prompts = root / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
        sets = [f"whitebox.model={model}", "whitebox.max_new_tokens=6", "oracle.name=echo", f"data.source={prompts}"]
        sets += ["cycle.max_interactions=2", "cycle.early_stop=false", "run.progress=false", "train.lr=0.01"]
        sets += ["run.checkpoint_interval_s=0"]

        def build(run_dir: Path, callbacks: list[Callback]) -> RunLifecycle:
            config = load_config(overrides=[*sets, f"run.dir={run_dir}"])
            return cycle_lifecycle(config, console=QUIET, callbacks=callbacks)

        return Kind(
            name,
            build,
            lambda d, cbs: resume(d, console=QUIET, callbacks=cbs),
            "interactions",
            "adapter/adapter_model.safetensors",
            "prompts_done",
        )
    if name == "train":
        from cyclealign.config import load_config
        from cyclealign.offline.settings import OfflineTrainConfig
        from cyclealign.offline.train import build_recipe, resume

        source = root / "pairs.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
        sets = [f"whitebox.model={model}", f"offline.source={source}", "run.progress=false", "train.lr=0.01"]
        sets += ["offline.batch_size=2", "offline.heldout_fraction=0.2", "run.checkpoint_interval_s=0"]

        def build(run_dir: Path, callbacks: list[Callback]) -> RunLifecycle:
            config = load_config(None, [*sets, f"run.dir={run_dir}"], schema=OfflineTrainConfig)
            return build_recipe(config, console=QUIET, callbacks=callbacks)

        return Kind(
            name,
            build,
            lambda d, cbs: resume(d, console=QUIET, callbacks=cbs),
            "steps",
            "adapter/adapter_model.safetensors",
            "steps",
        )
    from cyclealign.aligner.settings import AlignerTrainConfig
    from cyclealign.aligner.training import build_recipe, resume_corrector
    from cyclealign.config import load_config

    data = root / "triples.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in TRIPLES))
    sets = [f"whitebox.model={model}", f"aligner.data=[{data}]", "run.progress=false", "whitebox.finetune=full"]
    sets += ["train.lr=0.003", "aligner.heldout_fraction=0.25", "aligner.batch_size=2", "run.checkpoint_interval_s=0"]

    def build(run_dir: Path, callbacks: list[Callback]) -> RunLifecycle:
        config = load_config(None, [*sets, f"run.dir={run_dir}"], schema=AlignerTrainConfig)
        return build_recipe(config, console=QUIET, callbacks=callbacks)

    return Kind(
        name,
        build,
        lambda d, cbs: resume_corrector(d, console=QUIET, callbacks=cbs),
        "steps",
        "corrector/model.safetensors",
        "steps",
    )


def strip(record: Any) -> Any:
    if not isinstance(record, dict):
        return record
    return {k: strip(v) for k, v in record.items() if k not in VOLATILE}


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


KINDS = ["cycle", "train", "aligner"]


@pytest.mark.parametrize("name", KINDS)
def test_a_stop_a_checkpoint_and_a_resume_behave_the_same_in_every_kind_of_run(name: str, tmp_path: Path) -> None:
    kind = make_kind(name, tmp_path)
    whole = kind.build(tmp_path / "whole", [])
    assert type(whole) is RunLifecycle  # the one lifecycle class, whatever the work
    whole = whole.run()

    seen = Recorder()
    stopped = kind.build(tmp_path / "stopped", [seen, TermAfter(3)]).run()  # a real SIGTERM after the 3rd step
    run_dir = tmp_path / "stopped"
    assert stopped.totals.stopped == "interrupted"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    done = stopped.summary[kind.units]
    assert 0 < done < whole.summary[kind.units]  # stopped part-way, at a unit boundary
    assert state["units_done"] == done == seen.of("checkpoint")[-1]["units"]  # the checkpoint covers every unit done
    assert seen.of("end")[0]["stopped"] == "interrupted"

    again = Recorder()
    resumed = kind.resume(run_dir, [again])
    start = again.of("start")[0]
    assert start.resumed and start.units_done == done and start.kind == name
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    assert resumed.summary[kind.units] == whole.summary[kind.units]
    assert same_weights(tmp_path / "whole" / kind.weights, run_dir / kind.weights)
    journal = f"{kind.journal}.jsonl"
    assert [strip(r) for r in lines(run_dir / journal)] == [strip(r) for r in lines(tmp_path / "whole" / journal)]


@pytest.mark.parametrize("name", KINDS)
def test_callbacks_fire_in_order_with_the_records_the_run_directory_holds(name: str, tmp_path: Path) -> None:
    kind = make_kind(name, tmp_path)
    seen = Recorder()
    result = kind.build(tmp_path / "run", [seen]).run()
    run_dir = tmp_path / "run"
    order = [kind for kind, _ in seen.events]
    assert order[0] == "start" and order[-1] == "end" and order.count("start") == order.count("end") == 1
    assert order[1] == "checkpoint"  # the first checkpoint, before any unit
    info = seen.of("start")[0]
    assert (info.run_dir, info.kind, info.resumed, info.units_done) == (run_dir, name, False, 0)
    assert info.config == yaml.safe_load((run_dir / "config.yaml").read_text())
    assert seen.of("end")[0] == json.loads((run_dir / "summary.json").read_text()) == result.summary
    steps = seen.of("step")
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1)) and steps
    assert all(isinstance(s["lr"], float) and "total" in s for s in steps)
    if name == "cycle":
        interactions = lines(run_dir / "interactions.jsonl")
        assert json.loads(json.dumps(seen.of("interaction"))) == interactions
        trained = [r["loss"] for r in interactions if r["loss"] is not None]  # one interaction per tick here
        assert [{k: v for k, v in s.items() if k not in ("step", "lr")} for s in steps] == trained
        assert len(steps) == result.summary["trained_steps"]
    else:
        assert seen.of("interaction") == []
        assert json.loads(json.dumps(steps)) == lines(run_dir / "steps.jsonl")
    count = 0  # every checkpoint covers exactly the records the callbacks were shown before it
    for event, payload in seen.events:
        count += event == ("interaction" if name == "cycle" else "step")
        if event == "checkpoint":
            state = payload["state"]
            assert state["n_interactions" if name == "cycle" else "n_steps"] == count
            assert payload["dir"] == str(run_dir / "checkpoint") and payload["units"] == state["units_done"]


def test_a_checkpoint_written_before_units_were_neutral_still_reads() -> None:
    old = {"prompts_done": 3, "n_interactions": 6, "n_demos": 1, "totals": {}, "config_fingerprint": "f"}
    state = CheckpointState.from_json(**old)
    assert state.units_done == 3 and state.n_steps is None


def test_the_three_commands_start_the_one_lifecycle(tmp_path: Path, monkeypatch) -> None:
    """`cyclealign run`, `cyclealign train` and `aligner train` reach ``RunLifecycle.setup`` with their own work."""
    from cyclealign.cli.main import app
    from cyclealign.errors import ConfigError

    def setup(self: RunLifecycle) -> None:
        raise ConfigError(f"lifecycle of {self.work.kind}: {type(self).__name__}")

    monkeypatch.setattr(RunLifecycle, "setup", setup)
    model = tiny_llama_dir(tmp_path / "model")
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "Hi?"}) + "\n")
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRIPLES))
    common = ["--set", f"whitebox.model={model}", "--set", "run.progress=false"]
    commands = {
        "cycle": ["run", *common, "--set", f"data.source={tmp_path / 'p.jsonl'}", "--set", "oracle.name=echo"],
        "train": ["train", *common, "--set", f"offline.source={tmp_path / 'pairs.jsonl'}"],
        "aligner": ["aligner", "train", *common, "--set", f"aligner.data=[{tmp_path / 't.jsonl'}]"],
    }
    for kind, args in commands.items():
        result = CliRunner().invoke(app, [*args, "--set", f"run.dir={tmp_path / kind}"])
        assert result.exit_code == 2 and f"lifecycle of {kind}: RunLifecycle" in result.output, result.output
