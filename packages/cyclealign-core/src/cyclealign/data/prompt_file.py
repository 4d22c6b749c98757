"""Prompts from a JSONL file: ``{"prompt": "..."}`` or ``{"messages": [{"role", "content"}, ...]}`` per line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cyclealign.errors import DataError
from cyclealign.jsonl import JsonlReader
from cyclealign.protocols import Message, Prompt
from cyclealign.user_files import require_file


def parse_prompt_row(row: Any, pid: str) -> Prompt:
    """One JSONL row as a ``Prompt``; ``DataError`` saying which field is wrong."""
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object, got {type(row).__name__}")
    pid = str(row.get("id", pid))
    if "prompt" in row:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise DataError('field "prompt" must be a non-empty string')
        return Prompt.from_text(pid, row["prompt"])
    if "messages" not in row:
        raise DataError('expected a field "prompt" or "messages"')
    msgs = row["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise DataError('field "messages" must be a non-empty list')
    out = []
    for k, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
            raise DataError(f'"messages"[{k}] needs "role" and string "content"')
        if m["role"] not in ("user", "assistant", "system"):
            raise DataError(f'"messages"[{k}].role must be user, assistant or system')
        out.append(Message(m["role"], m["content"]))
    if out[-1].role != "user":
        raise DataError('the last of "messages" must be the user\'s turn to answer')
    return Prompt(pid, tuple(out))


def load_jsonl_prompts(path: str | Path, *, lenient: bool = False) -> list[Prompt]:
    """Every prompt in the file; a bad row stops loading naming ``file:line``, or with ``lenient`` is skipped.

    Skipped rows are counted in a warning, so leniency never hides how much was lost.
    """
    path = require_file(path, "data.source")
    rows = JsonlReader(path, lenient=lenient)
    return rows.parse(lambda n, row: parse_prompt_row(row, f"{path.stem}-{n}"), "data", "prompts")


def prompts_from_rows(rows: Any, where: str = "train_dataset") -> list[Prompt]:
    """Prompts handed in from Python: strings, lists of messages, or rows as a JSONL file holds them.

    A row without an ``id`` gets ``prompt-<n>`` (``n`` from 1), as line ``n`` of a file
    named ``prompt.jsonl`` would; a bad row is a ``DataError`` naming ``where[index]``.
    """
    prompts: list[Prompt] = []
    for k, row in enumerate(rows):
        if isinstance(row, str):
            row = {"prompt": row}
        elif isinstance(row, (list, tuple)):
            row = {"messages": list(row)}
        try:
            prompts.append(parse_prompt_row(row, f"prompt-{k + 1}"))
        except ValueError as e:
            raise DataError(f"{where}[{k}]: {e}") from None
    if not prompts:
        raise DataError(f"{where}: holds no prompts")
    return prompts
