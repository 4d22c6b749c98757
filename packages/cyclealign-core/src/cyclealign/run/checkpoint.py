"""Checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is one directory, ``checkpoint/``, swapped in atomically:

    state.json          units done (prompts or steps), counters, record counts, config fingerprint
    rng.safetensors     torch RNG state (numpy and python states live in state.json)
    trainer/            trainable weights (safetensors) and optimizer state (weights-only)
    manifest.json       every other file's size and sha256, written last

Two generations are kept: the one it replaces becomes ``checkpoint.prev/``.  A
resume verifies every file against the manifest and, when the newest is damaged
(a disk error, a truncated copy), falls back to the previous one, redoing the work
between them (:mod:`cyclealign.run.checkpoint_files`).

The run's journals (``interactions.jsonl`` and ``demos.jsonl``, or ``steps.jsonl``)
are flushed *before* the checkpoint is swapped in, and the checkpoint records how
many lines of each it covers: on resume, lines past those counts (work after the checkpoint) are
dropped and redone, and the oracle cache makes the redone calls free.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cyclealign.errors import RunDirError
from cyclealign.infra.store import TEMP_PREFIX, RunDir, atomic_replace_dir, swap_in
from cyclealign.run.checkpoint_files import CURRENT, PREVIOUS, choose_checkpoint, write_manifest

STATE_FORMAT = 1


@dataclass
class CheckpointState:
    """What ``state.json`` holds: the units done (the cycle's prompts, training's steps) and the journal lengths."""

    units_done: int
    n_interactions: int
    n_demos: int
    totals: dict[str, Any]
    config_fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)
    n_steps: int | None = None  # None: a checkpoint from before steps were counted here (its units are its steps)

    @classmethod
    def from_json(cls, prompts_done: int | None = None, **fields: Any) -> CheckpointState:
        """A state read back; checkpoints of earlier versions call their units ``prompts_done``."""
        if prompts_done is not None:
            fields.setdefault("units_done", prompts_done)
        return cls(**fields)


# What a resume may change (``--resume RUN --set KEY=VALUE``): how much the oracle may spend and how fast it is
# asked.  They change no answer, so they are left out of the fingerprint.
RESUME_KEYS = ("budget_usd", "concurrency", "requests_per_minute", "timeout_s", "max_retries")
WAIT_KEYS = ("collective_timeout_s",)  # how long processes wait on each other: no answer depends on it either


def _without(config: dict[str, Any], section: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(config.get(section), dict):
        return config
    return {**config, section: {k: v for k, v in config[section].items() if k not in keys}}


def fingerprinted(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a config that determines the run's results (bookkeeping and the oracle's pacing excluded)."""
    relevant = {k: v for k, v in config.items() if k != "run"}
    relevant["seed"] = config.get("run", {}).get("seed")
    return _without(_without(relevant, "oracle", RESUME_KEYS), "train", WAIT_KEYS)


