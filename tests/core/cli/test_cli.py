"""The command line: thin wrappers, fast failures, plugins listed with their distributions."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cyclealign.cli.main import app

runner = CliRunner()


@pytest.mark.timing
def test_unknown_key_fails_fast_with_one_line_naming_it() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cyclealign.cli.main", "run", "--set", "cycle.bogus=1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cycle.bogus" in lines[0]


def test_plugins_lists_first_party_oracles_and_losses_with_distributions() -> None:
    result = runner.invoke(app, ["plugins"], terminal_width=200)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "│" in line]
    found = {tuple(c.strip() for c in row.split("│")[1:4]) for row in rows}
    for kind, name, dist in [
        ("loss", "pro", "cyclealign-losses"),
        ("loss", "rrhf", "cyclealign-losses"),
        ("loss", "dpo", "cyclealign-losses"),
        ("oracle", "chatgpt", "cyclealign-oracles"),
        ("oracle", "gpt-4", "cyclealign-oracles"),
        ("oracle", "local", "cyclealign-oracles"),
    ]:
        assert (kind, name, dist) in found, (kind, name, dist, found)


def test_config_command_prints_resolved_yaml() -> None:
    result = runner.invoke(app, ["config", "--set", "cycle.num_samples=4"])
    assert result.exit_code == 0 and "num_samples: 4" in result.output


def test_example_third_party_oracle_is_listed() -> None:
    result = runner.invoke(app, ["plugins"], terminal_width=200)
    assert any(
        [c.strip() for c in line.split("│")[1:4]] == ["oracle", "echo", "cyclealign-oracle-echo"]
        for line in result.output.splitlines()
    ), result.output


def test_a_loss_registered_by_a_test_plugin_appears_beside_the_built_ins() -> None:
    import pluggy

    from cyclealign import plugins

    hookimpl = pluggy.HookimplMarker("cyclealign")

    class MarginLossPlugin:
        __name__ = "test-margin-plugin"

        @hookimpl
        def register_losses(self, register):
            register("margin", lambda config, num_samples=3: None, "a test loss")

    plugin = MarginLossPlugin()
    plugins.register_plugin(plugin)
    try:
        losses = {(i.name, i.distribution) for i in plugins.get_registry().items("loss")}
        assert {("pro", "cyclealign-losses"), ("rrhf", "cyclealign-losses"), ("dpo", "cyclealign-losses")} <= losses
        assert ("margin", "test-margin-plugin") in losses
        result = runner.invoke(app, ["plugins"], terminal_width=200)
        assert "margin" in result.output
    finally:
        plugins.unregister_plugin(plugin)
    assert "margin" not in {i.name for i in plugins.get_registry().items("loss")}


def test_plugin_loading_can_be_restricted(monkeypatch) -> None:
    from cyclealign import plugins

    monkeypatch.setenv("CYCLEALIGN_PLUGINS", "cyclealign-losses")
    plugins.reset()
    try:
        kinds = {i.kind for i in plugins.get_registry().items()}
        assert kinds == {"loss"}
    finally:
        monkeypatch.delenv("CYCLEALIGN_PLUGINS")
        plugins.reset()


def test_unknown_plugin_name_lists_the_registered_ones() -> None:
    import pytest

    from cyclealign import plugins

    with pytest.raises(plugins.PluginError, match="registered loss plugins: dpo, dpo-pl, lipo, pro, rrhf"):
        plugins.get_registry().get("loss", "nope")


def test_a_missing_extra_names_the_pip_install(monkeypatch) -> None:
    import pytest

    from cyclealign import plugins

    monkeypatch.setenv("CYCLEALIGN_PLUGINS", "cyclealign-losses")  # as if cyclealign-oracles were not installed
    plugins.reset()
    try:
        with pytest.raises(plugins.PluginError, match=r'oracle\.name: .*pip install "cyclealign-core\[openai\]"'):
            plugins.get_registry().get("oracle", "chatgpt", field="oracle.name")
    finally:
        monkeypatch.delenv("CYCLEALIGN_PLUGINS")
        plugins.reset()
