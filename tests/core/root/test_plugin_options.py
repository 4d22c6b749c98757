"""Plugins declare their own options; the registry checks ``oracle.options`` / ``loss.options`` against them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pluggy
import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from cyclealign import plugins
from cyclealign.cli.main import app
from cyclealign.config import OracleConfig, load_config
from cyclealign.errors import ConfigError
from cyclealign.oracle import ChatBackend, ChatReply, ChatRequest, Usage
from cyclealign.protocols import LossOutput
from cyclealign.run.assembly import build_loss

hookimpl = pluggy.HookimplMarker("cyclealign")
runner = CliRunner()


@dataclass(frozen=True)
class ClipOptions:
    ceiling: float = field(default=2.0, metadata={"description": "largest rank term kept (> 0)"})
    mode: str = field(default="hard", metadata={"description": "hard or soft clipping"})


class ClipLoss:
    name = "clip"
    needs_reference = False
    sft_weight = 0.0

    def __init__(self, options: ClipOptions) -> None:
        if options.ceiling <= 0:  # a loss package cannot raise core's errors: a plain ValueError
            raise ValueError(f"loss.options.ceiling must be > 0, got {options.ceiling}")
        self.options = options

    def __call__(self, logps, lengths, rewards, ref_logps=None):  # type: ignore[no-untyped-def]
        total = torch.clamp(-logps.mean(), max=self.options.ceiling)
        return LossOutput(total=total, parts={"total": float(total)})


class ToneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tone: str = Field("calm", description="how the fake judge speaks")
    patience: int = Field(3, ge=1, description="answers it reads before it tires")


class ToneChat(ChatBackend):
    free = True

    def __init__(self, config: OracleConfig, options: ToneOptions) -> None:
        self.model, self.options = config.model or "tone", options

    def complete(self, request: ChatRequest) -> ChatReply:
        return ChatReply('{"desired rank": [0, 1], "response": "ok"}', Usage(1, 1, 1, 0.0))


class OptionsPlugin:
    __name__ = "test-options-plugin"

    @hookimpl
    def register_losses(self, register):  # type: ignore[no-untyped-def]
        register("clip", lambda config, num_samples=3, *, options: ClipLoss(options), "clipped", options=ClipOptions)

    @hookimpl
    def register_oracles(self, register):  # type: ignore[no-untyped-def]
        register("tone", ToneChat, "a judge with a tone", options=ToneOptions)
        register("plain", lambda config: ToneChat(config, ToneOptions(**config.options)), "declares nothing")


@pytest.fixture
def registered() -> Iterator[None]:
    plugin = OptionsPlugin()
    plugins.register_plugin(plugin)
    try:
        yield
    finally:
        plugins.unregister_plugin(plugin)


def test_declared_options_reach_the_factory_checked(registered: None) -> None:
    loss = build_loss(load_config(overrides=["loss.name=clip", "loss.options.ceiling=0.5", "loss.options.mode=soft"]))
    assert isinstance(loss, ClipLoss) and loss.options == ClipOptions(ceiling=0.5, mode="soft")
    assert build_loss(load_config(overrides=["loss.name=clip"])).options == ClipOptions()  # the defaults
    oracle = plugins.create_oracle(OracleConfig(name="tone", options={"tone": "stern"}, cache=False))
    assert oracle.backend.options == ToneOptions(tone="stern", patience=3)
    # a plugin that declares nothing still gets the raw mapping, as before
    plain = plugins.create_oracle(OracleConfig(name="plain", options={"tone": "dry"}, cache=False))
    assert plain.backend.options.tone == "dry"


@pytest.mark.parametrize(
    ("sets", "named"),
    [
        (["loss.name=clip", "loss.options.ceiling=high"], "loss.options.ceiling: Input should be a valid number"),
        (["loss.name=clip", "loss.options.ceiling=-1"], "loss.options.ceiling must be > 0"),  # the loss's own check
        (["loss.name=clip", "loss.options.celing=1"], "loss.options.celing: not an option of the loss 'clip'"),
        (["oracle.name=tone", "oracle.options.patience=0"], "oracle.options.patience: Input should be greater"),
        (["oracle.name=tone", "oracle.options={tone: 3}"], "oracle.options.tone: Input should be a valid string"),
        (["oracle.name=tone", "oracle.options.volume=9"], "oracle.options.volume: not an option of the oracle 'tone'"),
    ],
)
def test_a_bad_option_names_its_key(registered: None, sets: list[str], named: str) -> None:
    config = load_config(overrides=sets)
    with pytest.raises(ConfigError) as caught:
        plugins.check_options(config)
        build_loss(config)
    assert named in str(caught.value)


def test_first_party_options_are_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"loss\.options\.beta must be > 0"):
        build_loss(load_config(overrides=["loss.name=dpo", "loss.options.beta=0"]))
    with pytest.raises(ConfigError, match=r"loss\.options\.beta: not an option of the loss 'pro'"):
        build_loss(load_config(overrides=["loss.options.beta=0.2"]))
    with pytest.raises(ConfigError, match=r"oracle\.options\.server_ctx: Input should be greater than or equal"):
        plugins.check_options(load_config(overrides=["oracle.options.server_ctx=64"]))
    loss = build_loss(load_config(overrides=["loss.name=rrhf", "loss.options.length_penalty=0.5"]))
    assert loss.hyper == {"length_penalty": 0.5}


def test_plugins_options_prints_each_option_with_default_and_description(registered: None) -> None:
    result = runner.invoke(app, ["plugins", "--options", "clip"], terminal_width=200)
    assert result.exit_code == 0, result.output
    rows = {tuple(c.strip() for c in line.split("│")[1:5]) for line in result.output.splitlines() if "│" in line}
    assert ("ceiling", "float", "2.0", "largest rank term kept (> 0)") in rows
    assert ("mode", "str", "'hard'", "hard or soft clipping") in rows
    assert "loss.options" in result.output
    result = runner.invoke(app, ["plugins", "--options", "tone"], terminal_width=200)
    assert "patience" in result.output and "answers it reads before it tires" in result.output
    result = runner.invoke(app, ["plugins", "--options", "plain"], terminal_width=200)
    assert result.exit_code == 0 and "no options declared" in result.output
    result = runner.invoke(app, ["plugins", "--options", "dpo"], terminal_width=200)
    assert "beta" in result.output and "0.1" in result.output and "best_worst" in result.output
    result = runner.invoke(app, ["plugins", "--options", "local"], terminal_width=200)
    assert "serve_gguf" in result.output and "'embedded:smollm2'" in result.output
    result = runner.invoke(app, ["plugins", "--options", "nope"])
    assert result.exit_code == 2 and "no oracle or loss named 'nope'" in result.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("loss.beta=0.2", "loss.options.beta"),
        ("loss.dpo_pairs=all", "loss.options.pairs"),
        ("loss.length_penalty=1.0", "loss.options.length_penalty"),
        ("oracle.api_base=http://127.0.0.1:1/v1", "oracle.options.api_base"),
        ("oracle.api_key_env=MY_KEY", "oracle.options.api_key_env"),
        ("oracle.api_key_file=key.txt", "oracle.options.api_key_file"),
        ("oracle.serve_gguf=null", "oracle.options.serve_gguf"),
        ("oracle.server_ctx=2048", "oracle.options.server_ctx"),
        ("oracle.json_schema=false", "oracle.options.json_schema"),
        ("cycle.shuffle=false", "oracle.shuffle_answers"),  # how answers are shown is the oracle's
    ],
)
def test_old_keys_are_refused_naming_the_new_one(old: str, new: str) -> None:
    key = old.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key} moved: use {new}$"):
        load_config(overrides=[old])
    result = runner.invoke(app, ["config", "--set", old])
    assert result.exit_code == 2 and f"{key} moved: use {new}" in result.stderr


def test_old_keys_in_a_yaml_file_name_the_file_and_the_new_key(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text("loss:\n  name: dpo\n  beta: 0.2\n")
    with pytest.raises(ConfigError, match=rf"{path}: loss.beta moved: use loss.options.beta"):
        load_config(path)


def test_a_key_itself_is_never_an_option_and_is_not_echoed() -> None:
    with pytest.raises(ConfigError, match=r"oracle\.options\.api_key: a key never goes into a config") as caught:
        load_config(overrides=["oracle.options.api_key=sk-secret-123456"])
    assert "sk-secret-123456" not in str(caught.value)
