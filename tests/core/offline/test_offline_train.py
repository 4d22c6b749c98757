"""`cyclealign train`: the three input formats, PRO/RRHF/DPO moving the held-out margin, exact resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from rich.console import Console

from cyclealign.config import load_config
from cyclealign.errors import DataError
from cyclealign.offline.margin import heldout_margin
from cyclealign.offline.records import read_examples, split_heldout
from cyclealign.offline.schedule import Schedule, Stage
from cyclealign.offline.settings import OfflineTrainConfig
from cyclealign.offline.train import build_recipe, resume
from cyclealign.protocols import Prompt
from tests.support.paths import REPO
from tests.support.tiny_models import tiny_llama_dir

HH_ROOT = REPO.parent / "shared" / "data" / "hh-rlhf"
QUIET = Console(quiet=True)
GOOD = [
    "Sure! Start slowly, run for one minute and walk for two.",
    "Mix flour, water, salt and yeast, knead, let it rise, then bake.",
    "Here are three ideas: a picnic in the park and a museum visit.",
    "You can keep basil alive with plenty of sunlight and regular watering.",
]
BAD = ["I cannot help with that.", "No.", "Ask someone else, I do not care."]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def trl_pairs(path: Path, n: int = 48, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = [
        {
            "prompt": f"Question number {i}: how do I do thing {i}?",
            "chosen": rng.choice(GOOD),
            "rejected": rng.choice(BAD),
        }
        for i in range(n)
    ]
    return write_jsonl(path, rows)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("model") / "tiny")


def config(model_dir: Path, run_dir: Path, source: str, *sets: str) -> OfflineTrainConfig:
    base = [f"whitebox.model={model_dir}", f"offline.source={source}", f"run.dir={run_dir}", "run.progress=false"]
    return load_config(None, [*base, "train.lr=0.01", *sets], schema=OfflineTrainConfig)


# ----------------------------------------------------------------------------- formats
def test_the_three_formats_read_into_one_record(tmp_path: Path) -> None:
    msgs = [{"role": "user", "content": "Hi?"}]
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."},
            {"prompt": msgs, "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": "Go away."},
            {
                "chosen": [*msgs, {"role": "assistant", "content": "Hello!"}],
                "rejected": [*msgs, {"role": "assistant", "content": "No."}],
            },
            {"id": "r", "messages": msgs, "responses": ["best", "middle", "worst"], "scores": [3, 1.5, 0]},
            {"prompt": "Hi?", "responses": ["best", "worst"]},
            {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."},
        ],
    )
    examples = read_examples(path)
    assert [e.responses[0] for e in examples] == ["Hello!", "Hello!", "Hello!", "best", "best", "Hello!"]
    assert all(e.prompt.messages[-1].content == "Hi?" and e.prompt.messages[-1].role == "user" for e in examples)
    assert examples[3].id == "r" and examples[3].rewards() == (3.0, 1.5, 0.0)
    assert examples[4].rewards() == (1.0, 0.0) and examples[0].source == f"{path}:1"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "Hi?", "chosen": "Hello!"}, '"rejected" is missing'),
        ({"prompt": "Hi?", "responses": ["a", "b"], "scores": [0, 1]}, "best first"),
        ({"prompt": "Hi?", "chosen": "same", "rejected": "same"}, "same text"),
        ({"prompt": "Hi?", "chosen": [{"role": "user", "content": "x"}], "rejected": "y"}, "assistant messages only"),
        ({"chosen": "no dialogue here", "rejected": "\n\nHuman: a\n\nAssistant: b"}, "HH-RLHF"),
        ({"text": "what?"}, '"chosen" and "rejected"'),
    ],
)
def test_a_bad_row_is_named_by_file_and_line(tmp_path: Path, row: dict, message: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok", "chosen": "a", "rejected": "b"}, row])
    with pytest.raises(DataError, match=rf"bad.jsonl:2: .*{message}"):
        read_examples(path)
    assert len(read_examples(path, lenient=True)) == 1


def test_schedule_is_seeded_shuffled_per_epoch_and_covers_every_example(tmp_path: Path) -> None:
    examples = read_examples(trl_pairs(tmp_path / "p.jsonl", n=10))
    sched = Schedule([Stage("train", examples, epochs=2)], 4, seed=1)
    assert sched.total == 6  # ceil(10 / 4) steps per epoch
    epoch0 = [e.id for s in range(3) for e in sched.batch(s)[1]]
    epoch1 = [e.id for s in range(3, 6) for e in sched.batch(s)[1]]
    assert sorted(epoch0) == sorted(epoch1) == sorted(e.id for e in examples) and epoch0 != epoch1
    again = Schedule([Stage("train", examples, epochs=2)], 4, seed=1)
    assert [e.id for e in again.batch(4)[1]] == [e.id for e in sched.batch(4)[1]]
    train, held = split_heldout(examples, 0.2, seed=1)
    assert len(held) == 2 and not {e.id for e in held} & {e.id for e in train}


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("loss", ["pro", "rrhf", "dpo"])
def test_training_on_trl_pairs_raises_the_heldout_margin(model_dir: Path, tmp_path: Path, loss: str) -> None:
    source = trl_pairs(tmp_path / "pairs.jsonl")
    cfg = config(model_dir, tmp_path / loss, str(source), f"loss.name={loss}", "offline.heldout_fraction=0.25")
    result = build_recipe(cfg, console=QUIET).run()
    before, after = result.summary["heldout_before"], result.summary["heldout_after"]
    assert result.summary["heldout_examples"] == 12 and result.summary["steps"] == 9  # 36 examples / 4
    assert after["margin"] > before["margin"] + 0.05, (before, after)
    assert after["accuracy"] >= before["accuracy"]
    steps = [json.loads(line) for line in (tmp_path / loss / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 9 and all("rank" in s and "sft" in s for s in steps)
    assert (tmp_path / loss / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((tmp_path / loss / "run.json").read_text())["status"] == "completed"
    if loss == "dpo":  # the run directory is what `eval reward --run` evaluates (the PRO/RRHF baselines' rows)
        from cyclealign.whitebox.greedy import generate_answers, load_system

        trained, base = load_system(run_dir=tmp_path / loss), load_system(model=str(model_dir))
        ids = torch.tensor([[2, 5, 6, 7]])
        assert not torch.allclose(trained.model(input_ids=ids).logits, base.model(input_ids=ids).logits)
        assert len(generate_answers(trained, [Prompt.from_text("p", "Why?")], 4, 1)) == 1


@pytest.mark.parametrize("loss", ["pro", "rrhf", "dpo"])
def test_training_on_real_harmless_base_fits_the_human_preferences(model_dir: Path, tmp_path: Path, loss: str) -> None:
    """A few steps on the real split: the margin rises on the pairs trained on and on the 8 held-out pairs.

    The trained-on rise is the robust check.  The held-out one is this seed's
    measurement (−0.0059 → −0.0013 PRO, −0.0029 RRHF, −0.0034 DPO, far above float
    noise): a two-layer random model generalises human harmlessness labels only
    weakly, and other seeds or longer runs need not show it.
    """
    sets = ["offline.max_examples=40", "offline.heldout_fraction=0.2", "offline.max_steps=6", "train.max_length=96"]
    cfg = config(model_dir, tmp_path / loss, f"hh-rlhf:{HH_ROOT}:test", f"loss.name={loss}", *sets)
    cfg.whitebox.max_prompt_tokens = 48
    recipe = build_recipe(cfg, console=QUIET)
    recipe.setup()
    seen = [ex for step in range(recipe.work.schedule.total) for ex in recipe.work.schedule.batch(step)[1]]
    assert all(ex.source.startswith(str(HH_ROOT / "harmless-base" / "test.jsonl.gz")) for ex in seen)
    before = heldout_margin(recipe.trainer, seen)
    recipe.train()
    summary = recipe.cleanup()
    after = heldout_margin(recipe.trainer, seen)
    assert after is not None and before is not None
    assert after["margin"] > before["margin"], (before, after)
    assert summary["heldout_examples"] == 8 and summary["heldout_after"] is not None
    held_before, held_after = summary["heldout_before"]["margin"], summary["heldout_after"]["margin"]
    assert held_after > held_before, (summary["heldout_before"], summary["heldout_after"])


def test_graceful_stop_then_resume_equals_an_uninterrupted_run(model_dir: Path, tmp_path: Path) -> None:
    source = str(trl_pairs(tmp_path / "pairs.jsonl", n=20))
    sets = ["loss.name=dpo", "train.grad_accum=2", "run.checkpoint_interval_s=0", "offline.epochs=2"]
    whole = build_recipe(config(model_dir, tmp_path / "whole", source, *sets), console=QUIET).run()

    stopped = build_recipe(config(model_dir, tmp_path / "stopped", source, *sets), console=QUIET)
    original_step = type(stopped.trainer).step if hasattr(stopped, "trainer") else None
    stopped.setup()
    original_step = stopped.trainer.step

    def step_then_ask_to_stop(batches):  # what the first Ctrl+C does, after the third step
        out = original_step(batches)
        if stopped.totals.steps == 2:
            stopped.stop.requested = True
        return out

    stopped.trainer.step = step_then_ask_to_stop
    stopped.train()
    summary = stopped.cleanup()
    assert summary["stopped"] == "interrupted" and summary["steps"] == 3
    resumed = resume(tmp_path / "stopped", console=QUIET)
    assert resumed.summary["steps"] == whole.summary["steps"] == 10
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "whole" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "stopped" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.summary["heldout_after"] == whole.summary["heldout_after"]


@pytest.mark.slow  # four processes that each start torch: over a minute on a loaded two-core machine
def test_sigkill_during_a_checkpoint_then_resume_gives_the_uninterrupted_weights(
    model_dir: Path, tmp_path: Path
) -> None:
    """Real SIGKILLs (tests/support/chaos_run.py) while checkpoints are written; the resumed weights are identical."""
    import os
    import subprocess
    import sys

    import yaml
    from safetensors.torch import load_file

    root = REPO
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    source = trl_pairs(tmp_path / "pairs.jsonl", n=16)
    data = {
        "whitebox": {"model": str(model_dir)},
        "loss": {"name": "pro"},
        "train": {"lr": 0.01},
        "offline": {"source": str(source), "batch_size": 3, "heldout_fraction": 0.2},
        "run": {"progress": False, "checkpoint_every": 1, "checkpoint_interval_s": 0},
    }

    def cyclealign(*args: str, kill: str | None = None) -> subprocess.CompletedProcess:
        extra = {"CHAOS_KILL": kill} if kill else {}
        cmd = [sys.executable, str(root / "tests/support/chaos_run.py"), *args]
        return subprocess.run(cmd, env={**env, **extra}, capture_output=True, text=True, timeout=300)

    runs = {}
    for name in ("reference", "chaos"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**data, "run": {**data["run"], "dir": str(tmp_path / name)}}))
        runs[name] = path
    done = cyclealign("train", str(runs["reference"]))
    assert done.returncode == 0, done.stderr
    killed = cyclealign(
        "train", str(runs["chaos"]), kill="checkpoint:3"
    )  # the 3rd checkpoint, complete but not swapped in
    assert killed.returncode == -9
    again = cyclealign("train", "--resume", str(tmp_path / "chaos"), kill="checkpoint:2")
    assert again.returncode == -9
    finished = cyclealign("train", "--resume", str(tmp_path / "chaos"))
    assert finished.returncode == 0, finished.stderr
    assert "resuming" in finished.stdout
    a = load_file(str(tmp_path / "reference" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "chaos" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref_steps = (tmp_path / "reference" / "steps.jsonl").read_text().splitlines()
    chaos_steps = (tmp_path / "chaos" / "steps.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(s).items() if k != "step_s"} for s in ref_steps]
    assert strip == [{k: v for k, v in json.loads(s).items() if k != "step_s"} for s in chaos_steps]


def test_the_shipped_offline_and_aligner_configs_validate() -> None:
    import yaml

    from cyclealign.aligner.settings import AlignerTrainConfig

    root = REPO / "configs"
    for name in ("pro", "rrhf"):
        cfg = load_config(root / "paper" / f"{name}-human-llama7b.yaml", schema=OfflineTrainConfig)
        assert cfg.loss.name == name and cfg.offline.source.startswith("hh-rlhf:")
        assert (cfg.train.lr, cfg.train.max_length, cfg.offline.batch_size, cfg.offline.epochs) == (5e-5, 512, 1, 1)
    example = load_config(root / "offline-example.yaml", schema=OfflineTrainConfig)
    assert read_examples(root.parent / example.offline.source)  # the example data is shipped and reads
    for name in ("aligner-example", "aligner-7b"):
        cfg = load_config(root / f"{name}.yaml", schema=AlignerTrainConfig)
        assert cfg.aligner.data and "offline" not in yaml.safe_load((root / f"{name}.yaml").read_text())


def test_cli_errors_name_the_key_or_the_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cyclealign.cli.main import app

    runner = CliRunner()
    out = runner.invoke(app, ["train", "--set", f"run.dir={tmp_path / 'r'}"])
    assert out.exit_code == 2 and "offline.source" in out.output
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "Hi?", "chosen": "a"}])
    out = runner.invoke(app, ["train", "--set", f"offline.source={bad}", "--set", f"run.dir={tmp_path / 'r'}"])
    assert out.exit_code == 2 and "bad.jsonl:1" in out.output and not (tmp_path / "r").exists()
    out = runner.invoke(app, ["train", "--set", "offline.nonsense=1"])
    assert out.exit_code == 2 and "offline.nonsense" in out.output
