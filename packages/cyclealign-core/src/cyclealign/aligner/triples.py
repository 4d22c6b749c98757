"""The corrector's training data: (question, answer, correction) triples.

From JSON or JSONL files in the field names Aligner's released data uses
(``question``, ``answer``, ``correction``), and from CycleAlign run directories:
each interaction the oracle ranked and answered gives the question, the
white-box response the oracle ranked last, and the oracle's own answer as its
correction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cyclealign.errors import DataError
from cyclealign.jsonl import JsonlReader

FIELDS = ("question", "answer", "correction")


@dataclass(frozen=True)
class Triple:
    question: str
    answer: str
    correction: str
    source: str  # file:line, or run_dir/interactions.jsonl:line


def _triple(row: Any, source: str) -> Triple:
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    for key in FIELDS:
        if not isinstance(row.get(key), str):
            raise ValueError(f'field "{key}" must be a string (fields: {", ".join(FIELDS)})')
    if not row["correction"].strip():
        raise ValueError('field "correction" is empty')
    return Triple(row["question"], row["answer"], row["correction"], source)


def read_triples(path: str | Path, *, lenient: bool = False) -> list[Triple]:
    """Every triple in a ``.json`` file (a list of objects) or a ``.jsonl``/``.jsonl.gz`` file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"aligner.data: {path} does not exist")
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
    """Triples from a run's ``interactions.jsonl``: (prompt, the oracle's last-ranked response, the oracle's answer)."""
    from cyclealign.store import read_jsonl

    path = Path(run_dir) / "interactions.jsonl"
    if not path.is_file():
        raise DataError(f"aligner.runs: {run_dir} holds no interactions.jsonl (is it a `cyclealign run` directory?)")
    out = []
    for n, record in enumerate(read_jsonl(path), 1):
        oracle = record.get("oracle") or {}
        order, response = oracle.get("order"), oracle.get("response")
        if not order or not isinstance(response, str) or not response.strip():
            continue  # the oracle failed or wrote no answer: nothing to learn a correction from
        try:
            worst = record["candidates"][order[-1]]
            out.append(Triple(str(record["prompt"]), str(worst), response, f"{path}:{n}"))
        except (KeyError, IndexError, TypeError) as e:
            raise DataError(f"{path}:{n}: not an interaction record ({e})") from None
    if not out:
        raise DataError(f"aligner.runs: {run_dir} has no interaction with an oracle answer to learn from")
    return out
