"""The inputs of ``cyclealign train``, read into one record: a prompt and its responses, best first.

Three row shapes, told apart by their fields (docs/data.md):

- TRL preference columns: ``prompt``, ``chosen``, ``rejected``; each a string or a
  list of chat messages (the prompt's ending with the user's turn, the replies'
  being the assistant's).  Without ``prompt``, message lists carry the whole
  dialogue and the prompt is their shared beginning (TRL's implicit prompt).
- Ranked lists: ``prompt`` (or ``messages``), ``responses`` best first, optional
  ``scores`` (higher is better, so they must not increase along the list).
- HH-RLHF rows (``chosen``/``rejected`` dialogues as text), in a file or
  ``hh-rlhf:<dir>[:split]`` for the upstream folder of four subsets; pairs are
  parsed and filtered by :mod:`cyclealign.data.hh_rlhf`.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cyclealign.data.hh_rlhf import FILTER_RULES, load_hh_rlhf, parse_pair
from cyclealign.data.prompt_file import parse_prompt_row
from cyclealign.errors import DataError
from cyclealign.jsonl import JsonlReader
from cyclealign.protocols import Candidate, LossBatch, Message, Prompt
from cyclealign.user_files import require_file

FORMATS = ("auto", "trl", "ranked", "hh-rlhf")


@dataclass(frozen=True)
class RankedExample:
    """One prompt and its responses, best first; ``scores`` (when given) say by how much."""

    id: str
    prompt: Prompt
    responses: tuple[str, ...]
    scores: tuple[float, ...] | None
    source: str  # file:line

    def rewards(self) -> tuple[float, ...]:
        """The scores, else n−1, …, 0 (the cycle's linear scheme: the best gets the most)."""
        return (
            self.scores
            if self.scores is not None
            else tuple(float(len(self.responses) - 1 - i) for i in range(len(self.responses)))
        )

    def loss_batch(self) -> LossBatch:
        cands = tuple(Candidate(text=r, source="data") for r in self.responses)
        return LossBatch(prompt=self.prompt, candidates=cands, rewards=self.rewards(), sft_index=0)


def _messages(value: Any, key: str) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise DataError(f'field "{key}" must be a string or a non-empty list of messages')
    out = []
    for k, m in enumerate(value):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("content"), str)
            or m.get("role")
            not in (
                "user",
                "assistant",
                "system",
            )
        ):
            raise DataError(f'"{key}"[{k}] needs "role" (user, assistant or system) and string "content"')
        out.append(Message(m["role"], m["content"]))
    return tuple(out)


def _reply(value: Any, key: str) -> str:
    """A completion: a string, or the assistant messages of a list (joined when there are several)."""
    if isinstance(value, str):
        text = value
    else:
        msgs = _messages(value, key)
        if any(m.role != "assistant" for m in msgs):
            raise DataError(f'field "{key}": a completion holds assistant messages only')
        text = "\n".join(m.content for m in msgs)
    if not text.strip():
        raise DataError(f'field "{key}" is empty')
    return text


def _prompt(row: dict, pid: str) -> Prompt:
    value = row.get("prompt")
    if isinstance(value, list):
        return parse_prompt_row({"id": pid, "messages": value}, pid)
    return parse_prompt_row(row, pid)


def _implicit(row: dict, pid: str) -> tuple[Prompt, str, str]:
    """TRL's implicit prompt: two message lists sharing everything but their final assistant turns."""
    chosen, rejected = _messages(row["chosen"], "chosen"), _messages(row["rejected"], "rejected")
    if chosen[:-1] != rejected[:-1] or chosen[-1].role != "assistant" or rejected[-1].role != "assistant":
        raise DataError('without "prompt", "chosen" and "rejected" must share all but their last (assistant) turn')
    if len(chosen) < 2 or chosen[-2].role != "user":
        raise DataError('without "prompt", the dialogues need a user turn before the replies')
    return Prompt(pid, chosen[:-1]), chosen[-1].content, rejected[-1].content


