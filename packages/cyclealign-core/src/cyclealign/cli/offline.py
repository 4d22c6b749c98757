"""``cyclealign train``: a thin typer wrapper over :class:`cyclealign.api.trainers.OfflineTrainer`."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from cyclealign.cli.common import start_or_resume


def train_command(
    config: Annotated[
        Path | None,
        typer.Argument(help="YAML with sections whitebox, loss, train, run and offline (the data)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override one key: section.key=value (repeatable), e.g. offline.epochs=2."),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the training run in this directory from its checkpoint.")
    ] = None,
) -> None:
    """Train on preference data offline: TRL pairs, ranked lists or HH-RLHF, with PRO, RRHF, DPO or a loss plugin.

    Examples:

      cyclealign train configs/offline-example.yaml

      cyclealign train --set offline.source=pairs.jsonl --set loss.name=dpo --set run.dir=runs/dpo

      cyclealign train --set offline.source=hh-rlhf:data/hh-rlhf --set offline.max_steps=100

      cyclealign train --resume runs/dpo              # continue after a crash or Ctrl+C
    """
    from cyclealign.api.trainers import OfflineTrainer, resume_run, run_config  # the command uses the object API
    from cyclealign.offline.settings import OfflineTrainConfig

    result = start_or_resume(
        "train",
        config=config,
        set_=set_,
        resume=resume,
        start=partial(run_config, trainer=OfflineTrainer),
        resume_fn=partial(resume_run, trainer=OfflineTrainer),
        schema=OfflineTrainConfig,
    )
    if result.totals.stopped:
        raise typer.Exit(130)
