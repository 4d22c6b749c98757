"""One run's life, shared by ``cyclealign run``, ``cyclealign train`` and ``aligner train``.

:class:`RunLifecycle` has a training recipe's shape: ``setup`` (check cheaply,
then prepare or reopen the run directory, build the model, ``load`` a checkpoint
on resume), ``train`` (the work under a progress bar and the stop flag, with the
checkpoint cadence), ``save`` and ``cleanup`` (always: the weights, the records,
the summary and the status), and the report.  It owns everything a run does
around its work: the run directory, the lockstep between data-parallel
processes, the stop flag, the checkpoints, progress, the summary and the
callbacks.  What differs between the three commands is a :class:`Work`: the
cycle's (a wave of prompts, :mod:`cyclealign.run.cycle_run`) or training's (one
optimizer step, :mod:`cyclealign.offline.recipe`).  Units are neutral: prompts
for the cycle, steps for training.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cyclealign.callbacks import Callback, CallbackList, RunInfo
from cyclealign.infra import process_group
from cyclealign.infra.lockstep import lockstep_for
from cyclealign.infra.store import RunDir
from cyclealign.run.checkpoint import Checkpointer, config_fingerprint, load_checkpoint, note_fallback, read_checkpoint
from cyclealign.run.checkpoint_files import CURRENT
from cyclealign.run.stop import StopFlag
from cyclealign.run.summary import across_processes
from cyclealign.trackers import trackers_for


@dataclass
class RunResult:
    """Where the run lives, its counters (the work's totals) and ``summary.json``."""

    run_dir: Path
    totals: Any
    summary: dict[str, Any]


@dataclass
class Ending:
    """What the work hands over at the end: its summary, its run.json fields, the call journal's totals."""

    summary: dict[str, Any]
    process: dict[str, Any] = field(default_factory=dict)
    journal: dict[str, Any] | None = None


class Work:
    """The unit of work a run repeats; :class:`RunLifecycle` does the rest.  Override what differs.

    ``totals_type`` is the work's counters (a dataclass with ``stopped``), saved in
    every checkpoint; ``units`` reads the units done from it.
    """

    kind = "cycle"  # callbacks.RUN_KINDS
    unit = "prompts"  # what the progress bar, the checkpoint cadence and the messages count
    verb = "aligning"  # the progress bar's label
    progress_text = ""  # the progress bar's own fields, e.g. "loss {task.fields[loss]}"
    command = "cyclealign run"  # how a stopped run is continued
    journals: tuple[str, ...] = ("interactions", "demos")  # the record files the run keeps
    stop_is_boundary = False  # True: a stop leaves a state worth a checkpoint at once
    totals_type: Any = None

    def check(self, lc: RunLifecycle) -> int:
        """Cheap checks before the run directory is touched; the number of units the run has."""
        raise NotImplementedError

    def open(self, lc: RunLifecycle, state: Any) -> None:
        """Start what must work before the run directory is prepared (the cycle's oracle)."""

    def preflight(self, lc: RunLifecycle) -> None:
        """Check that what ``open`` started works (a failure marks the run failed and calls ``close``)."""

    def resumed(self, lc: RunLifecycle) -> None:
        """A resume is about to continue (warn about what the crash left)."""

    def build(self, lc: RunLifecycle) -> tuple[Any, Any]:
        """The white-box model and its trainer."""
        raise NotImplementedError

    def ready(self, lc: RunLifecycle, state: Any) -> None:
        """Everything else, once the totals are loaded (``state`` None: a fresh start)."""

    def units(self, totals: Any) -> int:
        raise NotImplementedError

    def progress_fields(self, totals: Any) -> dict[str, Any]:
        return {}

    def snapshot(self, lc: RunLifecycle) -> tuple[dict[str, Any], dict[str, Any]]:
        """At each checkpoint call: what the checkpoint keeps besides, and this process's run.json fields."""
        return {}, {}

    def train(self, lc: RunLifecycle) -> None:
        """Do the units (``lc.advance``, ``lc.checkpoint`` and ``lc.stop`` between them)."""
        raise NotImplementedError

    def outcome(self, lc: RunLifecycle) -> str:
        """The status after ``train``: completed, or why it stopped."""
        return "interrupted" if lc.totals.stopped else "completed"

    def close(self, lc: RunLifecycle) -> None:
        """Stop what ``open`` started (also after a failed setup)."""

    def save(self, lc: RunLifecycle) -> None:
        """The trained weights (the adapter or full model in ``adapter/``)."""
        from cyclealign.whitebox.trainer import save_trainable

        save_trainable(lc.whitebox, lc.store.adapter_dir, lc.trainer)

    def finish(self, lc: RunLifecycle) -> Ending:
        raise NotImplementedError

    def report(self, lc: RunLifecycle, summary: dict[str, Any]) -> None:
        """What the console shows at the end."""

    def failure(self, lc: RunLifecycle) -> Exception | None:
        """An error to raise after the report (a run that cannot go on as it is)."""
        return None


class RunLifecycle:
    """One start (or ``resume=True``: continuation) of a run in ``config.run.dir``, doing ``work``.

    ``callbacks`` (and the trackers of ``config.run.report_to``) watch it from the
    first process: the start, each interaction and step record, each checkpoint, the end.
    """

    def __init__(
        self,
        config: Any,
        work: Work,
        *,
        console: Console | None = None,
        resume: bool = False,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.config, self.work, self.resume = config, work, resume
        self.lockstep = lockstep_for(config.train.backend, config.train.collective_timeout_s)
        self.rank, self.world_size = self.lockstep.rank, self.lockstep.world_size
        self.console = console or Console()
        if self.rank:
            self.console = Console(quiet=True)  # the first process speaks for all
        self.store = RunDir(config.run.dir, writer=self.rank == 0, world_size=self.world_size, journals=work.journals)
        self.public = config.public_dict()
        self.fingerprint = config_fingerprint(self.public)
        self.stop = StopFlag(self.console)
        watchers = [*callbacks, *trackers_for(config.run.report_to)] if self.rank == 0 else []
        self.callbacks = CallbackList(watchers)
        self.store.listener = self.callbacks if watchers else None
        self.status = "failed"
        self.started = time.monotonic()
        self.total = 0
        self.totals: Any = None
        self.whitebox: Any  # the model and its trainer: set by ``setup``
        self.trainer: Any
        self._progress: tuple[Progress, Any] | None = None

    # ------------------------------------------------------------------ setup / load
    def setup(self) -> None:
        cfg, store, work = self.config, self.store, self.work
        self.total = work.check(self)  # before the run directory is touched
        if self.resume:
            store.require_existing()
        else:
            store.check_free(overwrite=cfg.run.overwrite)
        state = read_checkpoint(store, self.fingerprint, config=self.public) if self.resume else None
        note_fallback(store, state, self.console, unit=work.unit)
        work.open(self, state)  # a part that cannot start leaves the run directory as it was
        try:
            work.preflight(self)
            store.start_process()
            if self.resume:
                work.resumed(self)
                store.set_status("running")
            else:
                store.prepare(self.public, overwrite=cfg.run.overwrite)
            self.lockstep.barrier()  # the run directory exists for every process from here on
            self.whitebox, self.trainer = work.build(self)
            self.load(state)
            work.ready(self, state)
            self.checkpoints = Checkpointer(
                store,
                self.trainer,
                fingerprint=self.fingerprint,
                every=cfg.run.checkpoint_every,
                total=self.total,
                start=work.units(self.totals),
                lockstep=self.lockstep,
                interval_s=cfg.run.checkpoint_interval_s,
                config=self.public,
            )
            info = RunInfo(
                store.path, work.kind, self.public, self.resume, work.units(self.totals), len(store.interactions)
            )
            self.callbacks.on_run_start(info)
            if state is None:
                self.checkpoint(force=True)  # a run stopped before its first unit ends still resumes from here
        except BaseException:
            work.close(self)
            if store.path.joinpath("run.json").exists():
                store.set_status("failed")
            raise

    def load(self, state: Any) -> None:
        """The totals to start from: fresh ones, or the checkpoint's (weights, RNG and records restored too)."""
        if state is None:
            self.store.reset_journals()
            self.totals = self.work.totals_type()
            return
        load_checkpoint(self.store, self.trainer, state)
        self.totals = self.work.totals_type(**{**state.totals, "stopped": None})
        unit = self.work.unit
        self.console.print(f"resuming {self.store.path} after {state.units_done} of {self.total} {unit}")

    def checkpoint(self, force: bool = False) -> None:
        """Between units: the checkpoint when due (or ``force``), and this process's fields in run.json."""
        extra, process = self.work.snapshot(self)
        units = self.work.units(self.totals)
        saved = self.checkpoints.maybe_save(units, asdict(self.totals), force=force, extra=extra)
        if saved or process:
            self.store.update_process(**process)  # this process's wall time, should it be killed before the end
            self.store.set_status("running")
        if saved:
            self.callbacks.on_checkpoint({"dir": str(self.store.path / CURRENT), "units": units})

    # ------------------------------------------------------------------ train
    def train(self) -> Any:
        """The work under a progress bar and the stop flag; the status it ends with."""
        work = self.work
        progress = Progress(
            TextColumn(f"[bold]{work.verb}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(" · ".join(filter(None, (work.unit, work.progress_text)))),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.config.run.progress,
        )
        with progress, self.stop.installed():
            done = work.units(self.totals)
            task = progress.add_task("run", total=self.total, completed=done, **work.progress_fields(self.totals))
            self._progress = (progress, task)
            work.train(self)
        if self.totals.stopped and work.stop_is_boundary:
            self.checkpoint(force=True)
        self.status = work.outcome(self)
        return self.totals

    def advance(self, n: int, **fields: Any) -> None:
        """``n`` more units done (and the progress bar's fields)."""
        if self._progress is not None:
            progress, task = self._progress
            progress.update(task, advance=n, **fields)

    def learning_rate(self) -> float | None:
        """The learning rate after the last step (the next update's), as trainers usually log it."""
        lr = getattr(getattr(self.trainer, "backend", None), "lr", None)  # None: a backend that does not say
        return None if lr is None else float(lr)

    # ------------------------------------------------------------------ save / cleanup
    def cleanup(self) -> dict[str, Any]:
        """Always: stop what the work started, then the records, the weights, the summary and the status."""
        from cyclealign.whitebox.trainer import weights_digest

        self.work.close(self)
        self.store.flush()
        self.work.save(self)
        ending = self.work.finish(self)
        summary = ending.summary
        summary["world_size"] = self.world_size
        self.store.update_process(**ending.process, ended=self.status)
        across_processes(summary, self.store.earlier_processes, ending.journal)  # every start of the run
        if self.world_size > 1:  # equal digests: every process ends with the same weights
            summary["weights_digest_by_rank"] = self.lockstep.gather(weights_digest(self.whitebox, self.trainer))
        self.store.write_summary(summary)
        stopped = self.totals.stopped
        self.store.set_status(self.status, **({"error": stopped} if self.status == "failed" and stopped else {}))
        self.callbacks.on_run_end(summary)
        return summary

    def run(self) -> RunResult:
        """setup, train, cleanup (always), the report; a stopped run says how to continue it."""
        ended = False
        try:
            self.setup()
            try:
                self.train()
            finally:
                summary = self.cleanup()
            ended = True
        finally:
            process_group.leave(together=ended)  # the group this run made (DeepSpeed), error or not
        self.work.report(self, summary)
        error = self.work.failure(self)
        if error is not None:
            raise error
        if self.status != "completed":
            self.console.print(f"[yellow]stopped ({self.totals.stopped}); continue with:[/yellow]")
            print(f"  {self.work.command} --resume {self.store.path}", file=self.console.file, flush=True)
        return RunResult(self.store.path, self.totals, summary)
