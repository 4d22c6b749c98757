"""Upstream answer, then the corrector's rewrite: `cyclealign aligner correct` and its Python API.

The upstream is anything ``cyclealign.upstream`` can open (a local model directory,
a litellm model with the oracle's retries, concurrency, cache and budget) or any
Python callable; the corrector rewrites each answer greedily.  The output is an
answers file in the corrected layout (``question``, ``original``, ``corrected``,
plus ``id``, ``subset``, ``messages``), which ``eval reward --answers`` scores per
column and ``eval judge FILE`` judges original against corrected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cyclealign.config import OracleConfig
from cyclealign.errors import DataError
from cyclealign.jsonl import JsonlReader
from cyclealign.protocols import Message, Prompt
from cyclealign.upstream import CallableUpstream, Question, Upstream, answer_all, as_prompt


@dataclass(frozen=True)
class QuestionRow:
    id: str
    subset: str
    prompt: Prompt


def read_questions(path: str | Path, *, lenient: bool = False) -> list[QuestionRow]:
    """Questions from JSONL: ``question`` (or ``prompt``) text, or ``messages``; ``id``/``subset`` optional.

    An answers file (``eval generate``'s) is a questions file too: its ``question`` and ``messages`` are used.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a questions file (JSONL)")
    if not path.is_file():
        raise DataError(f"{path}: no such questions file")
    reader = JsonlReader(path, lenient=lenient, hint="--lenient skips such rows")
    rows: list[QuestionRow] = []
    seen: set[str] = set()
    for n, row in reader:
        if not isinstance(row, dict):
            reader.reject(n, f"expected an object with a 'question', got {type(row).__name__}")
            continue
        id = str(row.get("id", n))
        messages = row.get("messages")
        text = row.get("question", row.get("prompt"))
        try:
            if messages:
                prompt = Prompt(id, tuple(Message(str(m["role"]), str(m["content"])) for m in messages))
            elif isinstance(text, str) and text.strip():
                prompt = Prompt.from_text(id, text)
            else:
                reader.reject(n, "key 'question' (or 'prompt') is missing, empty or not text")
                continue
        except (KeyError, TypeError):
            reader.reject(n, "key 'messages' must be a list of {role, content} objects")
            continue
        if id in seen:
            reader.reject(n, f"key 'id': {id!r} appears twice")
            continue
        seen.add(id)
        rows.append(QuestionRow(id, str(row.get("subset") or "all"), prompt))
    if not rows:
        raise DataError(f"{path}: holds no questions")
    return rows


def _upstream(upstream: Upstream | Callable[[str], str]) -> Upstream:
    return upstream if isinstance(upstream, Upstream) else CallableUpstream(upstream)


def correct(
    questions: Sequence[Question],
    upstream: Upstream | Callable[[str], str],
    corrector: Any,
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    console: Any = None,
) -> list[tuple[str, str]]:
    """``(original, corrected)`` for each question: the upstream's answer, then the corrector's greedy rewrite.

    ``upstream``: an :class:`~cyclealign.upstream.Upstream` or any ``fn(question) -> answer``;
    ``corrector``: a :class:`~cyclealign.aligner.Corrector` (or anything with its ``correct``) or its directory.
    """
    from cyclealign.aligner.corrector import Corrector

    if isinstance(corrector, str | Path):
        Corrector.check(corrector)  # before the upstream answers, which may be paid for
    up = _upstream(upstream)
    prompts = [as_prompt(q, i) for i, q in enumerate(questions)]
    originals = answer_all(up, prompts, console)
    if isinstance(corrector, str | Path):
        corrector = Corrector.load(corrector)
    corrected = _rewrite(
        corrector, [(p.text, a) for p, a in zip(prompts, originals, strict=True)], max_new_tokens, batch_size, console
    )
    return list(zip(originals, corrected, strict=True))


def _rewrite(corrector: Any, pairs: list[tuple[str, str]], max_new_tokens: int, batch_size: int, console: Any):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[bold]correcting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=console is None,
    )
    with progress:
        task = progress.add_task("correct", total=len(pairs))
        return corrector.correct(
            pairs,
            max_new_tokens,
            batch_size=batch_size,
            on_batch=lambda n: progress.update(task, advance=n),
        )


def correct_file(
    *,
    questions: str | Path,
    corrector: str | Path,
    upstream: str | Path | Upstream,
    out: str | Path,
    oracle: OracleConfig | None = None,
    api_base: str | None = None,
    max_new_tokens: int = 256,
    upstream_max_new_tokens: int = 256,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "auto",
    lenient: bool = False,
    console: Any = None,
) -> dict[str, Any]:
    """Answer a questions file upstream, correct every answer, write the corrected layout to ``out``.

    A chat upstream's answers are cached in ``upstream_cache.sqlite`` beside ``out``
    (unless ``oracle.cache_path`` says otherwise), so running again sends nothing.
    """
    from cyclealign.aligner.corrector import Corrector
    from cyclealign.data.hh_rlhf import dialogue_text
    from cyclealign.evaluate.answers import answer_record, write_answers
    from cyclealign.upstream import answer_and_close, open_upstream

    out = Path(out)
    rows = read_questions(questions, lenient=lenient)
    Corrector.check(corrector)  # before the upstream answers, which may be paid for
    up = upstream
    if isinstance(upstream, str | Path):
        cache_path = out.parent / "upstream_cache.sqlite"
        local = {"max_new_tokens": upstream_max_new_tokens, "batch_size": batch_size, "device": device, "dtype": dtype}
        up = open_upstream(upstream, oracle=oracle, api_base=api_base, cache_path=cache_path, **local)
    originals, usage = answer_and_close(up, [r.prompt for r in rows], console)  # frees memory for the corrector
    model = Corrector.load(corrector, device=device, dtype=dtype)
    pairs = [(r.prompt.text, a) for r, a in zip(rows, originals, strict=True)]
    corrected = _rewrite(model, pairs, max_new_tokens, batch_size, console)
    records = [
        answer_record(r.id, r.subset, r.prompt, dialogue_text(r.prompt), original=o, corrected=c, upstream=up.name)
        for r, o, c in zip(rows, originals, corrected, strict=True)
    ]
    write_answers(out, records)
    if console is not None:
        console.print(
            f"{len(records)} answers by {up.name}, corrected by {Path(corrector).name} → {out}"
            + (f" (upstream: {usage})" if usage else ""),
            highlight=False,
            soft_wrap=True,
        )
    return {"out": out, "count": len(records), "upstream": up.name, "usage": usage}
