"""Configuration: YAML + dotted overrides, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cyclealign.config import Config, ConfigError, load_config
from tests.support.paths import REPO


def _sft_weight(cfg: Config) -> float:
    """λ as a run uses it: the loss object's, built from the config (the loss resolves "auto")."""
    from cyclealign.run.assembly import build_loss

    return build_loss(cfg).sft_weight


def test_defaults_follow_the_paper() -> None:
    cfg = load_config()
    assert cfg.cycle.num_samples == 3 and cfg.cycle.max_interactions == 5
    assert cfg.loss.name == "pro" and cfg.train.lr == 5e-5 and cfg.train.max_length == 512
    assert _sft_weight(cfg) == 4.0  # (l-1)^2 with l = 3
    assert _sft_weight(load_config(overrides=["cycle.num_samples=5"])) == 16.0
    assert _sft_weight(load_config(overrides=["loss.sft_weight=0.5"])) == 0.5


def test_overrides_are_yaml_scalars(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("cycle:\n  num_samples: 4\nrun:\n  dir: somewhere\n")
    cfg = load_config(
        path,
        [
            "oracle.shuffle_answers=false",
            "oracle.requests_per_minute=30",
            "whitebox.lora_target_modules=[q_proj, v_proj]",
        ],
    )
    assert cfg.cycle.num_samples == 4 and cfg.oracle.shuffle_answers is False
    assert cfg.oracle.requests_per_minute == 30.0 and cfg.whitebox.lora_target_modules == ["q_proj", "v_proj"]
    assert str(cfg.run.dir) == "somewhere"


@pytest.mark.parametrize(
    ("overrides", "yaml_text", "named"),
    [
        (["cycle.bogus=1"], None, "cycle.bogus"),
        (["bogus.key=1"], None, "bogus.key"),
        (["cycle.num_samples=abc"], None, "cycle.num_samples"),
        (["cycle.num_samples=1"], None, "cycle.num_samples"),
        (["loss.dpo_pairs=some"], None, "loss.dpo_pairs"),
        (["train.backend=jax"], None, "train.backend"),  # only backends that exist are accepted
        (["cycle"], None, "cycle"),
        ([], "cycle:\n  max_interactions: zero\n", "cycle.max_interactions"),
        ([], "whitebox:\n  modle: x\n", "whitebox.modle"),
        ([], "- a\n- b\n", "top level must be a mapping"),
        ([], "cycle: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, overrides: list[str], yaml_text: str | None, named: str) -> None:
    path = None
    if yaml_text is not None:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(path, overrides)
    assert named in str(e.value)
    if path is not None and "YAML" not in named and "mapping" not in named:
        assert str(path) in str(e.value)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_every_section_exists() -> None:
    assert set(Config.model_fields) == {"whitebox", "oracle", "cycle", "loss", "data", "train", "run"}


def test_the_paper_configs_validate() -> None:
    paper = sorted((REPO / "configs" / "paper").glob("*.yaml"))
    paper = [p for p in paper if "offline" not in yaml.safe_load(p.read_text())]  # `cyclealign train` baselines
    assert len(paper) >= 5
    for path in paper:
        cfg = load_config(path)
        assert cfg.train.lr == 5e-5 and cfg.train.max_length == 512 and cfg.cycle.max_interactions == 5
        assert _sft_weight(cfg) == 4.0 and cfg.data.max_prompts == 1000 and cfg.oracle.name == "chatgpt"
    assert load_config(paper[0]).cycle.dynamic_demos is False  # ablation-no-dynamic-demos.yaml
