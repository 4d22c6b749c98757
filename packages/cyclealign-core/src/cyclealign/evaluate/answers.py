"""Answer files, the one format every evaluation reads and writes.

Two layouts, told apart row by row:

- answers (``eval reward``, ``eval generate``): ``id``, ``subset``, ``question``,
  ``messages`` (the dialogue, optional) and ``answer``;
- corrected (``aligner correct``): the same keys, but ``original`` (the upstream
  model's answer) and ``corrected`` (the corrector's rewrite) instead of ``answer``.

``column`` picks the answer a row stands for (``answer``, ``original`` or
``corrected``); by default ``answer``, or ``corrected`` in a corrected file.  So
one corrected file is both "upstream" and "upstream + corrector".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cyclealign.errors import DataError
from cyclealign.jsonl import JsonlReader
from cyclealign.protocols import Message, Prompt

COLUMNS = ("answer", "original", "corrected")


@dataclass(frozen=True)
class AnswerRow:
    id: str
    subset: str
    question: str
    prompt: Prompt  # the dialogue the answer replies to (one user turn when the file has no messages)
    answer: str


def is_corrected(row: dict[str, Any]) -> bool:
    return "corrected" in row and "answer" not in row


def _prompt(row: dict[str, Any], id: str) -> Prompt:
    messages = row.get("messages")
    if not messages:
        return Prompt.from_text(id, str(row["question"]))
    return Prompt(id, tuple(Message(str(m["role"]), str(m["content"])) for m in messages))


def read_answers(path: str | Path, column: str | None = None) -> list[AnswerRow]:
    """Every row of an answers or corrected file; a row without what is needed names ``file:line`` and the key."""
    path = Path(path)
    if column is not None and column not in COLUMNS:
        raise DataError(f"--column: {column!r} is not one of {', '.join(COLUMNS)}")
    if not path.is_file():
        raise DataError(
            f"{path}: no such answers file (write one with `cyclealign eval reward`, `eval generate` "
            "or `aligner correct`)"
        )
    rows: list[AnswerRow] = []
    seen: set[str] = set()
    reader = JsonlReader(path)
    for n, row in reader:
        if not isinstance(row, dict):
            reader.reject(n, f"expected an object, got {type(row).__name__}")
            continue
        key = column or ("corrected" if is_corrected(row) else "answer")
        missing = [k for k in ("question", key) if not isinstance(row.get(k), str)]
        if missing:
            reader.reject(n, f"key {missing[0]!r} is missing or not a string")
            continue
        id = str(row.get("id", n))
        if id in seen:
            reader.reject(n, f"id {id!r} appears twice")
            continue
        seen.add(id)
        try:
            prompt = _prompt(row, id)
        except (KeyError, TypeError) as e:
            reader.reject(n, f"key 'messages' must be a list of {{role, content}} objects ({e!r})")
            continue
        rows.append(AnswerRow(id, str(row.get("subset") or "all"), row["question"], prompt, row[key]))
    if not rows:
        raise DataError(f"{path}: holds no answers")
    return rows


def answers_by_id(path: str | Path, column: str | None = None) -> dict[str, dict[str, Any]]:
    """Rows by id as the judge reads them: ``subset``, ``question``, ``answer``."""
    return {r.id: {"subset": r.subset, "question": r.question, "answer": r.answer} for r in read_answers(path, column)}


def answer_record(id: str, subset: str, prompt: Prompt, question: str, **fields: Any) -> dict[str, Any]:
    """One row of the answers layout (``fields``: ``answer``, or ``original`` and ``corrected``, and extras)."""
    return {
        "id": id,
        "subset": subset,
        "question": question,
        "messages": [{"role": m.role, "content": m.content} for m in prompt.messages],
        **fields,
    }


def write_answers(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    from cyclealign.infra.store import atomic_write_jsonl

    atomic_write_jsonl(Path(path), records)
    return Path(path)


def file_examples(
    path: Path, column: str | None, system: str | None, out_dir: Path | None
) -> tuple[list[Any], list[str], str, Path]:
    """An answers file as ``eval reward`` scores it: examples, answers, system name, output folder.

    The defaults keep two columns of one file apart: ``corrected`` in ``DIR/reward-corrected``, and so on.
    """
    from cyclealign.data.hh_rlhf import HHExample

    path = Path(path)
    rows = read_answers(path, column)
    examples = [HHExample(r.id, r.subset, r.prompt, "", "", f"{path}#{r.id}") for r in rows]
    name = system or (f"{path.stem}:{column}" if column else path.parent.resolve().name)
    return examples, [r.answer for r in rows], name, Path(out_dir or path.parent / f"reward-{column or path.stem}")


def pair_mode(path: str | Path, name_a: str, name_b: str) -> tuple[Path, str, str, str, str]:
    """One corrected file judged against itself: ``original`` as A, ``corrected`` as B."""
    path = Path(path)
    first = next(iter(JsonlReader(path)), (0, {}))[1] if path.is_file() else {}
    if not (isinstance(first, dict) and is_corrected(first)):
        raise DataError(
            f"{path}: one file is judged only when it holds original and corrected answers "
            "(from `cyclealign aligner correct`); otherwise give two answers files"
        )
    return (
        path,
        "original",
        "corrected",
        "upstream" if name_a == "A" else name_a,
        ("corrected" if name_b == "B" else name_b),
    )
