"""The training unit of work (``cyclealign train``, ``aligner train``): one optimizer step over a batch.

:class:`OfflineWork` supplies what only training has: the schedule of stages and
batches, the held-out measurement before and after (and every ``eval_every``
steps), the step records of ``steps.jsonl`` and the way the weights are saved.
The run around it (run directory, checkpoints, lockstep, stop flag, progress,
callbacks, summary, status) is :class:`cyclealign.run.lifecycle.RunLifecycle`'s,
the same as ``cyclealign run``'s.  It reuses the cycle's white-box model and its
``PolicyTrainer`` (losses as plugins, prefix sharing, the torch or DeepSpeed
backend) unchanged.  The run directory holds ``config.yaml``, ``run.json``,
``steps.jsonl`` (one record per step), ``summary.json`` (held-out numbers before
and after), ``checkpoint/`` and the weights (``adapter/``, or what ``save`` writes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console

from cyclealign.callbacks import Callback
from cyclealign.offline.margin import heldout_margin
from cyclealign.offline.records import RankedExample
from cyclealign.offline.schedule import Schedule, Stage
from cyclealign.protocols import RankLoss
from cyclealign.run import assembly
from cyclealign.run.lifecycle import Ending, RunLifecycle, RunResult, Work

Evaluate = Callable[[Any, Sequence[RankedExample]], dict[str, float] | None]


@dataclass
class OfflineTotals:
    """What a checkpoint carries besides the weights: the step count and the numbers measured before training."""

    steps: int = 0
    examples_seen: int = 0
    heldout_before: dict[str, float] | None = None
    stopped: str | None = None
    last_parts: dict[str, float] = field(default_factory=dict)


OfflineResult = RunResult  # the name earlier versions returned


class OfflineWork(Work):
    """Training over ``stages`` (see ``schedule.py``), measured on ``heldout`` before and after.

    ``config`` has the sections ``whitebox``, ``train`` and ``run`` (``OfflineTrainConfig``
    or the corrector's config); ``evaluate`` measures the held-out set (the preference
    margin by default); ``save`` writes the trained weights (the adapter/model by default).
    """

    unit = "steps"
    verb = "training"
    progress_text = "{task.fields[stage]} · loss {task.fields[loss]}"
    journals = ("steps",)
    stop_is_boundary = True  # the flag is read between steps: the state then is a step boundary
    totals_type = OfflineTotals

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
        save: Callable[[Any, Any, Any], None] | None = None,
        kind: str = "train",
        command: str = "cyclealign train",
        parts: assembly.Parts = assembly.NO_PARTS,
    ) -> None:
        self.config = config
        self.parts = parts  # a model handed in from Python (the object API)
        self.schedule = Schedule(stages, batch_size, seed=seed, shuffle=shuffle)
        self.heldout = list(heldout)
        self.loss = loss
        self.eval_every = eval_every
        self.evaluate = evaluate
        self.save_hook = save
        self.kind = kind
        self.command = command

    def check(self, lc: RunLifecycle) -> int:
        from cyclealign.whitebox.loading import resolve_model

        if self.parts.model is None:  # cheap checks before the directory is touched
            resolve_model(self.config.whitebox.model, self.config.whitebox.gguf_file)
        return self.schedule.total

    def build(self, lc: RunLifecycle) -> tuple[Any, Any]:
        with lc.console.status("loading the white-box model…"):
            return assembly.build_whitebox(self.config, self.loss, lc.lockstep, self.parts)

    def ready(self, lc: RunLifecycle, state: Any) -> None:
        """A fresh start measures the held-out set first (a resume has the numbers in its checkpoint)."""
        if state is None:
            with lc.console.status("measuring the held-out set…"):
                lc.totals.heldout_before = self.evaluate(lc.trainer, self.heldout)

    def units(self, totals: OfflineTotals) -> int:
        return totals.steps

    def progress_fields(self, totals: OfflineTotals) -> dict[str, Any]:
        return {"stage": "–", "loss": "–"}

    def train(self, lc: RunLifecycle) -> None:
        """Step by step until the schedule ends or a process is asked to stop; every step is journalled."""
        t = lc.totals
        while t.steps < self.schedule.total:
            if lc.lockstep.any(lc.stop()):
                t.stopped = "interrupted"
                return
            position, examples = self.schedule.batch(t.steps)
            mine = examples[lc.rank :: lc.world_size]  # this process's share of the step's prompts
            parts = lc.trainer.step([ex.loss_batch() for ex in mine])
            t.steps += 1
            t.examples_seen += len(examples)
            t.last_parts = {k: float(v) for k, v in parts.items()}
            record = {"step": t.steps, **asdict(position), "examples": [ex.id for ex in examples], **t.last_parts}
            record["lr"] = lc.learning_rate()
            if self.eval_every and t.steps % self.eval_every == 0 and t.steps < self.schedule.total:
                record["heldout"] = self.evaluate(lc.trainer, self.heldout)
            lc.store.add_step(record)
            lc.advance(1, stage=position.stage, loss=f"{parts.get('total', 0.0):.3f}")
            lc.checkpoint()
        flush = getattr(lc.trainer.backend, "flush", None)
        if flush is not None:
            flush()  # the last steps of an unfinished accumulation (train.grad_accum) still update

    def save(self, lc: RunLifecycle) -> None:
        """The ``save`` hook's way, else the adapter (or full model) in ``adapter/``."""
        if self.save_hook is None:
            return super().save(lc)
        self.save_hook(lc.whitebox, lc.trainer, lc.store)

    def finish(self, lc: RunLifecycle) -> Ending:
        """The step counts and the held-out numbers after training (when it completed)."""
        t = lc.totals
        after = self.evaluate(lc.trainer, self.heldout) if lc.status == "completed" else None
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
            "wall_s": round(time.monotonic() - lc.started, 2),
        }
        return Ending(summary)

    def report(self, lc: RunLifecycle, summary: dict[str, Any]) -> None:
        before, after = summary["heldout_before"], summary["heldout_after"]
        lc.console.print(f"[bold]{summary['steps']}[/bold] steps; results in {lc.store.path}")
        if before and after:
            keys = [k for k in before if k not in ("examples", "tokens")]
            shown = ", ".join(f"{k} {before[k]:+.4f} → {after[k]:+.4f}" for k in keys)
            lc.console.print(f"held-out ({int(before.get('examples', 0))} examples): {shown}")


def offline_lifecycle(
    work: OfflineWork, *, console: Console | None = None, resume: bool = False, callbacks: Sequence[Callback] = ()
) -> RunLifecycle:
    """The lifecycle of ``cyclealign train`` / ``aligner train`` around ``work``."""
    return RunLifecycle(work.config, work, console=console, resume=resume, callbacks=callbacks)
