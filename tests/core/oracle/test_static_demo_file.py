"""`oracle.static_demo_file`: a user's static demonstration replaces the built-in one in the rendered prompt,
and a malformed file is refused before the run, naming the file and the field (or the line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cyclealign.config import load_config
from cyclealign.errors import ConfigError, CycleAlignError
from cyclealign.infra.store import RunDir
from cyclealign.oracle.prompts import STATIC_DEMONSTRATION
from cyclealign.oracle.static_demo import load_static_demo
from cyclealign.protocols import OracleRequest
from cyclealign.run.assembly import build_pool, check_cheaply
from tests.support.openai_server import OpenAIServer, oracle_for, ranking_reply

# Made-up text (not the paper's): what a user would paste into the file.
GOOD = """\
question: "Where should I keep spare house keys?"
answers:
  - "Under the doormat, everyone does it."
  - "With a neighbour you trust, or in a lockbox with a code only you know."
  - "Keys are usually made of brass."
ranking: [1, 2, 0]   # answer numbers, best first
"""


def _file(tmp_path: Path, text: str, name: str = "demo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_file_replaces_the_built_in_demonstration_in_the_prompt_the_oracle_gets(tmp_path: Path) -> None:
    path = _file(tmp_path, GOOD)
    demo = load_static_demo(path)
    assert (demo.order, demo.source, len(demo.responses)) == ((1, 2, 0), "static", 3)
    config = load_config(overrides=[f"oracle.static_demo_file={path}", f"run.dir={tmp_path / 'run'}"])
    pool = build_pool(config, RunDir(tmp_path / "run"))  # what a run shows the oracle, static first
    assert pool.select("How do I bake bread?") == (demo,)
    request = OracleRequest("How do I bake bread?", ("Mix flour.", "No."), pool.select("How do I bake bread?"))
    with OpenAIServer(lambda call, i: ranking_reply([0, 1])) as server:
        assert oracle_for(server).rank(request).ok
        shown = server.chat_calls[0].first_user
    example, task = shown.split("## Your task")
    assert "Where should I keep spare house keys?" in example and STATIC_DEMONSTRATION.prompt not in shown
    for k, answer in enumerate(demo.responses):  # each answer fenced under its number, then the given ranking
        assert f"<<<Response-{k}>>>\n{answer}\n<<<END Response-{k}>>>" in example
    assert '"desired rank": [1, 2, 0]' in example and "How do I bake bread?" in task
    assert load_static_demo(None) is STATIC_DEMONSTRATION  # unset: the built-in one


def test_json_works_too(tmp_path: Path) -> None:
    data = {"question": "Q?", "answers": ["a good answer", "a bad answer"], "ranking": [0, 1]}
    demo = load_static_demo(_file(tmp_path, json.dumps(data, indent=2), "demo.json"))
    assert (demo.prompt, demo.responses, demo.order) == ("Q?", ("a good answer", "a bad answer"), (0, 1))


BAD = [
    ("missing.yaml", GOOD.replace("question:", "# question:"), 'field "question" is missing'),
    ("type.yaml", GOOD.replace("ranking: [1, 2, 0]", "ranking: first"), 'field "ranking" must be a list of answer'),
    ("answer.yaml", GOOD.replace('  - "Keys are usually made of brass."', "  - 42"), r'field "answers\[2\]" must be'),
    ("perm.yaml", GOOD.replace("[1, 2, 0]", "[1, 1, 0]"), r'field "ranking" is \[1, 1, 0\], not a permutation of'),
    ("short.yaml", GOOD.replace("[1, 2, 0]", "[1, 0]"), r'field "ranking" is \[1, 0\], not a permutation'),
    ("one.yaml", 'question: q\nanswers: ["only one"]\nranking: [0]\n', 'field "answers" must be a list of at least'),
    ("extra.yaml", GOOD + "notes: hi\n", 'unknown field "notes"'),
    ("empty.yaml", "", "got an empty file"),
    ("line.yaml", GOOD.replace("ranking: [1, 2, 0]", "ranking: [1, 2, 0"), r":\d+: not valid YAML"),
    ("line.json", '{"question": "q",\n "answers": ["a", "b"]\n "ranking": [0, 1]}', r":3: not valid JSON"),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_file_is_named_with_its_field_before_the_run(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = _file(tmp_path, text, name)
    with pytest.raises(ConfigError, match=rf"oracle\.static_demo_file: {path}.*{message}") as caught:
        load_static_demo(path)
    assert isinstance(caught.value, CycleAlignError)
    config = load_config(overrides=[f"oracle.static_demo_file={path}"])
    with pytest.raises(ConfigError, match=message):
        check_cheaply(config)  # before the run directory is touched


def test_the_yaml_error_names_the_line_it_is_on(tmp_path: Path) -> None:
    path = _file(tmp_path, "question: q\nanswers:\n  - a\n - b\nranking: [0, 1]\n")
    with pytest.raises(ConfigError, match=rf"{path}:4: not valid YAML"):
        load_static_demo(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"oracle\.static_demo_file: {tmp_path / 'nope.yaml'} does not exist"):
        load_static_demo(tmp_path / "nope.yaml")
