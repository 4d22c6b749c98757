"""A run's rankings as preference data for other trainers.

Three formats, each written twice into ``OUT``: as a ``datasets`` folder
(``save_to_disk``, so ``datasets.load_from_disk("OUT/trl")`` opens it) and as JSONL
(``OUT/trl.jsonl``):

- ``trl``: ``prompt``, ``chosen``, ``rejected`` (TRL's DPO/ORPO/KTO-pair layout):
  every ordered pair of an interaction's ranking, or only best vs worst
  (``pairs="best-worst"``);
- ``ranked``: ``prompt``, ``responses`` (best first), ``sources`` (``oracle`` or
  ``whitebox`` for each): the whole list, for PRO/RRHF-style listwise training;
- ``aligner``: ``question``, ``answer``, ``correction``, ``correction_kind``: each
  white-box sample of an interaction beside the oracle's own answer to the prompt
  (Aligner's Q-A-C layout).  That answer was written for the prompt, not as an edit
  of the sample, so every row says so: ``correction_kind`` is ``"oracle_answer"``
  (Aligner's own data, where an annotator rewrote the answer, would be an edit).

Only interactions the oracle ranked are used; the ranking is the oracle's, with its
own answer first where the run trained on it (``cycle.include_oracle_response``).
A text that occurs twice in one ranking keeps its better place, so chosen and
rejected always differ.  Rows are deduplicated over all run directories (the same
content twice is kept once, and counted).  Every file is replaced atomically.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cyclealign.errors import ConfigError, RunDirError, SetupError
from cyclealign.infra.store import atomic_replace_dir, atomic_write_json, atomic_write_jsonl, read_jsonl
from cyclealign.user_files import require_writable_dir

FORMATS = ("trl", "ranked", "aligner")
PAIRS = ("all", "best-worst")
INSTALL_HINT = 'pip install "cyclealign-core[data]"'
COLUMNS: dict[str, dict[str, str]] = {  # name -> "str" or "list"
    "trl": {"prompt": "str", "chosen": "str", "rejected": "str"},
    "ranked": {"prompt": "str", "responses": "list", "sources": "list"},
    "aligner": {"question": "str", "answer": "str", "correction": "str", "correction_kind": "str"},
}
# What a cycle run's "correction" is: the oracle's own answer to the prompt.  The oracle saw all the samples but
# was asked for a better answer of its own, not to edit the one sample each row pairs it with.
ORACLE_ANSWER = "oracle_answer"


@dataclass(frozen=True)
class Ranked:
    """One interaction the oracle ranked: texts best first, who wrote each, the white-box samples."""

    prompt: str
    texts: tuple[str, ...]
    sources: tuple[str, ...]
    samples: tuple[str, ...]
    oracle_answer: str | None
    where: str = ""  # file:line of its record


@dataclass
class ExportReport:
    runs: list[str]
    interactions: int = 0
    ranked: int = 0
    unranked: int = 0  # the oracle gave no valid ranking: nothing to learn from
    rows: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise SetupError(f"exporting needs the datasets library: {INSTALL_HINT}") from None
    return datasets


def _includes_oracle(run_dir: Path) -> bool:
    """Whether the run trained on the oracle's own answer as the best candidate (the default: yes)."""
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return True
    value = (cfg.get("cycle") or {}).get("include_oracle_response", True) if isinstance(cfg, dict) else True
    return bool(value)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def read_run(run_dir: str | Path) -> tuple[list[Ranked], int]:
    """The ranked interactions of one run directory, and how many interactions it holds in all."""
    run_dir = Path(run_dir)
    path = run_dir / "interactions.jsonl"
    if not path.is_file():
        raise RunDirError(
            f"{run_dir}: holds no interactions.jsonl (is it a run directory written by `cyclealign run`?)"
        )
    with_oracle = _includes_oracle(run_dir)
    out: list[Ranked] = []
    records = read_jsonl(path)
    for n, rec in enumerate(records, 1):
        where = f"{path}:{n}"
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str) or not _strings(rec.get("candidates")):
            raise RunDirError(f"{where}: key 'prompt' (text) or 'candidates' (list of texts) is missing or malformed")
        oracle = rec.get("oracle")
        if not isinstance(oracle, dict):
            raise RunDirError(f"{where}: key 'oracle' is missing or not an object")
        order, cands = oracle.get("order"), rec["candidates"]
        if order is None:
            continue
        if not isinstance(order, list) or sorted(order) != list(range(len(cands))):
            raise RunDirError(f"{where}: key 'oracle.order' is not a ranking of the {len(cands)} candidates")
        answer = oracle.get("response")
        answer = answer if isinstance(answer, str) and answer.strip() else None
        texts, sources = [cands[i] for i in order], ["whitebox"] * len(order)
        if with_oracle and answer is not None:
            texts, sources = [answer, *texts], ["oracle", *sources]
        kept: dict[str, str] = {}
        for text, source in zip(texts, sources, strict=True):
            kept.setdefault(text, source)  # a repeated text keeps its better place
        out.append(Ranked(rec["prompt"], tuple(kept), tuple(kept.values()), tuple(cands), answer, where))
    return out, len(records)