def _digest(relevant: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_fingerprint(config: dict[str, Any]) -> str:
    """A hash of :func:`fingerprinted`: a checkpoint continues only under the config it was written with."""
    return _digest(fingerprinted(config))


def legacy_fingerprint(config: dict[str, Any]) -> str:
    """The hash checkpoints of earlier versions carry (the oracle's pacing keys included)."""
    relevant = {k: v for k, v in config.items() if k != "run"}
    relevant["seed"] = config.get("run", {}).get("seed")
    return _digest(_without(relevant, "train", WAIT_KEYS))


def reseed_all(key: str) -> None:
    """Seed every RNG the white-box touches from a string key (exact, resumable sampling)."""
    import numpy as np
    import torch

    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> tuple[dict[str, Any], Any]:
    import numpy as np
    import torch

    py = random.getstate()
    np_state = np.random.get_state()
    return (
        {
            "python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        },
        torch.get_rng_state(),
    )


def _set_rng_state(states: dict[str, Any], torch_state: Any) -> None:
    import numpy as np
    import torch

    v, internal, gauss = states["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch_state)


def save_checkpoint(store: RunDir, trainer: Any, state: CheckpointState, lockstep: Any = None) -> None:
    """Flush the records, then atomically swap in a new ``checkpoint/`` (the old one becomes ``checkpoint.prev/``).

    With a data-parallel ``lockstep`` every process writes its part of the trainer
    state into one staging directory; the first process writes the rest and swaps it in.
    """
    from safetensors.torch import save_file

    store.flush()
    rng, torch_rng = _rng_state()
    state.extra = {**state.extra, "rng": rng, "format": STATE_FORMAT}

    def fill(tmp: Path) -> None:
        save_file({"torch": torch_rng}, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps(asdict(state), sort_keys=True))
        write_manifest(tmp, state.units_done)  # last: a checkpoint with a manifest is complete

    target, keep = store.path / CURRENT, store.path / PREVIOUS
    if lockstep is None or lockstep.world_size == 1:

        def fill_all(tmp: Path) -> None:
            trainer.save_state(tmp / "trainer")
            fill(tmp)

        atomic_replace_dir(target, fill_all, keep=keep)
        return
    staging = store.path / f"{TEMP_PREFIX}checkpoint.staging"
    if store.writer:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    lockstep.barrier()
    trainer.save_state(staging / "trainer")
    lockstep.barrier()
    if store.writer:
        fill(staging)
        swap_in(staging, target, keep=keep)
    lockstep.barrier()


def read_checkpoint(store: RunDir, fingerprint: str, *, config: dict[str, Any] | None = None) -> CheckpointState | None:
    """The newest intact checkpoint's state (no weights), or None when there is none.

    A damaged newest checkpoint falls back to the previous one (``state.fallback``
    says which file was damaged and what is redone); another config's checkpoint is
    refused, naming the keys that changed when ``config`` (the run's public dict) is given.
    """
    accepted = {fingerprint, *([legacy_fingerprint(config)] if config is not None else [])}

    def check(state: CheckpointState) -> None:
        if state.config_fingerprint in accepted:
            return
        saved = state.extra.get("config")
        changed = _changes(saved, fingerprinted(config)) if saved is not None and config is not None else ""
        raise RunDirError(
            f"{store.path}: the checkpoint was written with a different configuration "
            f"({changed or f'{state.config_fingerprint} vs {fingerprint}'}); resume with the run's own config.yaml "
            f"(only oracle.{', oracle.'.join(RESUME_KEYS)} may change: --resume RUN --set KEY=VALUE)"
        )

    return choose_checkpoint(store.path, CheckpointState.from_json, check)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in value.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _changes(saved: dict[str, Any], now: dict[str, Any]) -> str:
    """``key old → new`` for every key that differs (``seed`` is ``run.seed``)."""
    a, b = _flat(json.loads(json.dumps(saved, default=str))), _flat(json.loads(json.dumps(now, default=str)))
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return "; ".join(f"{'run.seed' if k == 'seed' else k}: {a.get(k)!r} → {b.get(k)!r}" for k in keys)


def load_checkpoint(store: RunDir, trainer: Any, state: CheckpointState) -> None:
    """Restore trainer and RNG states from ``state``'s checkpoint; trim the records to what it covers."""
    from safetensors.torch import load_file

    from cyclealign.infra.store import load_demos, read_jsonl

    ckpt = getattr(state, "directory", store.path / CURRENT)
    trainer.load_state(ckpt / "trainer")
    _set_rng_state(state.extra["rng"], load_file(str(ckpt / "rng.safetensors"))["torch"])
    n_steps = state.units_done if state.n_steps is None else state.n_steps
    store.interactions = read_jsonl(store.path / "interactions.jsonl")[: state.n_interactions]
    store.demos = load_demos(store.path / "demos.jsonl")[: state.n_demos]
    store.steps = read_jsonl(store.path / "steps.jsonl")[:n_steps] if "steps" in store.journals else []
    wanted = {"interactions": state.n_interactions, "demos": state.n_demos, "steps": n_steps}
    short = [f"{name}.jsonl" for name in store.journals if len(getattr(store, name)) != wanted[name]]
    if short:
        raise RunDirError(f"{store.path}: {' and '.join(short)} is shorter than the checkpoint says")


def note_fallback(store: RunDir, state: CheckpointState | None, console: Any, unit: str) -> None:
    """Say (console, run.json ``fallbacks``) that a damaged checkpoint was skipped, and how much is redone."""
    from rich.markup import escape

    fallback = getattr(state, "fallback", None)
    if state is None or not fallback:
        return
    before, after = fallback["instead_of"], fallback["resumed_after"]
    redone = None if before is None else before - after
    lost = "" if before is None else f" instead of {before}: {redone} {unit[:-1] if redone == 1 else unit} redone"
    console.print(
        f"[yellow]warning: damaged checkpoint file {escape(fallback['damaged'][0])}; resumed from the previous "
        f"checkpoint, after {after} {unit}{lost}[/yellow]",
        soft_wrap=True,
    )
    store.note("fallbacks", {**fallback, "redone": redone})


class Checkpointer:
    """The cadence: every ``every`` units once ``interval_s`` seconds have passed, at the last unit, when forced.

    A unit is whatever the run counts (the cycle's prompts, training's steps).  The
    interval keeps checkpoint writes out of the steady state (a wave of a fast
    cycle may take a second): a crash then redoes at most ``interval_s`` of work,
    and the oracle calls of that work come back from the cache, unpaid.
    """

    def __init__(
        self,
        store: RunDir,
        trainer: Any,
        *,
        fingerprint: str,
        every: int,
        total: int,
        start: int,
        lockstep: Any = None,
        interval_s: float = 0.0,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.config = fingerprinted(config) if config is not None else None  # to name what changed, if it does
        self.lockstep = lockstep
        self.trainer = trainer
        self.fingerprint = fingerprint
        self.every = every
        self.total = total
        self.last_units = start
        self.interval_s = interval_s
        self.last_time = time.monotonic()

    def maybe_save(
        self, units: int, totals: dict[str, Any], *, force: bool = False, extra: dict[str, Any] | None = None
    ) -> bool:
        """Save when due (``units``: done so far; ``totals``: the run's counters; ``extra``: what the unit of
        work keeps besides, e.g. the oracle's spend); True when it saved."""
        waited = time.monotonic() - self.last_time >= self.interval_s
        due = (units - self.last_units >= self.every and waited) or units == self.total
        if self.lockstep is not None:
            due = self.lockstep.any(due)  # clocks differ between processes: one says so, all save
        if not (due or force):
            return False
        state = CheckpointState(
            units_done=units,
            n_interactions=len(self.store.interactions),
            n_demos=len(self.store.demos),
            n_steps=len(getattr(self.store, "steps", ())),
            totals=totals,
            config_fingerprint=self.fingerprint,
            extra={**(extra or {}), **({"config": self.config} if self.config is not None else {})},
        )
        save_checkpoint(self.store, self.trainer, state, self.lockstep)
        self.last_units = units
        self.last_time = time.monotonic()
        return True
