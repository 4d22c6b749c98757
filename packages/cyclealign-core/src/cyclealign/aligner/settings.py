"""The configuration of ``cyclealign aligner train``: whitebox (the corrector), train, run, and ``aligner``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from cyclealign.aligner.prompt import DEFAULT_TEMPLATE
from cyclealign.config import RootConfig, RunConfig, Section, TrainConfig, WhiteboxConfig


class AlignerSection(Section):
    """The triples to learn from, the two stages, and the prompt stored with the corrector."""

    data: list[str] = Field(default_factory=list, description="JSON/JSONL files of question/answer/correction triples")
    runs: list[str] = Field(default_factory=list, description="cyclealign run directories to take triples from")
    warmup_epochs: int = Field(1, ge=0, description="passes over identity triples (correction = answer) first; 0: off")
    warmup_max_steps: int | None = Field(None, ge=0, description="at most this many warm-up steps (null: no cap)")
    epochs: int = Field(1, ge=0, description="passes over the correction triples")
    max_steps: int | None = Field(None, ge=0, description="at most this many correction steps (null: no cap)")
    batch_size: int = Field(4, ge=1, description="triples per training step")
    shuffle: bool = True
    seed: int | None = Field(None, description="order and held-out split; None: run.seed")
    heldout_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="triples kept out to measure the loss")
    max_heldout: int | None = Field(200, ge=1)
    lenient: bool = Field(False, description="skip (and count) malformed rows instead of stopping at the first")
    template: str = Field(DEFAULT_TEMPLATE, description="the corrector's prompt, with {question} and {answer}")
    output: Path | None = Field(None, description="where the corrector is saved; None: <run.dir>/corrector")


class CorrectorWhiteboxConfig(WhiteboxConfig):
    """The corrector reads a question and a whole answer: a longer prompt than the cycle's."""

    max_prompt_tokens: int = Field(768, ge=8, description="stored with the corrector; longer prompts keep their tail")


class CorrectorTrainConfig(TrainConfig):
    max_length: int = Field(1024, ge=16, description="prompt + correction tokens in a training sequence")


class CorrectorRunConfig(RunConfig):
    dir: Path = Path("runs/aligner")
    checkpoint_every: int = Field(50, ge=1, description="training steps between checkpoints")


class AlignerTrainConfig(RootConfig):
    """``cyclealign aligner train CONFIG``; ``whitebox.max_prompt_tokens`` is stored with the corrector."""

    whitebox: CorrectorWhiteboxConfig = CorrectorWhiteboxConfig()
    train: CorrectorTrainConfig = CorrectorTrainConfig()
    run: CorrectorRunConfig = CorrectorRunConfig()
    aligner: AlignerSection = AlignerSection()

    @property
    def output(self) -> Path:
        return self.aligner.output or Path(self.run.dir) / "corrector"