def rows_for(fmt: str, item: Ranked, pairs: str = "all") -> list[dict[str, Any]]:
    """The rows one ranked interaction gives in format ``fmt``."""
    if fmt == "trl":
        t = item.texts
        if len(t) < 2:
            return []
        index = (
            [(0, len(t) - 1)]
            if pairs == "best-worst"
            else [(i, j) for i in range(len(t)) for j in range(i + 1, len(t))]
        )
        return [{"prompt": item.prompt, "chosen": t[i], "rejected": t[j]} for i, j in index]
    if fmt == "ranked":
        return [{"prompt": item.prompt, "responses": list(item.texts), "sources": list(item.sources)}]
    if fmt == "aligner":
        if item.oracle_answer is None:
            return []
        return [
            {"question": item.prompt, "answer": s, "correction": item.oracle_answer, "correction_kind": ORACLE_ANSWER}
            for s in item.samples
        ]
    raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")


def dedupe(rows: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Rows in first-seen order with exact repeats left out, and how many were left out."""
    seen: set[str] = set()
    kept: list[dict[str, Any]] = []
    dropped = 0
    for row in rows:
        key = json.dumps(row, sort_keys=True, ensure_ascii=False)
        if key in seen:
            dropped += 1
        else:
            seen.add(key)
            kept.append(row)
    return kept, dropped


def write_dataset(target: Path, fmt: str, rows: Sequence[dict[str, Any]]) -> None:
    """``rows`` as a ``datasets`` folder at ``target`` (swapped in atomically), columns even when empty."""
    ds = _datasets()
    kinds = COLUMNS[fmt]
    features = ds.Features(
        {c: ds.Sequence(ds.Value("string")) if k == "list" else ds.Value("string") for c, k in kinds.items()}
    )
    table = ds.Dataset.from_dict({c: [r[c] for r in rows] for c in kinds}, features=features)
    shown = ds.is_progress_bar_enabled()
    ds.disable_progress_bars()  # one line per format is said by the command; no bar per shard
    try:
        atomic_replace_dir(target, lambda tmp: table.save_to_disk(str(tmp)))
    finally:
        if shown:
            ds.enable_progress_bars()


def export_runs(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    formats: Sequence[str] = FORMATS,
    pairs: str = "all",
) -> ExportReport:
    """Write each format of the runs' rankings to ``out_dir/<format>/`` and ``out_dir/<format>.jsonl``."""
    formats = list(dict.fromkeys(formats))
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if pairs not in PAIRS:
        raise ConfigError(f"--pairs: {pairs!r} is not one of {', '.join(PAIRS)}")
    if not run_dirs:
        raise ConfigError("give at least one run directory")
    _datasets()  # a missing extra fails before anything is read
    out_dir = require_writable_dir(out_dir, "--out", ConfigError)
    report = ExportReport(runs=[str(r) for r in run_dirs])
    items: list[Ranked] = []
    for run_dir in run_dirs:
        ranked, total = read_run(run_dir)
        items += ranked
        report.interactions += total
        report.ranked += len(ranked)
    report.unranked = report.interactions - report.ranked
    try:
        for fmt in formats:
            rows, report.duplicates[fmt] = dedupe([row for item in items for row in rows_for(fmt, item, pairs)])
            report.rows[fmt] = len(rows)
            write_dataset(out_dir / fmt, fmt, rows)
            atomic_write_jsonl(out_dir / f"{fmt}.jsonl", rows)
        atomic_write_json(out_dir / "export.json", {"pairs": pairs, **report.__dict__})
    except OSError as e:  # a full disk, a folder made read-only meanwhile: said once, naming the place
        raise ConfigError(f"--out: cannot write {e.filename or out_dir} ({e.strerror or e})") from None
    return report
