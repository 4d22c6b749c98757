"""The corrector's training data: (question, answer, correction) triples.

From JSON or JSONL files in the field names Aligner's released data uses
(``question``, ``answer``, ``correction``), and from CycleAlign run directories:
each interaction the oracle ranked and answered gives one triple per white-box
sample, with the oracle's own answer as the correction (the rows of
``cyclealign export --format aligner``, labelled ``correction_kind: oracle_answer``:
the oracle answered the prompt, it did not edit that sample).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cyclealign.errors import DataError
from cyclealign.jsonl import JsonlReader
from cyclealign.user_files import require_file

FIELDS = ("question", "answer", "correction")


@dataclass(frozen=True)
class Triple:
    question: str
    answer: str
    correction: str
    source: str  # file:line, or run_dir/interactions.jsonl:line


def _triple(row: Any, source: str) -> Triple:
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object, got {type(row).__name__}")
    for key in FIELDS:
        if not isinstance(row.get(key), str):
            raise DataError(f'field "{key}" must be a string (fields: {", ".join(FIELDS)})')
    if not row["correction"].strip():
        raise DataError('field "correction" is empty')
    return Triple(row["question"], row["answer"], row["correction"], source)


def triples_from_rows(rows: Any, where: str = "train_dataset") -> list[Triple]:
    """Triples handed in from Python: dicts with ``question``, ``answer`` and ``correction``."""
    out: list[Triple] = []
    for k, row in enumerate(rows):
        try:
            out.append(_triple(row, f"{where}[{k}]"))
        except ValueError as e:
            raise DataError(f"{where}[{k}]: {e}") from None
    if not out:
        raise DataError(f"{where}: holds no triples")
    return out


def read_triples(path: str | Path, *, lenient: bool = False) -> list[Triple]:
    """Every triple in a ``.json`` file (a list of objects) or a ``.jsonl``/``.jsonl.gz`` file."""
    path = require_file(path, "aligner.data")
    out: list[Triple] = []
    if path.suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: not readable JSON ({e})") from None
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON list of objects with {', '.join(FIELDS)}")
        for k, row in enumerate(rows):
            try:
                out.append(_triple(row, f"{path}:[{k}]"))
            except ValueError as e:
                if not lenient:
                    raise DataError(f"{path}: item [{k}]: {e}") from None
    else:
        reader = JsonlReader(path, lenient=lenient, hint="aligner.lenient=true skips and counts such rows")
        for n, row in reader:
            try:
                out.append(_triple(row, f"{path}:{n}"))
            except ValueError as e:
                reader.reject(n, str(e))
    if not out:
        raise DataError(f"aligner.data: {path} holds no triples")
    return out


def triples_from_run(run_dir: str | Path) -> list[Triple]:
    """A run's triples exactly as ``cyclealign export --format aligner`` writes them.

    One per white-box sample of every interaction the oracle ranked and answered:
    (prompt, the sample, the oracle's own answer).
    """
    from cyclealign.export import read_run, rows_for

    path = Path(run_dir) / "interactions.jsonl"
    if not path.is_file():
        raise DataError(f"aligner.runs: {run_dir} holds no interactions.jsonl (is it a `cyclealign run` directory?)")
    out = [
        Triple(row["question"], row["answer"], row["correction"], item.where)
        for item in read_run(run_dir)[0]
        for row in rows_for("aligner", item)
    ]
    if not out:
        raise DataError(f"aligner.runs: {run_dir} has no interaction with an oracle answer to learn from")
    return out
