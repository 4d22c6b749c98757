"""The static demonstration: the built-in one, or ``oracle.static_demo_file`` in its place.

The file is YAML (or JSON, which is read as JSON) with three fields::

    question: How do I ...?
    answers:
      - first answer
      - second answer
    ranking: [1, 0]        # answer numbers, best first

It is checked whole before a run starts; every problem names the file and the
field (a parse error names the line), so a hand-written demonstration never
reaches the oracle half-read.  The project ships no demonstration but its own
(``STATIC_DEMONSTRATION``); docs/reproduce.md shows how to supply the paper's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from cyclealign.errors import ConfigError
from cyclealign.oracle.prompts import STATIC_DEMONSTRATION
from cyclealign.protocols import Demonstration

KEY = "oracle.static_demo_file"
FIELDS = ("question", "answers", "ranking")


def _parse(path: Path, text: str) -> Any:
    """The file's data; a syntax error names the line (JSON for ``.json``, YAML otherwise)."""
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{KEY}: {path}:{e.lineno}: not valid JSON ({e.msg})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{KEY}: {where}: not valid YAML ({problem})") from None


def _text(value: Any, path: Path, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        got = "an empty string" if isinstance(value, str) else type(value).__name__
        raise ConfigError(f'{KEY}: {path}: field "{field}" must be non-empty text, got {got}')
    return value.strip()


def _ranking(value: Any, n: int, path: Path) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ConfigError(f'{KEY}: {path}: field "ranking" must be a list of answer numbers, got {value!r}')
    if sorted(value) != list(range(n)):
        raise ConfigError(
            f'{KEY}: {path}: field "ranking" is {value}, not a permutation of the answer numbers 0..{n - 1} '
            "(each answer once, best first)"
        )
    return tuple(value)


def parse_static_demo(data: Any, path: Path) -> Demonstration:
    """A demonstration from the file's data; ``ConfigError`` naming ``path`` and the field otherwise."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise ConfigError(f"{KEY}: {path}: expected a mapping with {', '.join(FIELDS)}, got {got}")
    unknown = sorted(str(k) for k in data if k not in FIELDS)
    if unknown:
        raise ConfigError(f'{KEY}: {path}: unknown field "{unknown[0]}" (fields: {", ".join(FIELDS)})')
    for name in FIELDS:
        if name not in data:
            raise ConfigError(f'{KEY}: {path}: field "{name}" is missing (fields: {", ".join(FIELDS)})')
    question = _text(data["question"], path, "question")
    answers = data["answers"]
    if not isinstance(answers, list) or len(answers) < 2:
        got = f"{len(answers)} item(s)" if isinstance(answers, list) else type(answers).__name__
        raise ConfigError(f'{KEY}: {path}: field "answers" must be a list of at least two answers, got {got}')
    texts = tuple(_text(a, path, f"answers[{i}]") for i, a in enumerate(answers))
    return Demonstration(question, texts, _ranking(data["ranking"], len(texts), path), source="static")


def load_static_demo(path: str | Path | None) -> Demonstration:
    """The static demonstration shown to the oracle: the built-in one, or the file's in its place."""
    if path is None:
        return STATIC_DEMONSTRATION
    from cyclealign.user_files import read_text

    p = Path(path)
    return parse_static_demo(_parse(p, read_text(p, KEY, ConfigError)), p)
