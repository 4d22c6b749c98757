"""Aligner's weak-to-strong bootstrap in one resumable run: K rounds of correct → export → train.

Each round answers the questions with the current model (round 1: ``whitebox.model``),
lets the fixed corrector rewrite every answer (``correct.correct_file``), turns the
rewrites into preference pairs (``export.export_preferences``), trains the model on them
(``offline.train.train``, a whole ``cyclealign train`` run) and merges what it learned into
a plain model directory, which is the next round's upstream and starting point::

    run.json, config.yaml        status, the done steps with their numbers; the resolved settings
    summary.json, summary.md     per round: answers the corrector changed and kept, pairs, steps
    round-K/corrected.jsonl      question, original (the upstream's), corrected (the corrector's)
    round-K/preferences.jsonl    prompt, chosen = corrected, rejected = original
    round-K/train/               the ``cyclealign train`` run directory
    round-K/model/               the trained model (LoRA merged): the next upstream

A step is recorded only once its outputs are complete (``bootstrap_state.py``); a resume
skips recorded steps and redoes a cut-off one from scratch, so a killed run ends with
the same models as one that never stopped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field
from rich.console import Console

from cyclealign.aligner.bootstrap_state import STEPS, BootstrapDir, print_table, table_rows, write_summary
from cyclealign.config import LossConfig, Section
from cyclealign.errors import ConfigError, DataError
from cyclealign.offline.settings import OfflineRunConfig, OfflineTrainConfig

RESUME_KEYS = ("bootstrap.rounds",)  # what --resume may change: more (or fewer) rounds


class BootstrapSection(Section):
    """What each round corrects, and with what."""

    rounds: int = Field(
        2, ge=1, description="rounds of correct → export → train; each trained model is the next upstream"
    )
    questions: str = Field("", description="JSONL of questions ('question' or 'prompt', or 'messages'), every round")
    corrector: str = Field("", description="a corrector directory (`aligner train`), the same in every round")
    max_new_tokens: int = Field(256, ge=1, description="length of each correction (answers: whitebox.max_new_tokens)")
    batch_size: int = Field(8, ge=1, description="answers per generate call, upstream and corrector")
    lenient: bool = Field(False, description="skip (and count) malformed question rows instead of stopping")


class BootstrapLossConfig(LossConfig):
    name: str = Field("dpo", description="the loss each round trains with on its pairs: dpo, pro, rrhf, or a plugin's")


class BootstrapRunConfig(OfflineRunConfig):
    dir: Path = Path("runs/bootstrap")


class BootstrapConfig(OfflineTrainConfig):
    """``cyclealign train``'s sections (whitebox.model: the first upstream) plus ``bootstrap``.

    ``offline.source`` and ``run.dir`` of each round's training are set by the round.
    """

    loss: BootstrapLossConfig = BootstrapLossConfig()
    run: BootstrapRunConfig = BootstrapRunConfig()
    bootstrap: BootstrapSection = BootstrapSection()


@dataclass
class BootstrapResult:
    run_dir: Path
    rows: list[dict[str, Any]]
    model: Path | None  # the last finished round's model
    stopped: str | None = None


def check_settings(config: BootstrapConfig) -> None:
    """Cheap checks before the run directory is touched: the questions, the corrector, the first model."""
    from cyclealign.aligner.correct import read_questions
    from cyclealign.aligner.corrector import Corrector
    from cyclealign.whitebox.loading import resolve_model

    b = config.bootstrap
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("aligner bootstrap runs in one process; start it without a launcher (deepspeed, torchrun)")
    if not b.questions:
        raise ConfigError("bootstrap.questions: name the questions file (--questions)")
    if not b.corrector:
        raise ConfigError("bootstrap.corrector: name a corrector directory (--corrector)")
    if config.offline.source:
        raise ConfigError("offline.source: each round trains on its own preferences.jsonl; leave it unset")
    read_questions(b.questions, lenient=b.lenient)
    Corrector.check(b.corrector)
    resolve_model(config.whitebox.model, config.whitebox.gguf_file)


def round_training(config: BootstrapConfig, k: int, upstream: str, round_dir: Path) -> OfflineTrainConfig:
    """Round ``k``'s ``cyclealign train`` config: from ``upstream``, on its pairs, in ``round_dir/train``.

    ``run.overwrite`` replaces only a run's own files, so a cut-off training starts again from scratch.
    """
    data = config.model_dump(mode="json", exclude={"bootstrap"})
    data["whitebox"].update(model=upstream, gguf_file=data["whitebox"]["gguf_file"] if k == 1 else None)
    data["offline"]["source"] = str(round_dir / "preferences.jsonl")
    data["run"].update(dir=str(round_dir / "train"), overwrite=True)
    return OfflineTrainConfig.model_validate(data)


def _auto(value: str) -> str | None:
    return None if value == "auto" else value


def step_correct(config: BootstrapConfig, k: int, upstream: str, round_dir: Path, console: Console) -> dict:
    """The upstream's answers and the corrector's rewrites; how many it changed and kept."""
    from cyclealign.aligner.correct import correct_file
    from cyclealign.infra.store import read_jsonl
    from cyclealign.upstream import LocalModelUpstream

    wb, b = config.whitebox, config.bootstrap
    up = LocalModelUpstream(
        upstream,
        max_new_tokens=wb.max_new_tokens,
        batch_size=b.batch_size,
        device=_auto(wb.device),
        dtype=_auto(wb.dtype),
        gguf_file=wb.gguf_file if k == 1 else None,
        prompt_format=wb.prompt_format,
    )
    out = round_dir / "corrected.jsonl"
    correct_file(
        questions=b.questions,
        corrector=b.corrector,
        upstream=up,
        out=out,
        max_new_tokens=b.max_new_tokens,
        batch_size=b.batch_size,
        device=wb.device,
        dtype=wb.dtype,
        lenient=b.lenient,
        console=console if config.run.progress else None,
    )
    rows = read_jsonl(out)
    changed = sum(r["corrected"].strip() != r["original"].strip() for r in rows)
    return {"upstream": upstream, "answers": len(rows), "changed": changed, "kept": len(rows) - changed}


def step_export(k: int, round_dir: Path) -> dict:
    """The changed answers as preference pairs; a row with an empty answer or correction is left out and counted."""
    from cyclealign.aligner.preferences import export_preferences
    from cyclealign.infra.store import read_jsonl

    source = round_dir / "corrected.jsonl"
    texts = [(r["original"].strip(), r["corrected"].strip()) for r in read_jsonl(source)]
    if not any(o and c and o != c for o, c in texts):
        empty = sum(not o or not c for o, c in texts)
        raise DataError(
            f"round {k}: nothing to train on: in {source} the corrector changed {sum(o != c for o, c in texts)} "
            f"of {len(texts)} answers, and {empty} rows have an empty answer or correction"
        )
    report = export_preferences(source, round_dir / "preferences.jsonl", lenient=True)
    return {"pairs": report.written, "unchanged": report.unchanged, "empty": report.skipped}


def step_train(config: BootstrapConfig, k: int, upstream: str, round_dir: Path, console: Console) -> dict | None:
    """A whole ``cyclealign train`` run on the round's pairs; None when it was stopped (Ctrl+C)."""
    from cyclealign.offline.train import train

    result = train(round_training(config, k, upstream, round_dir), console=console)
    if result.totals.stopped:
        return None
    s = result.summary
    return {"steps": s["steps"], "heldout_before": s["heldout_before"], "heldout_after": s["heldout_after"]}


