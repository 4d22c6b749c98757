"""Result tables: printed with rich, written as CSV and Markdown beside each other."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cyclealign.store import atomic_write_text


def write_table(out_dir: Path, name: str, title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """``<name>.csv`` and ``<name>.md`` in ``out_dir`` (atomically)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(out_dir / f"{name}.csv", buf.getvalue())
    md = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    atomic_write_text(out_dir / f"{name}.md", "\n".join(md) + "\n")


def print_table(console: Console, title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    table = Table(title=title)
    for h in header:
        table.add_column(str(h))
    for row in rows:
        table.add_row(*(str(c) for c in row))
    console.print(table)
