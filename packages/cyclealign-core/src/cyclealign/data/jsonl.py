"""Prompts from a JSONL file: ``{"prompt": "..."}`` or ``{"messages": [{"role", "content"}, ...]}`` per line."""

from __future__ import annotations

import json
from pathlib import Path

from cyclealign.protocols import Message, Prompt


class DataError(ValueError):
    """A data file or row is unusable; the message names the file and line."""


def load_jsonl_prompts(path: str | Path) -> list[Prompt]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.source: {path} does not exist")
    prompts: list[Prompt] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            pid = str(row.get("id", f"{path.stem}-{n}"))
            if "prompt" in row:
                if not isinstance(row["prompt"], str) or not row["prompt"].strip():
                    raise DataError(f'{where}: field "prompt" must be a non-empty string')
                prompts.append(Prompt.from_text(pid, row["prompt"]))
            elif "messages" in row:
                msgs = row["messages"]
                if not isinstance(msgs, list) or not msgs:
                    raise DataError(f'{where}: field "messages" must be a non-empty list')
                out = []
                for k, m in enumerate(msgs):
                    if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
                        raise DataError(f'{where}: "messages"[{k}] needs "role" and string "content"')
                    if m["role"] not in ("user", "assistant", "system"):
                        raise DataError(f'{where}: "messages"[{k}].role must be user, assistant or system')
                    out.append(Message(m["role"], m["content"]))
                if out[-1].role != "user":
                    raise DataError(f'{where}: the last of "messages" must be the user\'s turn to answer')
                prompts.append(Prompt(pid, tuple(out)))
            else:
                raise DataError(f'{where}: expected a field "prompt" or "messages"')
    if not prompts:
        raise DataError(f"data.source: {path} holds no prompts")
    return prompts
