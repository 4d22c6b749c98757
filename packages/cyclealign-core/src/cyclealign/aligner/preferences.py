"""Corrections as preference data: ``aligner correct``'s output to TRL's ``prompt``/``chosen``/``rejected`` columns.

Each row of the input (``question``, ``original``, ``corrected``) becomes
``{"prompt": question, "chosen": corrected, "rejected": original}``, which
``cyclealign train`` reads as a preference pair (Aligner's weak-to-strong
bootstrap: the corrector's edits teach the model that wrote the originals).
A row whose correction equals its original carries no preference; it is left
out and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cyclealign.errors import DataError
from cyclealign.jsonl import JsonlReader

INPUT_FIELDS = ("question", "original", "corrected")
TRL_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class ExportReport:
    read: int
    written: int
    unchanged: int
    skipped: int  # malformed rows skipped in lenient mode
    output: Path


def export_preferences(source: str | Path, output: str | Path, *, lenient: bool = False) -> ExportReport:
    """Write ``output`` (JSONL, atomically) from the corrections in ``source``; returns the counts."""
    from cyclealign.infra.store import atomic_write_jsonl

    source, output = Path(source), Path(output)
    if not source.is_file():
        raise DataError(f"{source} does not exist (expected the JSONL written by `cyclealign aligner correct`)")
    if output.resolve() == source.resolve():
        raise DataError(f"{output}: the output would overwrite its input")
    reader = JsonlReader(source, lenient=lenient, hint="--lenient skips and counts such rows")
    rows, read, unchanged = [], 0, 0
    for n, row in reader:
        read += 1
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in INPUT_FIELDS):
            reader.reject(n, f"expected string fields {', '.join(INPUT_FIELDS)}")
            continue
        if not row["corrected"].strip() or not row["original"].strip():
            reader.reject(n, 'field "corrected" or "original" is empty')
            continue
        if row["corrected"].strip() == row["original"].strip():
            unchanged += 1
            continue
        rows.append({"prompt": row["question"], "chosen": row["corrected"], "rejected": row["original"]})
    if not rows:
        raise DataError(f"{source}: no row with a correction that differs from its original ({read} read)")
    atomic_write_jsonl(output, rows)
    return ExportReport(read, len(rows), unchanged, reader.skipped, output)
