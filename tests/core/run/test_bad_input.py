"""Bad input, table-driven: each error names the field, file or line, and no run directory is corrupted."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cyclealign.config import load_config
from cyclealign.errors import OracleFatalError
from cyclealign.run.entry import resume, run
from tests.support.openai_server import OpenAIServer, Reply, default_behaviour
from tests.support.runs import tiny_overrides
from tests.support.tiny_models import tiny_llama_dir


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny model, a prompt file, a well-behaved oracle server and one completed run to protect."""
    root = tmp_path_factory.mktemp("bad-input")
    model = tiny_llama_dir(root / "model")
    prompts = root / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "How do I bake bread?"}) + "\n")
    server = OpenAIServer().__enter__()
    existing = root / "existing-run"
    run(base_config(model, prompts, server, existing))
    yield {"root": root, "model": model, "prompts": prompts, "server": server, "existing": existing}
    server.__exit__(None, None, None)


def base_config(model, prompts, server, run_dir, *extra: str):
    return load_config(
        overrides=tiny_overrides(
            model, prompts, server.api_base, run_dir, "whitebox.max_new_tokens=8", "cycle.max_interactions=1", *extra
        )
    )


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@dataclass
class Case:
    id: str
    named: str  # what the error must name
    overrides: tuple[str, ...] = ()
    prepare: Callable[[dict, Path], list[str]] | None = None  # returns extra overrides
    env: dict[str, str | None] | None = None
    into_existing: bool = False
    dir_made: bool = False  # the error comes after the run directory was made (the white-box tokenizer's)
    also: str = ""  # a second part the message must hold


def _write(name: str, text: str):
    def prepare(w: dict, tmp: Path) -> list[str]:
        path = tmp / name
        path.write_text(text)
        return [f"data.source={path}"]

    return prepare


def _model_dir_without_config(w: dict, tmp: Path) -> list[str]:
    (tmp / "empty-model").mkdir()
    return [f"whitebox.model={tmp / 'empty-model'}"]


