"""The functions behind ``cyclealign train``: ``train(config)`` and ``resume(run_dir)``."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from cyclealign import plugins
from cyclealign.callbacks import Callback
from cyclealign.errors import ConfigError
from cyclealign.offline.recipe import OfflineWork, offline_lifecycle
from cyclealign.offline.records import RankedExample, read_examples, split_heldout
from cyclealign.offline.schedule import Stage
from cyclealign.offline.settings import OfflineTrainConfig
from cyclealign.run.assembly import NO_PARTS, Parts
from cyclealign.run.lifecycle import RunLifecycle, RunResult


def build_recipe(
    config: OfflineTrainConfig,
    *,
    console: Console | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    examples: list[RankedExample] | None = None,
    parts: Parts = NO_PARTS,
) -> RunLifecycle:
    """Read the data (or take ``examples`` from Python), split off the held-out set, build the loss: the lifecycle."""
    o = config.offline
    if not o.source:
        raise ConfigError("offline.source: name the preference data (a .jsonl file or hh-rlhf:<dir>)")
    if examples is None:
        examples = read_examples(o.source, fmt=o.format, lenient=o.lenient)
    seed = config.data_seed
    if o.max_examples is not None and o.max_examples < len(examples):
        examples = random.Random(f"{seed}:sample").sample(examples, o.max_examples)
    train, heldout = split_heldout(examples, o.heldout_fraction, seed)
    if o.max_heldout is not None:
        heldout = heldout[: o.max_heldout]
    loss = parts.loss or plugins.create_loss(config.loss, num_samples=max(len(e.responses) for e in examples))
    work = OfflineWork(
        config,
        [Stage("train", train, o.epochs, o.max_steps)],
        heldout,
        loss,
        batch_size=o.batch_size,
        seed=seed,
        shuffle=o.shuffle,
        eval_every=o.eval_every,
        parts=parts,
    )
    return offline_lifecycle(work, console=console, resume=resume, callbacks=callbacks)


def train(
    config: OfflineTrainConfig,
    *,
    console: Console | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    **given: Any,
) -> RunResult:
    """Train the white-box model on preference data as configured (``resume``: continue ``run.dir``).

    ``callbacks`` watch the run (with the trackers of ``run.report_to``): start, steps, checkpoints, end.
    ``given``: ``examples`` and ``parts`` handed in from Python (``cyclealign.api.OfflineTrainer``).
    """
    return build_recipe(config, console=console, resume=resume, callbacks=callbacks, **given).run()


def resume(
    run_dir: Path,
    *,
    console: Console | None = None,
    changes: list[str] | None = None,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Continue the training run in ``run_dir`` with its own resolved config (``changes``: refused, by key)."""
    from cyclealign.run.resume_changes import load_resumed

    config = load_resumed(
        Path(run_dir), list(changes or []), OfflineTrainConfig, command="cyclealign train", allowed=()
    )
    return train(config, console=console, resume=True, callbacks=callbacks)
