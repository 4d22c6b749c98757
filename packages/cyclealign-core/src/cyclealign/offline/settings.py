"""The configuration of ``cyclealign train``: the run's own sections plus ``offline`` (the data and its schedule)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from cyclealign.config import LossConfig, RootConfig, RunConfig, Section, TrainConfig, WhiteboxConfig


class OfflineConfig(Section):
    """Which preference data to train on, and in what order."""

    source: str = Field(
        "", description="a .jsonl/.jsonl.gz file (TRL pairs, ranked lists, HH-RLHF rows) or 'hh-rlhf:<dir>[:split]'"
    )
    format: Literal["auto", "trl", "ranked", "hh-rlhf"] = Field(
        "auto", description="auto: told apart by each row's fields"
    )
    epochs: int = Field(1, ge=1, description="passes over the training examples")
    batch_size: int = Field(4, ge=1, description="prompts per training step (with all their responses)")
    shuffle: bool = Field(True, description="a fresh seeded order each epoch")
    seed: int | None = Field(None, description="order and held-out split; None: run.seed")
    heldout_fraction: float = Field(0.05, ge=0.0, lt=1.0, description="examples kept out to measure the margin")
    max_heldout: int | None = Field(200, ge=1, description="at most this many held-out examples (null: no cap)")
    max_examples: int | None = Field(None, ge=2, description="use only this many examples (seeded sample; null: all)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (null: all epochs)")
    eval_every: int = Field(0, ge=0, description="steps between held-out margin checks (0: only before and after)")
    lenient: bool = Field(False, description="skip (and count) malformed rows instead of stopping at the first")


class OfflineRunConfig(RunConfig):
    """The run section with this command's own defaults (a section given in YAML keeps them)."""

    dir: Path = Path("runs/offline")
    checkpoint_every: int = Field(50, ge=1, description="training steps between checkpoints")


class OfflineTrainConfig(RootConfig):
    """``cyclealign train CONFIG``: whitebox, loss, train and run as in ``cyclealign run``, plus ``offline``."""

    whitebox: WhiteboxConfig = WhiteboxConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    run: OfflineRunConfig = OfflineRunConfig()
    offline: OfflineConfig = OfflineConfig()

    @property
    def data_seed(self) -> int:
        return self.run.seed if self.offline.seed is None else self.offline.seed