def _closed_port(w: dict, tmp: Path) -> list[str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [f"oracle.options.api_base=http://127.0.0.1:{port}/v1"]


def _a_directory(key: str, *extra: str):
    def prepare(w: dict, tmp: Path) -> list[str]:
        (tmp / "a-folder").mkdir()
        return [*extra, f"{key}={tmp / 'a-folder'}"]

    return prepare


def _long_prompt(w: dict, tmp: Path) -> list[str]:
    path = tmp / "long.jsonl"
    path.write_text(json.dumps({"id": "very-long", "prompt": "bread " * 400}) + "\n")
    return [f"data.source={path}", "whitebox.max_prompt_tokens=64", "data.overlong=reject"]


CASES = [
    Case("unknown-key", "cycle.bogus", ("cycle.bogus=1",)),
    Case("ill-typed", "cycle.num_samples", ("cycle.num_samples=three",)),
    Case("out-of-range", "train.lr", ("train.lr=-1",)),
    Case("bad-literal", "loss.options.pairs", ("loss.name=dpo", "loss.options.pairs=most")),
    Case("missing-model", "whitebox.model", ("whitebox.model=/nonexistent/model",)),
    Case("model-without-config", "whitebox.model", prepare=_model_dir_without_config),
    Case("missing-gguf", "whitebox.gguf_file", ("whitebox.gguf_file=nope.gguf",)),
    Case("missing-data-file", "data.source", ("data.source=/nonexistent/prompts.jsonl",)),
    Case("malformed-row", "rows.jsonl:2", prepare=_write("rows.jsonl", '{"prompt": "ok"}\n{"prompt": \n')),
    Case("row-missing-field", 'rows.jsonl:1: expected a field "prompt"', prepare=_write("rows.jsonl", '{"q": 1}\n')),
    Case("row-empty-prompt", 'rows.jsonl:1: field "prompt"', prepare=_write("rows.jsonl", '{"prompt": " "}\n')),
    Case(
        "last-turn-not-user",
        "rows.jsonl:1",
        prepare=_write("rows.jsonl", '{"messages": [{"role": "assistant", "content": "hi"}]}\n'),
    ),
    Case(
        "duplicate-ids",
        "appears more than once",
        prepare=_write("rows.jsonl", '{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n'),
    ),
    Case("unknown-oracle", "oracle.name", ("oracle.name=gpt-17",)),
    Case("unknown-loss", "loss.name", ("loss.name=ppo",)),
    Case("unreachable-oracle", "oracle.options.api_base", prepare=_closed_port),
    Case(
        "missing-api-key",
        "OPENAI_API_KEY",
        ("oracle.name=chatgpt", "oracle.options.api_base=null"),
        env={"OPENAI_API_KEY": None},
    ),
    Case(
        "missing-key-file",
        "oracle.options.api_key_file",
        ("oracle.name=chatgpt", "oracle.options.api_key_file=/nonexistent/key"),
    ),
    Case("overlong-prompt-rejected", "whitebox.max_prompt_tokens", prepare=_long_prompt, dir_made=True),
    Case(
        "data-source-is-a-directory",
        "data.source:",
        prepare=_a_directory("data.source"),
        also="a-folder is a directory, expected a file",
    ),
    Case(
        "key-file-is-a-directory",
        "oracle.options.api_key_file:",
        prepare=_a_directory("oracle.options.api_key_file", "oracle.name=chatgpt"),
        also="a-folder is a directory, expected a file",
    ),
    Case("unknown-embedded-model", "whitebox.model: unknown embedded model", ("whitebox.model=embedded:nonsense",)),
    Case(
        "hub-id-while-offline",
        "not a local directory and the hub is offline",
        ("whitebox.model=someone/no-such-model-here",),
        env={"HF_HUB_OFFLINE": "1"},
    ),
    Case("run-dir-holds-another-run", "run.dir", into_existing=True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_named_and_corrupts_nothing(case: Case, world: dict, tmp_path: Path, monkeypatch) -> None:
    for k, v in (case.env or {}).items():
        if v is None:
            monkeypatch.delenv(k, raising=False)
        else:
            monkeypatch.setenv(k, v)
    run_dir = world["existing"] if case.into_existing else tmp_path / "run"
    before = snapshot(world["existing"])
    extra = list(case.overrides) + (case.prepare(world, tmp_path) if case.prepare else [])
    calls_before = len(world["server"].chat_calls)
    with pytest.raises(Exception) as err:
        cfg = base_config(world["model"], world["prompts"], world["server"], run_dir, *extra)
        run(cfg)
    message = str(err.value)
    assert case.named in message and case.also in message, message
    assert len(message) < 600 and "Traceback" not in message
    # Nothing was paid for and nothing was corrupted.
    assert len(world["server"].chat_calls) == calls_before
    assert snapshot(world["existing"]) == before
    if not case.into_existing and run_dir.exists():
        status = json.loads((run_dir / "run.json").read_text())["status"]
        assert status == "failed" and not (run_dir / "interactions.jsonl").exists()
    if not case.into_existing:
        assert run_dir.exists() == case.dir_made  # no run directory unless the checks before it passed


def test_resume_of_a_directory_without_a_run_is_named(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="holds no run to resume"):
        resume(tmp_path)


def test_a_failed_start_can_be_rerun_in_the_same_directory(world: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(Exception, match=r"whitebox\.max_prompt_tokens"):
        run(base_config(world["model"], world["root"] / "x", world["server"], run_dir, *_long_prompt(world, tmp_path)))
    result = run(base_config(world["model"], world["prompts"], world["server"], run_dir))
    assert result.summary["prompts_done"] == 1


def test_api_key_never_reaches_files_or_logs(world: dict, tmp_path: Path, monkeypatch, caplog, capsys) -> None:
    marker = "sk-live-SECRET-MARKER-51c0ffee"
    monkeypatch.setenv("OPENAI_API_KEY", marker)
    caplog.set_level(logging.DEBUG)

    def flaky(call, index):  # an auth error and a server error carry request details in their messages
        if index == 0:
            return Reply(status=401)
        if index == 1:
            return Reply(status=500)
        return default_behaviour(call, index)

    run_dir = tmp_path / "secret-run"
    with OpenAIServer(flaky) as server:
        cfg = base_config(
            world["model"],
            world["prompts"],
            server,
            run_dir,
            "oracle.name=chatgpt",
            "oracle.model=gpt-3.5-turbo",
            "oracle.backoff_base_s=0.01",
            "cycle.max_interactions=3",
            "cycle.early_stop=false",
        )
        with pytest.raises(OracleFatalError, match="AuthenticationError"):  # a rejected key stops the run
            run(cfg)
        resume(run_dir)  # the server takes the key again: the run ends, through the 500
        auth = {k.lower(): v for k, v in server.chat_calls[-1].headers.items()}["authorization"]
    assert marker in auth  # it was really used
    captured = capsys.readouterr()
    assert marker not in captured.out + captured.err
    assert marker not in caplog.text
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("oracle_cache") for p in files) and any(p.name == "config.yaml" for p in files)
    for p in files:
        assert marker.encode() not in p.read_bytes(), p


# ---------------------------------------------------------------- the command line: exit code, message, no traceback
def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``cyclealign ARGS`` in this process: (exit code, stdout and stderr); an escaping exception fails the test."""
    from typer.testing import CliRunner

    from cyclealign.cli.main import app

    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def run_args(world: dict, api_base: str, run_dir: Path, *extra: str) -> list[str]:
    sets = tiny_overrides(
        world["model"], world["prompts"], api_base, run_dir, "whitebox.max_new_tokens=8", "cycle.max_interactions=1"
    )
    return ["run", *(x for s in [*sets, *extra] for x in ("--set", s))]


def test_a_config_that_is_a_directory_or_not_utf8_is_named(tmp_path: Path) -> None:
    code, out = cli("config", str(tmp_path))
    assert code == 2 and f"config file: {tmp_path} is a directory, expected a file" in out
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("cycle:\n  num_samples: 3\n# café\n".encode("latin-1"))
    code, out = cli("config", str(bad))
    assert code == 2 and "latin1.yaml:3: not UTF-8 text (byte 0xe9 at byte offset" in out


def test_export_to_an_occupied_or_unwritable_place_is_named(world: dict, tmp_path: Path) -> None:
    occupied = tmp_path / "a-file"
    occupied.write_text("mine")
    code, out = cli("export", str(world["existing"]), "--out", str(occupied))
    assert code == 2 and f"--out: {occupied} is a file, expected a folder" in out
    code, out = cli("export", str(world["existing"]), "--out", str(occupied / "sub"))
    assert code == 2 and "--out:" in out and "is a file, so" in out
    assert occupied.read_text() == "mine"


def test_export_into_a_read_only_folder_is_named(world: dict, tmp_path: Path) -> None:
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        code, out = cli("export", str(world["existing"]), "--out", str(locked / "export"))
        assert code == 2 and f"--out: {locked} is not writable" in out
    finally:
        locked.chmod(0o755)


def test_an_unknown_embedded_model_is_named_and_leaves_no_run_directory(world: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code, out = cli(*run_args(world, world["server"].api_base, run_dir, "whitebox.model=embedded:nonsense"))
    assert code == 2 and "whitebox.model: unknown embedded model 'embedded:nonsense'" in out
    assert not run_dir.exists()


def _corrector_dir(world: dict, tmp_path: Path) -> Path:
    import shutil

    from cyclealign.aligner.prompt import CorrectorPrompt

    corrector = tmp_path / "corrector"
    shutil.copytree(world["model"], corrector)
    CorrectorPrompt().save(corrector)
    return corrector


def test_aligner_correct_checks_the_corrector_and_the_upstream_before_any_answer(world: dict, tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "How do I bake bread?"}) + "\n")
    server = world["server"]
    calls = len(server.chat_calls)
    empty = tmp_path / "not-a-corrector"
    empty.mkdir()
    code, out = cli(
        "aligner", "correct", str(questions), "--corrector", str(empty), "--upstream", "openai/m",
        "--api-base", server.api_base, "--out", str(tmp_path / "out.jsonl"),
    )  # fmt: skip
    assert code == 2 and f"--corrector: {empty}: not a corrector" in out
    assert len(server.chat_calls) == calls  # nothing was asked upstream (nothing paid for)
    corrector = _corrector_dir(world, tmp_path)
    code, out = cli(
        "aligner", "correct", str(questions), "--corrector", str(corrector), "--upstream", "embedded:nonsense",
        "--out", str(tmp_path / "out.jsonl"),
    )  # fmt: skip
    assert code == 2 and "unknown embedded model 'embedded:nonsense'" in out
    assert not (tmp_path / "out.jsonl").exists()


def test_a_nan_score_is_named_at_load_and_lenient_mode_skips_it(tmp_path: Path) -> None:
    from cyclealign.offline.records import read_examples

    rows = tmp_path / "ranked.jsonl"
    good = {"prompt": "Hi?", "responses": ["Hello!", "Go away."], "scores": [1.0, 0.0]}
    rows.write_text(json.dumps(good) + '\n{"prompt": "Why?", "responses": ["Because.", "No."], "scores": [NaN, 0]}\n')
    code, out = cli("train", "--set", f"offline.source={rows}", "--set", f"run.dir={tmp_path / 'r'}")
    assert code == 2 and "ranked.jsonl:2:" in out and "scores[0] is nan" in out and not (tmp_path / "r").exists()
    with pytest.warns(UserWarning, match="skipped 1 malformed rows"):
        assert [e.id for e in read_examples(rows, lenient=True)] == ["ranked-1"]


def test_ctrl_c_before_the_run_directory_exists_offers_no_resume(world: dict, tmp_path: Path, monkeypatch) -> None:
    from cyclealign.run import assembly

    def interrupted(config, *given):  # what a Ctrl+C during the first checks does
        raise KeyboardInterrupt

    monkeypatch.setattr(assembly, "check_cheaply", interrupted)
    run_dir = tmp_path / "run"
    code, out = cli(*run_args(world, world["server"].api_base, run_dir))
    assert code == 130 and "--resume" not in out and "nothing was written" in out and not run_dir.exists()


# ---------------------------------------------------------------- the oracle: fatal errors, secrets, failure kinds
KEY = "sk-live-SECRET-KEY-0123456789abcdef"


def auth_of(call) -> str:
    return {k.lower(): v for k, v in call.headers.items()}.get("authorization", "")


def every_file_lacks(directory: Path, secret: str) -> None:
    for p in directory.rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p


def test_a_rejected_key_stops_before_the_run_starts(world: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with OpenAIServer(api_keys={"sk-the-right-one-0000000000"}) as server:  # the listing checks the key too
        args = run_args(world, server.api_base, run_dir, "oracle.name=chatgpt", "oracle.model=gpt-3.5-turbo")
        code, out = cli(*args, env={"OPENAI_API_KEY": KEY})
        assert server.rejected == ["/v1/models"] and server.chat_calls == []  # asked once, nothing paid for
    assert code == 2 and "rejected the API key (HTTP 401: Incorrect API key provided: ***" in out
    assert KEY not in out and not run_dir.exists()


def test_a_key_rejected_during_the_run_stops_it_and_resume_continues(world: dict, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(3)))
    run_dir = tmp_path / "run"
    with OpenAIServer(api_keys={"sk-another-key-00000000000"}, protect_models=False) as server:  # e.g. revoked
        args = run_args(world, server.api_base, run_dir, "oracle.name=chatgpt", "oracle.model=gpt-3.5-turbo")
        code, out = cli(*args, f"--set=data.source={prompts}", env={"OPENAI_API_KEY": KEY})
        assert len(server.chat_calls) == 1 and server.rejected == ["/v1/chat/completions"]  # no call after it
        assert code == 2 and "error: oracle failed fatally: AuthenticationError" in out and "***" in out
        assert f"cyclealign run --resume {run_dir}" in out and KEY not in out
        status = json.loads((run_dir / "run.json").read_text())
        assert status["status"] == "failed" and "Incorrect API key provided: ***" in status["error"]
        assert json.loads((run_dir / "summary.json").read_text())["prompts_done"] == 0
        every_file_lacks(run_dir, KEY)
        server.api_keys.add(KEY)  # the cause is fixed
        code, out = cli("run", "--resume", str(run_dir), env={"OPENAI_API_KEY": KEY})
        assert code == 0 and len(server.chat_calls) == 4
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["prompts_done"] == 3 and summary["oracle_failures"] == 0
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"


def test_a_key_echoed_in_a_server_error_appears_nowhere(world: dict, tmp_path: Path, caplog) -> None:
    def echo_headers(call, index):  # a provider's 500 that repeats the request's headers, key and all
        if "garbled" in call.first_user or index == 0:
            auth = auth_of(call)
            message = f"upstream failed for the request with headers {{'Authorization': '{auth}'}}"
            return Reply(status=500, body=json.dumps({"error": {"message": message, "type": "server_error"}}))
        return default_behaviour(call, index)

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "How do I bake bread?"}) + "\n" + json.dumps({"prompt": "garbled"}) + "\n")
    caplog.set_level(logging.DEBUG)
    run_dir = tmp_path / "run"
    with OpenAIServer(echo_headers) as server:
        args = run_args(world, server.api_base, run_dir, "oracle.name=chatgpt", "oracle.model=gpt-3.5-turbo")
        code, out = cli(
            *args, f"--set=data.source={prompts}", "--set=oracle.max_retries=1", env={"OPENAI_API_KEY": KEY}
        )
        assert KEY in auth_of(server.chat_calls[0])  # it was really sent, and echoed
    records = [json.loads(line) for line in (run_dir / "interactions.jsonl").read_text().splitlines()]
    failed = [r["oracle"] for r in records if r["oracle"]["order"] is None]
    assert code == 0 and len(failed) == 1 and "'Authorization': 'Bearer ***'" in failed[0]["error"]
    assert failed[0]["failure"] == "provider_error"
    assert KEY not in out and KEY not in caplog.text
    every_file_lacks(run_dir, KEY)


def test_tracebacks_and_exception_chains_in_logs_are_redacted(caplog) -> None:
    unknown = "tok-never-registered-77aa88bb99"  # a key we never read, in a header of a chained exception
    caplog.set_level(logging.DEBUG)
    try:
        try:
            raise ConnectionError(f"refused: {{'authorization': 'Bearer {unknown}'}}")
        except ConnectionError as inner:
            raise RuntimeError(f"retrying with api-key: {unknown}") from inner
    except RuntimeError:
        logging.getLogger("some.library").warning("call failed, Authorization: Bearer %s", unknown, exc_info=True)
    assert "Traceback" in caplog.text and "ConnectionError" in caplog.text and "RuntimeError" in caplog.text
    assert unknown not in caplog.text and "Bearer ***" in caplog.text and "api-key: ***" in caplog.text


def test_a_bugs_traceback_on_the_console_is_redacted(monkeypatch, capsys) -> None:
    import sys

    from cyclealign.oracle.secrets import redact_uncaught

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    redact_uncaught()
    unknown = "tok-never-registered-55cc66dd77"
    try:
        raise ValueError(f"request failed: headers={{'Authorization': 'Bearer {unknown}'}}")
    except ValueError:
        sys.excepthook(*sys.exc_info())  # what the interpreter does with an exception nobody caught
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError" in err and unknown not in err and "Bearer ***" in err


def test_failures_are_counted_by_kind_in_the_summary(world: dict, tmp_path: Path) -> None:
    def mixed(call, index):
        if "slow" in call.first_user:
            return Reply(delay_s=5.0)  # past oracle.timeout_s
        if "garbled" in call.first_user:
            return Reply("I would rather not rank these.")
        return default_behaviour(call, index)

    prompts = tmp_path / "prompts.jsonl"
    rows = ["How do I bake bread?", "slow question", "garbled question", "bread " * 900]
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in rows))
    run_dir = tmp_path / "run"
    with OpenAIServer(mixed) as server:
        cfg = base_config(
            world["model"], prompts, server, run_dir,
            "oracle.timeout_s=1", "oracle.max_retries=0", "oracle.max_parse_retries=0",
            "oracle.context_tokens=1024", "whitebox.max_prompt_tokens=2048", "cycle.prompt_batch=4",
        )  # fmt: skip
        result = run(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["oracle_failures_by_kind"] == {"context_overflow": 1, "invalid_answer": 1, "timeout": 1}
    assert summary["oracle_failures"] == 3 and result.summary["prompts_done"] == 4
