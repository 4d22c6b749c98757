"""OfflineTrainer and AlignerTrainer: objects in memory train exactly as the same data and model from files.

The offline file side runs through ``cyclealign train`` itself, which is built on ``OfflineTrainer``; the aligner's
file side uses ``AlignerTrainer`` with a path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from typer.testing import CliRunner

from cyclealign import AlignerTrainer, OfflineTrainer, plugins
from cyclealign.aligner.corrector import Corrector
from cyclealign.cli.main import app
from cyclealign.config import LossConfig
from cyclealign.errors import DataError
from tests.support.compare import assert_close
from tests.support.tiny_models import tiny_llama_pair

QUIET = Console(quiet=True)
PAIRS = [
    {"prompt": f"Question {i}: how do I do thing {i}?", "chosen": "Mix flour and water, then bake.", "rejected": "No."}
    for i in range(6)
]
TRIPLES = [
    {"question": f"How do I do thing {i}?", "answer": "No.", "correction": "Mix flour and water, then bake."}
    for i in range(6)
]
RUN = {"progress": False, "checkpoint_interval_s": 0}


def cli_run(tmp_path: Path, command: list[str], model: Path, args: dict[str, Any], run_dir: Path) -> None:
    """The same arguments as a config file, the model from disk, run by the command line."""
    config = tmp_path / f"{run_dir.name}.yaml"
    config.write_text(json.dumps({**args, "whitebox": {**args.get("whitebox", {}), "model": str(model)}}))
    result = CliRunner().invoke(app, [*command, str(config), "--set", f"run.dir={run_dir}"])
    assert result.exit_code == 0, result.output


def saved_model(path: Path) -> Path:
    model, tokenizer = tiny_llama_pair()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def steps(run_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "step_s"} for r in rows]  # wall-clock seconds differ


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0, msg=name)


def test_offline_trainer_with_objects_equals_the_run_from_files(tmp_path: Path) -> None:
    args = {
        "offline": {"batch_size": 2, "heldout_fraction": 0.2},
        "train": {"lr": 0.01},
        "loss": {"name": "dpo"},
        "run": {**RUN, "dir": str(tmp_path / "api")},
    }
    model, tokenizer = tiny_llama_pair()
    loss = plugins.create_loss(LossConfig(name="dpo"), num_samples=2)  # a RankLoss object, not a name
    trainer = OfflineTrainer(model, tokenizer, train_dataset=PAIRS, loss=loss, args=args, console=QUIET)
    summary = trainer.train()
    assert summary["steps"] == summary["total_steps"] > 0 and summary["loss"] == "dpo"
    trainer.save_model(tmp_path / "saved")

    data = tmp_path / "pairs.jsonl"  # the ids rows in memory get: example-<n>
    data.write_text("".join(json.dumps({"id": f"example-{n}", **r}) + "\n" for n, r in enumerate(PAIRS, 1)))
    files = {**args, "offline": {**args["offline"], "source": str(data)}}
    cli_run(tmp_path, ["train"], saved_model(tmp_path / "model"), files, tmp_path / "files")

    assert_close(steps(tmp_path / "api"), steps(tmp_path / "files"), "steps")
    weights = load_file(tmp_path / "api" / "adapter" / "adapter_model.safetensors")
    assert_same_tensors(weights, load_file(tmp_path / "files" / "adapter" / "adapter_model.safetensors"))
    assert_same_tensors(weights, load_file(tmp_path / "saved" / "adapter_model.safetensors"))


def test_aligner_trainer_with_a_dataset_trains_a_corrector_that_loads(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = datasets.Dataset.from_list(TRIPLES)
    args = {
        "whitebox": {"finetune": "full"},
        "aligner": {"batch_size": 2, "heldout_fraction": 0.0, "warmup_epochs": 0},
        "train": {"lr": 0.001},
        "run": {**RUN, "dir": str(tmp_path / "api")},
    }
    model, tokenizer = tiny_llama_pair()
    summary = AlignerTrainer(model, tokenizer, train_dataset=rows, args=args, console=QUIET).train()
    assert summary["steps"] == 3 and summary["corrector"] == str(tmp_path / "api" / "corrector")

    data = tmp_path / "triples.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in TRIPLES))
    files = {**args, "run": {**RUN, "dir": str(tmp_path / "files")}}
    trainer = AlignerTrainer(str(saved_model(tmp_path / "model")), train_dataset=data, args=files, console=QUIET)
    trainer.train()
    out = trainer.save_model(tmp_path / "saved")
    assert Corrector.load(out).prompt.template == Corrector.load(tmp_path / "api" / "corrector").prompt.template
    assert_same_tensors(
        load_file(tmp_path / "api" / "corrector" / "model.safetensors"), load_file(out / "model.safetensors")
    )
    with pytest.raises(DataError, match=r"train_dataset\[0\]: field \"correction\" must be a string"):
        AlignerTrainer(model, tokenizer, train_dataset=[{"question": "q", "answer": "a"}], args=args)
