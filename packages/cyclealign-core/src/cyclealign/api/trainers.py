"""Trainer objects for notebooks and scripts: ``CycleAlignTrainer``, ``OfflineTrainer``, ``AlignerTrainer``.

They take what a transformers/TRL user already holds (a model and tokenizer in
memory, a ``datasets.Dataset`` or a list, a Python function as the oracle, an
args object) and run exactly what the command line runs: the parts handed in
travel as :class:`cyclealign.run.assembly.Parts` into the same run functions
(``cyclealign.run.entry.run``, ``offline.train.train``,
``aligner.training.train_corrector``), so the run directory, checkpoints, resume
and the records are the command line's.  The three commands ``cyclealign run``, ``train`` and ``aligner train``
are built on these trainers.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from cyclealign.api.inputs import bind, load_args, model_name, object_name, rows_digest, rows_of, tokenizer_for
from cyclealign.callbacks import Callback
from cyclealign.config import IN_MEMORY, Config
from cyclealign.errors import ConfigError, RunDirError
from cyclealign.protocols import RankLoss
from cyclealign.run.assembly import Parts


class _Trainer:
    """What the three trainers share: args or a run to resume, the model, the loss, callbacks, saving."""

    schema: type = Config
    command = "cyclealign run"
    allowed: tuple[str, ...] = ()
    data_key = "data.source"

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        *,
        train_dataset: Any = None,
        args: Any = None,
        callbacks: Sequence[Callback] | None = None,
        resume_from: str | Path | None = None,
        resume_changes: Sequence[str] | None = None,
        console: Console | None = None,
    ) -> None:
        self.resuming = resume_from is not None
        if self.resuming and args is not None:
            raise ConfigError("args=: a resumed run keeps its own config.yaml; leave args out with resume_from=")
        self.config = self._config(args, resume_from, resume_changes)
        in_memory = model is not None and not isinstance(model, (str, Path))
        if tokenizer is not None and not in_memory:
            raise ConfigError("tokenizer=: only with a model given in memory (a model named by path brings its own)")
        bind(self.config, "whitebox.model", model_name(model), self.resuming, "model")
        if in_memory and hasattr(model, "peft_config") and not self.resuming:
            self.config.whitebox.finetune = "lora"  # a PeftModel trains its own adapter
        self.parts = Parts(model=model, tokenizer=tokenizer_for(model, tokenizer)) if in_memory else Parts()
        self.callbacks = list(callbacks or ())
        self.console = console
        self.result: Any = None
        if train_dataset is not None:
            self._bind_data(train_dataset)

    def _config(self, args: Any, resume_from: str | Path | None, changes: Sequence[str] | None) -> Any:
        if resume_from is None:
            if changes:
                raise ConfigError("resume_changes=: only with resume_from=")
            return load_args(args, self.schema)
        from cyclealign.run.resume_changes import load_resumed

        run_dir = Path(resume_from)
        return load_resumed(run_dir, list(changes or []), self.schema, command=self.command, allowed=self.allowed)

    def _bind_data(self, dataset: Any) -> None:
        """A path names the data in the config; rows are parsed here and recorded by their digest."""
        if isinstance(dataset, (str, Path)):
            bind(self.config, self.data_key, str(dataset), self.resuming, "train_dataset")
            return
        parsed = self._parse_rows(rows_of(dataset, "train_dataset"))
        bind(self.config, self.data_key, IN_MEMORY + rows_digest(parsed), self.resuming, "train_dataset")
        self._keep_rows(parsed)

    def _parse_rows(self, rows: list[Any]) -> list[Any]:
        raise NotImplementedError

    def _keep_rows(self, parsed: list[Any]) -> None:
        raise NotImplementedError

    def _bind_loss(self, loss: Any) -> None:
        if loss is None or isinstance(loss, str):
            bind(self.config, "loss.name", loss, self.resuming, "loss")
            return
        if not isinstance(loss, RankLoss):
            raise ConfigError(f"loss: expected a registered name or a RankLoss, got {type(loss).__name__}")
        bind(self.config, "loss.name", object_name(loss), self.resuming, "loss")
        self.parts = replace(self.parts, loss=loss)

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run.dir)

    def train(self) -> dict[str, Any]:
        """Run (or continue) the training; returns the summary (``summary.json``)."""
        self.result = self._start()
        return self.result.summary

    def _start(self) -> Any:
        raise NotImplementedError

    def _weights_dir(self) -> Path:
        return self.run_dir / "adapter"

    def save_model(self, output_dir: str | Path) -> Path:
        """Copy the trained weights (the adapter, or the full model) into ``output_dir``."""
        source = self._weights_dir()
        if not source.is_dir():
            raise RunDirError(f"{source}: no trained weights yet; call train() first")
        shutil.copytree(source, output_dir, dirs_exist_ok=True)
        return Path(output_dir)


class CycleAlignTrainer(_Trainer):
    """The cycle (``cyclealign run``) with objects: ``model``, ``tokenizer``, ``oracle``, ``train_dataset``, ``loss``.

    ``oracle``: a registered name, an ``Oracle``, a ``ChatBackend``, or a function
    ``(prompt, answers) -> order`` (indices into ``answers``, best first; or ``(order, better_answer)``).
    ``train_dataset``: a ``datasets.Dataset`` or list of prompts (strings, message lists, or
    ``{"prompt"|"messages", "id"?}`` rows), or a path. ``args``: a ``Config``, a dict or a YAML path.
    ``resume_from=RUN_DIR`` continues a run; every object it started with must be given again.
    """

    def __init__(self, model: Any = None, tokenizer: Any = None, *, oracle: Any = None, loss: Any = None, **kw: Any):
        from cyclealign.run.resume_changes import CHANGEABLE

        self.allowed = CHANGEABLE
        super().__init__(model, tokenizer, **kw)
        self._bind_loss(loss)
        if oracle is None or isinstance(oracle, str):
            bind(self.config, "oracle.name", oracle, self.resuming, "oracle")
        else:
            bind(self.config, "oracle.name", object_name(oracle), self.resuming, "oracle")
            self.parts = replace(self.parts, oracle=oracle)

    def _parse_rows(self, rows: list[Any]) -> list[Any]:
        from cyclealign.data.prompt_file import prompts_from_rows

        return prompts_from_rows(rows)

    def _keep_rows(self, parsed: list[Any]) -> None:
        self.parts = replace(self.parts, prompts=parsed)

    def _start(self) -> Any:
        from cyclealign.run.entry import run

        return run(self.config, console=self.console, resume=self.resuming, callbacks=self.callbacks, parts=self.parts)


class OfflineTrainer(_Trainer):
    """Offline preference training (``cyclealign train``): TRL pairs or ranked lists as rows, or a path."""

    command = "cyclealign train"
    data_key = "offline.source"

    def __init__(self, model: Any = None, tokenizer: Any = None, *, loss: Any = None, **kw: Any) -> None:
        from cyclealign.offline.settings import OfflineTrainConfig

        self.schema = OfflineTrainConfig
        self.examples: list[Any] | None = None
        super().__init__(model, tokenizer, **kw)
        self._bind_loss(loss)

    def _parse_rows(self, rows: list[Any]) -> list[Any]:
        from cyclealign.offline.records import examples_from_rows

        return examples_from_rows(rows, fmt=self.config.offline.format)

    def _keep_rows(self, parsed: list[Any]) -> None:
        self.examples = parsed

    def _start(self) -> Any:
        from cyclealign.offline.train import train

        given = {"parts": self.parts, "examples": self.examples}
        return train(self.config, console=self.console, resume=self.resuming, callbacks=self.callbacks, **given)


class AlignerTrainer(_Trainer):
    """The Aligner corrector (``cyclealign aligner train``): ``question``/``answer``/``correction`` rows, or a path."""

    command = "cyclealign aligner train"
    data_key = "aligner.data"

    def __init__(self, model: Any = None, tokenizer: Any = None, **kw: Any) -> None:
        from cyclealign.aligner.settings import AlignerTrainConfig

        self.schema = AlignerTrainConfig
        self.triples: list[Any] | None = None
        super().__init__(model, tokenizer, **kw)

    def _bind_data(self, dataset: Any) -> None:
        if isinstance(dataset, (str, Path)):
            dataset = [dataset]
        if isinstance(dataset, list) and all(isinstance(d, (str, Path)) for d in dataset):
            if not self.resuming:
                self.config.aligner.data = [str(d) for d in dataset]
            return
        super()._bind_data(dataset)
        if not self.resuming:
            self.config.aligner.runs = []  # the triples given are all the data

    def _parse_rows(self, rows: list[Any]) -> list[Any]:
        from cyclealign.aligner.triples import triples_from_rows

        return triples_from_rows(rows)

    def _keep_rows(self, parsed: list[Any]) -> None:
        self.triples = parsed

    def _start(self) -> Any:
        from cyclealign.aligner.training import train_corrector

        given = {"parts": self.parts, "triples": self.triples, "callbacks": self.callbacks}
        return train_corrector(self.config, console=self.console, resume=self.resuming, **given)

    def _weights_dir(self) -> Path:
        return Path(self.config.output)


def run_config(config: Any, *, console: Console | None = None, trainer: type[_Trainer] = CycleAlignTrainer) -> Any:
    """``cyclealign run|train|aligner train CONFIG``: the trainer built from a config; returns the ``RunResult``."""
    built = trainer(args=config, console=console)
    built.train()
    return built.result


def resume_run(
    run_dir: Path,
    *,
    console: Console | None = None,
    changes: list[str] | None = None,
    trainer: type[_Trainer] = CycleAlignTrainer,
) -> Any:
    """``cyclealign run|train|aligner train --resume RUN_DIR``: the trainer continuing the run; the ``RunResult``."""
    built = trainer(resume_from=run_dir, resume_changes=changes, console=console)
    built.train()
    return built.result


__all__ = ["AlignerTrainer", "CycleAlignTrainer", "OfflineTrainer", "resume_run", "run_config"]
