"""Result tables: printed with rich, written as CSV and Markdown beside each other."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cyclealign.errors import DataError
from cyclealign.infra.store import atomic_write_text


def markdown_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(out_dir: Path, name: str, title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """``<name>.csv`` and ``<name>.md`` in ``out_dir`` (atomically)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(Path(out_dir) / f"{name}.csv", buf.getvalue())
    atomic_write_text(Path(out_dir) / f"{name}.md", markdown_table(title, header, rows))


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV written by ``write_table``."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{path}: empty table")
    return rows[0], rows[1:]


def merge_row(path: Path, title: str, header: Sequence[str], row: Sequence[object]) -> list[list[object]]:
    """Put one system's row into a shared table (CSV + Markdown beside it), replacing its earlier row.

    This is how several ``eval reward`` runs build one Table 1 with a row per system.
    """
    path = Path(path)
    rows: list[list[object]] = []
    if path.exists():
        old_header, old_rows = read_table(path)
        if old_header != list(header):
            raise DataError(
                f"{path}: its columns {old_header} differ from this evaluation's {list(header)} "
                "(same subsets needed to share a table)"
            )
        rows = [r for r in old_rows if r[0] != str(row[0])]
    rows.append(list(row))
    write_table(path.parent, path.stem, title, header, rows)
    return rows


def print_table(console: Console, title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    table = Table(title=title)
    for h in header:
        table.add_column(str(h))
    for row in rows:
        table.add_row(*(str(c) for c in row))
    console.print(table)