def step_model(config: BootstrapConfig, round_dir: Path) -> dict:
    """The trained weights as one plain model directory (a LoRA adapter merged in), written atomically."""
    from cyclealign.infra.store import atomic_replace_dir
    from cyclealign.whitebox.greedy import load_system

    wb = load_system(run_dir=round_dir / "train", device=_auto(config.whitebox.device), dtype=None)
    model = wb.model.merge_and_unload() if hasattr(wb.model, "merge_and_unload") else wb.model
    target = round_dir / "model"

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        wb.tokenizer.save_pretrained(tmp)

    atomic_replace_dir(target, fill)
    return {"path": str(target)}


def run_round(config: BootstrapConfig, store: BootstrapDir, k: int, upstream: str, console: Console) -> bool:
    """Round ``k``'s steps not yet done, each recorded when complete; False when training was stopped."""
    rounds, round_dir = config.bootstrap.rounds, store.round_dir(k)
    console.rule(f"[bold]round {k} of {rounds}[/bold] · upstream {upstream}")
    round_dir.mkdir(parents=True, exist_ok=True)
    for step in STEPS:
        if (info := store.done(k, step)) is not None:
            console.print(f"  round {k}/{rounds} · {step}: done before, skipped", highlight=False)
            continue
        console.print(f"  round {k}/{rounds} · {step} …", highlight=False)
        if step == "correct":
            info = step_correct(config, k, upstream, round_dir, console)
        elif step == "export":
            info = step_export(k, round_dir)
        elif step == "train":
            info = step_train(config, k, upstream, round_dir, console)
            if info is None:
                return False
        else:
            info = step_model(config, round_dir)
        store.mark(k, step, info)
        console.print(f"  round {k}/{rounds} · {step}: {describe(step, info)}", highlight=False)
    return True


