"""`cycle.sample_ahead`: the next samples drawn during the oracle's wait, one step off-policy, resumed exactly."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from cyclealign.config import load_config
from cyclealign.errors import ConfigError
from cyclealign.infra.store import read_jsonl
from cyclealign.run.entry import run
from tests.integration.test_resilience import cli, records, write_config
from tests.support.openai_server import OpenAIServer
from tests.support.runs import tiny_overrides
from tests.support.tiny_models import tiny_llama_dir

QUESTIONS = ["How do I bake bread?", "Why is the sky blue?", "How can I hurt someone?", "Tips for running?"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("ahead-model"))


def _config(model_dir: Path, server: OpenAIServer, run_dir: Path, *extra: str):
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    prompts = run_dir.parent / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS))
    sets = ["cycle.prompt_batch=2", "cycle.max_interactions=2", "cycle.early_stop=false", "train.lr=0.05", *extra]
    return load_config(overrides=tiny_overrides(model_dir, prompts, server.api_base, run_dir, *sets))


def _fresh_draws(model_dir: Path, config, prompt_ids: list[str], interaction: int) -> list[list[str]]:
    """What the untrained model (the run's weights before its first step) samples under the run's keys."""
    from cyclealign.run.assembly import load_training_prompts
    from cyclealign.whitebox import load_whitebox
    from cyclealign.whitebox.sampler import HFSampler

    wb = load_whitebox(config.whitebox.model_copy(update={"finetune": "full"}), seed=0)
    by_id = {p.id: p for p in load_training_prompts(config)}
    keys = [f"{config.run.seed}:{pid}:{interaction}" for pid in prompt_ids]
    drawn = HFSampler(wb, config.whitebox).sample_many([by_id[p] for p in prompt_ids], 3, keys)
    return [[c.text for c in cands] for cands in drawn]


def test_the_next_samples_come_from_the_weights_before_the_step(model_dir: Path, tmp_path: Path) -> None:
    with OpenAIServer() as server:
        ahead_cfg = _config(model_dir, server, tmp_path / "ahead" / "run", "cycle.sample_ahead=true")
        run(ahead_cfg)
        plain_cfg = _config(model_dir, server, tmp_path / "plain" / "run")
        run(plain_cfg)
    ahead = read_jsonl(tmp_path / "ahead" / "run" / "interactions.jsonl")
    plain = read_jsonl(tmp_path / "plain" / "run" / "interactions.jsonl")
    assert len(ahead) == len(plain) == 8
    first_wave = [r["prompt_id"] for r in ahead[:2]]
    # The first tick is sampled as usual; its wait draws interaction 1 from the weights it then trains.
    assert [r["candidates"] for r in ahead[:2]] == [r["candidates"] for r in plain[:2]]
    second = [r["candidates"] for r in ahead if r["prompt_id"] in first_wave and r["interaction"] == 1]
    assert second == _fresh_draws(model_dir, ahead_cfg, first_wave, 1)
    # The plain cycle samples interaction 1 after the step: from other weights, so (here) other tokens.
    plain_second = [r["candidates"] for r in plain if r["prompt_id"] in first_wave and r["interaction"] == 1]
    assert plain_second != second
    assert all(r["timings"]["sample_ahead_s"] >= 0.0 for r in ahead)
    assert all("sample_ahead_s" not in r["timings"] for r in plain)


def test_sample_ahead_refuses_deepspeed(model_dir: Path, tmp_path: Path) -> None:
    with OpenAIServer() as server:
        cfg = _config(model_dir, server, tmp_path / "ds" / "run", "cycle.sample_ahead=true", "train.backend=deepspeed")
        with pytest.raises(ConfigError, match="single torch process"):
            run(cfg)


@pytest.mark.slow
def test_sigkill_then_resume_uses_the_draws_of_the_checkpoint(model_dir: Path, tmp_path: Path) -> None:
    """Killed while writing the checkpoint after the second wave: the one after the first holds the second's draws."""
    ref_dir, chaos_dir = tmp_path / "reference", tmp_path / "chaos"
    extra = {"cycle": {"max_interactions": 2, "early_stop": False, "prompt_batch": 2, "sample_ahead": True}}
    with OpenAIServer(latency_s=0.1) as server:
        proc = cli(["run", str(write_config(tmp_path, model_dir, server, ref_dir, **extra))])
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        config = write_config(tmp_path, model_dir, server, chaos_dir, **extra)
        proc = cli(["run", str(config)], env={"CHAOS_KILL": "checkpoint:3"})  # 1: at start, 2: wave 1, 3: wave 2
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, err
        state = json.loads((chaos_dir / "checkpoint" / "state.json").read_text())
        assert state["units_done"] == 2 and len(state["extra"]["sample_ahead"]) == 2  # wave 2's draws, 2 prompts
        proc = cli(["run", "--resume", str(chaos_dir)])
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert records(chaos_dir) == records(ref_dir)
    assert (chaos_dir / "demos.jsonl").read_text() == (ref_dir / "demos.jsonl").read_text()
