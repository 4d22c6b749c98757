"""One error boundary: a user's mistake is one red line (exit 2); anything else is a bug, shown as one (exit 1)."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cyclealign import plugins
from cyclealign.cli import common as cli_common
from cyclealign.cli import main as cli
from cyclealign.cli.main import app
from cyclealign.errors import ConfigError, CycleAlignError, DataError, MissingPathError, PluginError
from cyclealign.oracle import ChatError, FormatRejected
from cyclealign.oracle.prompts import AnswerError

runner = CliRunner()


def _is_bug_report(result, error_line: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback (most recent call last)" in result.stderr
    assert error_line in result.stderr
    assert cli_common.BUG_REQUEST in " ".join(result.stderr.split())
    assert "error:" not in result.stderr  # never dressed as a user error


@pytest.mark.parametrize("error", [ValueError("boom: a bad internal value"), ImportError("no module named nope")])
def test_an_unexpected_error_in_a_command_is_reported_as_a_bug(monkeypatch, error: Exception) -> None:
    def broken(**kwargs):
        raise error

    monkeypatch.setattr(cli, "load_config", broken)  # what `cyclealign config` calls
    result = runner.invoke(app, ["config"])
    _is_bug_report(result, f"{type(error).__name__}: {error}")


def test_a_command_outside_any_guarded_call_is_behind_the_boundary_too(monkeypatch) -> None:
    def broken() -> None:
        raise KeyError("registry slot")

    monkeypatch.setattr(plugins, "get_registry", broken)  # `cyclealign plugins` calls it with no guard of its own
    _is_bug_report(runner.invoke(app, ["plugins"]), "KeyError: 'registry slot'")


def test_a_user_error_is_one_red_line_with_exit_2_and_no_traceback() -> None:
    result = runner.invoke(app, ["config", "--set", "cycle.bogus=1"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "cycle.bogus" in lines[0]
    assert "Traceback" not in result.output and cli_common.BUG_REQUEST not in result.output


def test_eval_and_export_errors_go_through_the_same_boundary(tmp_path: Path) -> None:
    answers = tmp_path / "a.jsonl"
    answers.write_text('{"id": "1", "question": "q", "answer": "a"}\n')
    result = runner.invoke(app, ["eval", "judge", str(answers), str(answers), "--set", "oracle.bogus=1"])
    assert result.exit_code == 2 and result.stderr.startswith("error:") and "oracle.bogus" in result.stderr
    assert "Invalid value" not in result.output  # no longer typer's BadParameter box
    result = runner.invoke(app, ["export", str(tmp_path), "--format", "csv", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and result.stderr.startswith("error:") and "--format" in result.stderr


def test_oracle_errors_are_cyclealign_errors_and_keep_their_builtins() -> None:
    assert issubclass(ChatError, CycleAlignError) and issubclass(FormatRejected, ChatError)
    assert issubclass(AnswerError, CycleAlignError) and issubclass(AnswerError, ValueError)
    error = ChatError("quota", retryable=False)
    assert not error.retryable and str(error) == "quota"
    # a named path that is missing is still the FileNotFoundError callers caught
    assert issubclass(MissingPathError, FileNotFoundError) and issubclass(MissingPathError, ConfigError)
    assert issubclass(DataError, ValueError)


def test_a_plugin_that_cannot_be_imported_is_a_plugin_error() -> None:
    ep = metadata.EntryPoint(name="broken", value="cyclealign_no_such_module_xyz", group=plugins.GROUP)
    with pytest.raises(PluginError, match=r"plugin 'broken' .*cannot be imported.*CYCLEALIGN_PLUGINS"):
        plugins.load_entry_point(ep)


def test_a_missing_optional_package_is_a_setup_error_with_its_install_hint(monkeypatch) -> None:
    from cyclealign import export
    from cyclealign.errors import SetupError
    from cyclealign.report import page as report
    from cyclealign.whitebox.deepspeed_backend import DeepSpeedBackend

    for name in ("matplotlib", "datasets", "deepspeed"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    with pytest.raises(SetupError, match="pip install"):
        report.pyplot()
    with pytest.raises(SetupError, match="pip install"):
        export.export_runs([Path("run")], Path("out"))
    with pytest.raises(SetupError, match=r"pip install \"cyclealign-core\[deepspeed\]\""):
        DeepSpeedBackend(model=None, train=None)  # the import is checked before anything is built
