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
from cyclealign.run import resume, run
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
    Case("overlong-prompt-rejected", "whitebox.max_prompt_tokens", prepare=_long_prompt),
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
    assert case.named in message, message
    assert len(message) < 600 and "Traceback" not in message
    # Nothing was paid for and nothing was corrupted.
    assert len(world["server"].chat_calls) == calls_before
    assert snapshot(world["existing"]) == before
    if not case.into_existing and run_dir.exists():
        status = json.loads((run_dir / "run.json").read_text())["status"]
        assert status == "failed" and not (run_dir / "interactions.jsonl").exists()


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
        run(cfg)
        auth = {k.lower(): v for k, v in server.chat_calls[-1].headers.items()}["authorization"]
    assert marker in auth  # it was really used
    captured = capsys.readouterr()
    assert marker not in captured.out + captured.err
    assert marker not in caplog.text
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("oracle_cache") for p in files) and any(p.name == "config.yaml" for p in files)
    for p in files:
        assert marker.encode() not in p.read_bytes(), p
