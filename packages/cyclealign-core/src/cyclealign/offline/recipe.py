"""The offline training recipe: ``setup`` / ``train`` / ``save`` / ``cleanup``, resumable at any step.

It reuses the cycle's parts unchanged: the white-box model and its
``PolicyTrainer`` (losses as plugins, prefix sharing, the torch or DeepSpeed
backend), the run directory (``store.RunDir``, atomic writes), checkpoints
(``checkpoint.Checkpointer``: weights, optimizer, RNG, step count), the
``Lockstep`` between data-parallel processes and the session's ``StopFlag``
(first Ctrl+C/SIGTERM finishes the step and saves).  The run directory holds
``config.yaml``, ``run.json``, ``steps.jsonl`` (one record per step),
``summary.json`` (held-out numbers before and after), ``checkpoint/`` and the
weights (``adapter/``, or what the ``save`` hook writes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cyclealign.callbacks import Callback
from cyclealign.infra import process_group
from cyclealign.infra.lockstep import lockstep_for
from cyclealign.infra.store import RunDir, atomic_write_jsonl, read_jsonl
from cyclealign.offline.margin import heldout_margin
from cyclealign.offline.records import RankedExample
from cyclealign.offline.schedule import Schedule, Stage
from cyclealign.protocols import RankLoss
from cyclealign.run import assembly
from cyclealign.run.checkpoint import Checkpointer, config_fingerprint, load_checkpoint, note_fallback, read_checkpoint
from cyclealign.run.session import StopFlag
from cyclealign.run.summary import across_processes

Evaluate = Callable[[Any, Sequence[RankedExample]], dict[str, float] | None]


@dataclass
class OfflineTotals:
    """What a checkpoint carries besides the weights: the step count and the numbers measured before training."""

    steps: int = 0
    examples_seen: int = 0
    heldout_before: dict[str, float] | None = None
    stopped: str | None = None
    last_parts: dict[str, float] = field(default_factory=dict)

    @property
    def prompts(self) -> int:  # the Checkpointer's cadence counts units of work; here they are steps
        return self.steps


class StepsDir(RunDir):
    """A run directory whose journal is ``steps.jsonl``: flushed (atomically) just before each checkpoint."""

    def __init__(self, path: Path, **kw: Any) -> None:
        super().__init__(path, **kw)
        self.steps: list[dict[str, Any]] = []

    def flush(self) -> None:
        if self.writer:
            atomic_write_jsonl(self.path / "steps.jsonl", self.steps)


@dataclass
class OfflineResult:
    run_dir: Path
    totals: OfflineTotals
    summary: dict[str, Any]


class OfflineRecipe:
    """One training run over ``stages`` (see ``schedule.py``), measured on ``heldout`` before and after.

    ``config`` has the sections ``whitebox``, ``train`` and ``run`` (``OfflineTrainConfig``
    or the corrector's config); ``evaluate`` measures the held-out set (the preference
    margin by default); ``save`` writes the trained weights (the adapter/model by default).
    """

    def __init__(
        self,
        config: Any,
        stages: Sequence[Stage],
        heldout: Sequence[RankedExample],
        loss: RankLoss,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        eval_every: int = 0,
        evaluate: Evaluate = heldout_margin,
        save: Callable[[Any, Any, RunDir], None] | None = None,
        console: Console | None = None,
        resume: bool = False,
        command: str = "cyclealign train",
        parts: assembly.Parts = assembly.NO_PARTS,
        callbacks: Sequence[Callback] | None = None,
    ) -> None:
        self.config = config
        self.parts = parts  # a model handed in from Python (the object API)
        self.callbacks = list(callbacks or ())
        self.schedule = Schedule(stages, batch_size, seed=seed, shuffle=shuffle)
        self.heldout = list(heldout)
        self.loss = loss
        self.eval_every = eval_every
        self.evaluate = evaluate
        self.save_hook = save
        self.resume = resume
        self.command = command
        self.lockstep = lockstep_for(config.train.backend, config.train.collective_timeout_s)
        self.rank, self.world_size = self.lockstep.rank, self.lockstep.world_size
        self.console = console or Console()
        if self.rank:
            self.console = Console(quiet=True)
        self.store = StepsDir(config.run.dir, writer=self.rank == 0, world_size=self.world_size)
        self.public = config.public_dict()
        self.fingerprint = config_fingerprint(self.public)
        self.stop = StopFlag(self.console)
        self.status = "failed"
        self.started = time.monotonic()

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        from cyclealign.whitebox.loading import resolve_model

        cfg, store = self.config, self.store
        if self.parts.model is None:  # cheap checks before the directory is touched
            resolve_model(cfg.whitebox.model, cfg.whitebox.gguf_file)
        if self.resume:
            store.require_existing()
        else:
            store.check_free(overwrite=cfg.run.overwrite)
        state = read_checkpoint(store, self.fingerprint, config=self.public) if self.resume else None
        note_fallback(store, state, self.console, unit="steps")
        store.start_process()
        if self.resume:
            store.set_status("running")
        else:
            store.prepare(self.public, overwrite=cfg.run.overwrite)
        self.lockstep.barrier()
        try:
            with self.console.status("loading the white-box model…"):
                self.whitebox, self.trainer = assembly.build_whitebox(cfg, self.loss, self.lockstep, self.parts)
            self.checkpoints = Checkpointer(
                store,
                self.trainer,
                fingerprint=self.fingerprint,
                every=cfg.run.checkpoint_every,
                total_prompts=self.schedule.total,
                start_prompts=state.prompts_done if state else 0,
                lockstep=self.lockstep,
                interval_s=cfg.run.checkpoint_interval_s,
                config=self.public,
            )
            self.load(state)
        except BaseException:
            store.set_status("failed")
            raise

    def load(self, state: Any) -> None:
        """Start fresh (measure the held-out set, write the first checkpoint) or restore ``state``."""
        if state is None:
            self.store.interactions, self.store.demos = [], []
            self.totals = OfflineTotals()
            with self.console.status("measuring the held-out set…"):
                self.totals.heldout_before = self.evaluate(self.trainer, self.heldout)
            self.checkpoint(force=True)
            return
        load_checkpoint(self.store, self.trainer, state)
        self.totals = OfflineTotals(**{**state.totals, "stopped": None})
        self.store.steps = read_jsonl(self.store.path / "steps.jsonl")[: self.totals.steps]
        self.console.print(f"resuming {self.store.path} after {self.totals.steps} of {self.schedule.total} steps")

    def checkpoint(self, force: bool = False) -> None:
        """The checkpoint when due (``steps.jsonl`` is flushed first: a checkpoint covers its first ``steps`` lines)."""
        if self.checkpoints.maybe_save(self.totals, {}, force=force):
            self.store.update_process()  # this process's wall time, should it be killed before the end
            self.store.set_status("running")

    # ------------------------------------------------------------------ train
    def train(self) -> OfflineTotals:
        progress = Progress(
            TextColumn("[bold]training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps · {task.fields[stage]} · loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.config.run.progress,
        )
        t = self.totals
        with progress, self.stop.installed():
            task = progress.add_task("train", total=self.schedule.total, completed=t.steps, stage="–", loss="–")
            while t.steps < self.schedule.total:
                if self.lockstep.any(self.stop()):
                    t.stopped = "interrupted"
                    break
                position, examples = self.schedule.batch(t.steps)
                mine = examples[self.rank :: self.world_size]  # this process's share of the step's prompts
                parts = self.trainer.step([ex.loss_batch() for ex in mine])
                t.steps += 1
                t.examples_seen += len(examples)
                t.last_parts = {k: float(v) for k, v in parts.items()}
                record = {"step": t.steps, **asdict(position), "examples": [ex.id for ex in examples], **t.last_parts}
                if self.eval_every and t.steps % self.eval_every == 0 and t.steps < self.schedule.total:
                    record["heldout"] = self.evaluate(self.trainer, self.heldout)
                self.store.steps.append(record)
                progress.update(task, advance=1, stage=position.stage, loss=f"{parts.get('total', 0.0):.3f}")
                self.checkpoint()
        if t.stopped:
            self.checkpoint(force=True)
            self.status = "interrupted"
        else:
            flush = getattr(self.trainer.backend, "flush", None)
            if flush is not None:
                flush()  # the last steps of an unfinished accumulation (train.grad_accum) still update
            self.status = "completed"
        return t

    # ------------------------------------------------------------------ save / cleanup
    def save(self) -> None:
        """The trained weights: the ``save`` hook's way, else the adapter (or full model) in ``adapter/``."""
        from cyclealign.whitebox.trainer import save_trainable

        if self.save_hook is not None:
            self.save_hook(self.whitebox, self.trainer, self.store)
        else:
            save_trainable(self.whitebox, self.store.adapter_dir, self.trainer)

    def cleanup(self) -> dict[str, Any]:
        """Always: the step records, the held-out numbers after training, the weights, the summary, the status."""
        t = self.totals
        self.store.flush()
        after = self.evaluate(self.trainer, self.heldout) if self.status == "completed" else None
        self.save()
        summary = {
            "steps": t.steps,
            "total_steps": self.schedule.total,
            "examples_seen": t.examples_seen,
            "train_examples": {s.name: len(s.examples) for s in self.schedule.stages},
            "heldout_examples": len(self.heldout),
            "heldout_before": t.heldout_before,
            "heldout_after": after,
            "last_step": t.last_parts,
            "stopped": t.stopped,
            "loss": getattr(self.loss, "name", type(self.loss).__name__),
            "sft_weight": getattr(self.loss, "sft_weight", None),
            "world_size": self.world_size,
            "wall_s": round(time.monotonic() - self.started, 2),
        }
        self.store.update_process(ended=self.status)
        across_processes(summary, self.store.earlier_processes, None)  # wall time and resumes of every process
        self.store.write_summary(summary)
        self.store.set_status(self.status)
        return summary

    def run(self) -> OfflineResult:
        try:
            self.setup()
            try:
                self.train()
            finally:
                summary = self.cleanup()
        finally:
            process_group.leave()  # the group this run made (DeepSpeed), error or not: NCCL warns otherwise
        self._report(summary)
        return OfflineResult(self.store.path, self.totals, summary)

    def _report(self, summary: dict[str, Any]) -> None:
        before, after = summary["heldout_before"], summary["heldout_after"]
        self.console.print(f"[bold]{summary['steps']}[/bold] steps; results in {self.store.path}")
        if before and after:
            keys = [k for k in before if k not in ("examples", "tokens")]
            shown = ", ".join(f"{k} {before[k]:+.4f} → {after[k]:+.4f}" for k in keys)
            self.console.print(f"held-out ({int(before.get('examples', 0))} examples): {shown}")
        if self.status != "completed":
            self.console.print(f"[yellow]stopped ({self.totals.stopped}); continue with:[/yellow]")
            print(f"  {self.command} --resume {self.store.path}", file=self.console.file, flush=True)