def describe(step: str, info: dict) -> str:
    if step == "correct":
        return f"{info['answers']} answers, {info['changed']} changed by the corrector, {info['kept']} kept"
    if step == "export":
        return f"{info['pairs']} preference pairs"
    if step == "train":
        return f"{info['steps']} steps"
    return f"model in {info['path']}"


def _loop(config: BootstrapConfig, store: BootstrapDir, console: Console) -> BootstrapResult:
    upstream, stopped = config.whitebox.model, None
    try:
        for k in range(1, config.bootstrap.rounds + 1):
            if not run_round(config, store, k, upstream, console):
                stopped = "interrupted"
                break
            upstream = str(store.round_dir(k) / "model")
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        store.update_process(ended=status)
        store.set_status(status)
        raise
    rows = table_rows(store)
    write_summary(store, rows, config.bootstrap.rounds)
    store.update_process(ended=stopped or "completed")
    store.set_status(stopped or "completed")
    print_table(console, rows)
    if stopped:
        console.print(f"[yellow]stopped; continue with:[/yellow] cyclealign aligner bootstrap --resume {store.path}")
    last = next((store.path / r["model"] for r in reversed(rows) if r["model"]), None)
    return BootstrapResult(store.path, rows, last, stopped)


def run_bootstrap(config: BootstrapConfig, *, console: Console | None = None) -> BootstrapResult:
    """Start a bootstrap run in ``config.run.dir`` (which must be new or empty) and do every round."""
    console = console or Console()
    check_settings(config)
    store = BootstrapDir(config.run.dir)
    store.create(config.public_dict())
    return _loop(config, store, console)


def resume_bootstrap(
    run_dir: Path, *, console: Console | None = None, changes: list[str] | None = None
) -> BootstrapResult:
    """Continue the run in ``run_dir`` with its own settings; ``changes`` may only set ``bootstrap.rounds``."""
    from cyclealign.config import load_config

    console = console or Console()
    for change in changes or []:
        if change.split("=", 1)[0].strip() not in RESUME_KEYS:
            raise ConfigError(f"--set {change}: a resumed bootstrap may change only {', '.join(RESUME_KEYS)}")
    store = BootstrapDir(Path(run_dir))
    store.reopen()
    config = load_config(store.path / "config.yaml", [f"run.dir={store.path}", *(changes or [])], BootstrapConfig)
    if changes:
        store.note("changes", {"set": list(changes)})
        store.write_config(config.public_dict())
    console.print(f"resuming {store.path}: {sum(len(r) for r in store.rounds.values())} steps done before")
    return _loop(config, store, console)