def parse_row(row: Any, pid: str, source: str, fmt: str = "auto") -> RankedExample:
    """One row in any of the formats; ``ValueError`` naming the field that is wrong."""
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object, got {type(row).__name__}")
    pid = str(row.get("id", pid))
    kind = (
        "ranked"
        if "responses" in row
        else "trl"
        if "prompt" in row or not isinstance(row.get("chosen"), str)
        else "hh-rlhf"
    )
    if "chosen" not in row and "responses" not in row:
        raise DataError('expected "chosen" and "rejected" (a preference pair) or "responses" (a ranked list)')
    if fmt != "auto" and kind != fmt:
        raise DataError(f"looks like a {kind} row, but offline.format is {fmt}")
    scores = None
    if kind == "ranked":
        prompt = _prompt(row, pid)
        responses = row["responses"]
        if not isinstance(responses, list) or len(responses) < 2:
            raise DataError('field "responses" must list at least two responses, best first')
        texts = tuple(_reply(r, f"responses[{k}]") for k, r in enumerate(responses))
        if row.get("scores") is not None:
            raw = row["scores"]
            if (
                not isinstance(raw, list)
                or len(raw) != len(texts)
                or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in raw)
            ):
                raise DataError(f'field "scores" must be {len(texts)} numbers, one per response')
            scores = tuple(float(s) for s in raw)
            if bad := [k for k, s in enumerate(scores) if not math.isfinite(s)]:
                raise ValueError(f'field "scores" must be finite numbers; scores[{bad[0]}] is {raw[bad[0]]}')
            if any(a < b for a, b in itertools.pairwise(scores)):
                raise DataError('field "scores" increases along "responses", which must be best first')
    elif "rejected" not in row:
        raise DataError('field "rejected" is missing')
    elif kind == "hh-rlhf":
        if not isinstance(row["rejected"], str):
            raise DataError('field "rejected" must be a string like "chosen"')
        parsed = parse_pair(row["chosen"], row["rejected"])
        if isinstance(parsed, str):
            raise DataError(f"unusable HH-RLHF pair: {FILTER_RULES[parsed]}")
        context, good, bad, _ = parsed
        prompt = Prompt(pid, tuple(Message("user" if r == "Human" else "assistant", c) for r, c in context))
        texts = (good, bad)
    elif "prompt" in row:
        prompt = _prompt(row, pid)
        texts = (_reply(row["chosen"], "chosen"), _reply(row["rejected"], "rejected"))
    else:
        prompt, good, bad = _implicit(row, pid)
        texts = (good, bad)
    if len(set(texts)) < len(texts):
        raise DataError("two responses are the same text, so they carry no preference")
    return RankedExample(pid, prompt, texts, scores, source)


def read_examples(source: str | Path, *, fmt: str = "auto", lenient: bool = False) -> list[RankedExample]:
    """Every example ``source`` holds: a ``.jsonl``/``.jsonl.gz`` file, or ``hh-rlhf:<dir>[:split]`` (train split)."""
    if fmt not in FORMATS:
        raise DataError(f"offline.format: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    text = str(source)
    if text.startswith("hh-rlhf:"):
        spec = text.split(":", 1)[1]
        root, _, split = spec.rpartition(":") if spec.endswith((":train", ":test")) else (spec, "", "train")
        examples, report = load_hh_rlhf(root, split=split, lenient=lenient)
        if report.malformed_skipped:
            warnings.warn(f"HH-RLHF {root} ({split}): {report.summary()}", stacklevel=2)
        return [RankedExample(e.id, e.prompt, (e.chosen, e.rejected), None, e.source) for e in examples]
    path = require_file(text, "offline.source")
    rows = JsonlReader(path, lenient=lenient, hint="offline.lenient=true skips and counts such rows")
    stem = path.name.split(".")[0]
    out = rows.parse(lambda n, row: parse_row(row, f"{stem}-{n}", f"{path}:{n}", fmt), "offline", "examples")
    ids = [e.id for e in out]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"offline.source: example id {dup!r} appears more than once in {path}")
    return out


def examples_from_rows(rows: Any, *, fmt: str = "auto", where: str = "train_dataset") -> list[RankedExample]:
    """Examples handed in from Python (dicts as a JSONL file holds them); ids ``example-<n>`` unless given."""
    out: list[RankedExample] = []
    for k, row in enumerate(rows):
        try:
            out.append(parse_row(row, f"example-{k + 1}", f"{where}[{k}]", fmt))
        except ValueError as e:
            raise DataError(f"{where}[{k}]: {e}") from None
    if not out:
        raise DataError(f"{where}: holds no examples")
    ids = [e.id for e in out]
    if len(set(ids)) != len(ids):
        raise DataError(f"{where}: example id {next(i for i in ids if ids.count(i) > 1)!r} appears more than once")
    return out


def split_heldout(
    examples: Sequence[RankedExample], fraction: float, seed: int
) -> tuple[list[RankedExample], list[RankedExample]]:
    """(train, held-out): a seeded ``fraction`` kept out for measuring the margin (at least one when > 0)."""
    import random

    order = list(range(len(examples)))
    random.Random(f"{seed}:heldout").shuffle(order)
    k = 0 if fraction <= 0 else max(1, round(fraction * len(examples)))
    if k >= len(examples):
        raise DataError(f"offline.heldout_fraction={fraction} leaves nothing to train on ({len(examples)} examples)")
    held = set(order[:k])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]
