"""Checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is one directory, ``checkpoint/``, swapped in atomically:

    state.json          prompt cursor, counters, record counts, config fingerprint
    rng.safetensors     torch RNG state (numpy and python states live in state.json)
    trainer/            trainable weights (safetensors) and optimizer state (weights-only)

The run's ``interactions.jsonl`` and ``demos.jsonl`` are flushed *before* the
checkpoint is swapped in, and the checkpoint records how many lines of each it
covers: on resume, lines past those counts (work after the checkpoint) are
dropped and redone, and the oracle cache makes the redone calls free.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cyclealign.store import RunDir, RunDirError, atomic_replace_dir

STATE_FORMAT = 1


@dataclass
class CheckpointState:
    prompts_done: int
    n_interactions: int
    n_demos: int
    totals: dict[str, Any]
    config_fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)


def config_fingerprint(config: dict[str, Any]) -> str:
    """A hash of what determines the run's results (the run section's bookkeeping excluded)."""
    relevant = {k: v for k, v in config.items() if k != "run"}
    relevant["seed"] = config.get("run", {}).get("seed")
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def save_checkpoint(store: RunDir, trainer: Any, state: CheckpointState) -> None:
    """Flush the records, then atomically replace ``checkpoint/`` with the current state."""
    from safetensors.torch import save_file

    store.flush()
    rng, torch_rng = _rng_state()
    state.extra = {**state.extra, "rng": rng, "format": STATE_FORMAT}

    def fill(tmp: Path) -> None:
        trainer.save_state(tmp / "trainer")
        save_file({"torch": torch_rng}, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps(asdict(state), sort_keys=True))

    atomic_replace_dir(store.path / "checkpoint", fill)


def has_checkpoint(store: RunDir) -> bool:
    return (store.path / "checkpoint" / "state.json").exists()


def load_checkpoint(store: RunDir, trainer: Any, fingerprint: str) -> CheckpointState:
    """Restore trainer and RNG states; trim the records to what the checkpoint covers."""
    from safetensors.torch import load_file

    from cyclealign.store import load_demos, read_jsonl

    ckpt = store.path / "checkpoint"
    try:
        raw = json.loads((ckpt / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunDirError(f"{ckpt / 'state.json'}: no readable checkpoint ({e})") from None
    state = CheckpointState(**raw)
    if state.config_fingerprint != fingerprint:
        raise RunDirError(
            f"{store.path}: the checkpoint was written with a different configuration "
            f"({state.config_fingerprint} vs {fingerprint}); resume with the run's own config.yaml"
        )
    trainer.load_state(ckpt / "trainer")
    _set_rng_state(state.extra["rng"], load_file(str(ckpt / "rng.safetensors"))["torch"])
    store.interactions = read_jsonl(store.path / "interactions.jsonl")[: state.n_interactions]
    store.demos = load_demos(store.path / "demos.jsonl")[: state.n_demos]
    if len(store.interactions) != state.n_interactions or len(store.demos) != state.n_demos:
        raise RunDirError(f"{store.path}: interactions.jsonl or demos.jsonl is shorter than the checkpoint says")
    return state
