"""A run's life: status, checkpoint cadence, resume, graceful stop, summary.

``RunSession`` follows a recipe's shape: ``setup`` (check cheaply, then build the
parts through :mod:`cyclealign.run.assembly`, restoring a checkpoint on resume),
``train`` (the cycle under a progress bar and the stop flag), ``cleanup``
(always: stop the oracle, save the weights, the records and the summary, set the
status).  Nothing in a run directory is ever half-written: every file is swapped
in atomically and the checkpoint says which records it covers.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cyclealign.callbacks import Callback
from cyclealign.config import Config
from cyclealign.cycle.engine import FATAL_STOP
from cyclealign.cycle.state import CycleTotals
from cyclealign.errors import OracleFatalError
from cyclealign.infra import process_group
from cyclealign.infra.lockstep import lockstep_for
from cyclealign.infra.store import RunDir
from cyclealign.oracle.ledger import NAME as LEDGER
from cyclealign.oracle.ledger import CallLedger, in_flight, ledger_totals, process_id
from cyclealign.run import assembly
from cyclealign.run.checkpoint import Checkpointer, config_fingerprint, load_checkpoint, note_fallback, read_checkpoint
from cyclealign.run.summary import across_processes, counters, print_summary, sum_counters, sum_stats, summarize
from cyclealign.usage import Usage


@dataclass
class RunResult:
    run_dir: Path
    totals: CycleTotals
    summary: dict[str, Any]


class StopFlag:
    """First Ctrl+C / SIGTERM asks the cycle to stop after the current step; the second one aborts."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.console.print(
            f"[yellow]{signal.Signals(signum).name}: finishing the current step, then saving "
            "(press Ctrl+C again to abort at once)[/yellow]",
            soft_wrap=True,
        )

    @contextmanager
    def installed(self) -> Iterator[StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


class RunSession:
    """One run of ``cyclealign run`` (``resume=True``: continue the run in ``config.run.dir``)."""

    def __init__(
        self,
        config: Config,
        *,
        console: Console | None = None,
        resume: bool = False,
        parts: assembly.Parts = assembly.NO_PARTS,
        callbacks: Sequence[Callback] | None = None,
    ) -> None:
        self.config = config
        self.parts = parts  # objects handed in from Python (the object API)
        self.callbacks = list(callbacks or ())
        # who else runs with us (data parallelism)
        self.lockstep = lockstep_for(config.train.backend, config.train.collective_timeout_s)
        self.rank, self.world_size = self.lockstep.rank, self.lockstep.world_size
        self.console = console or Console()
        if self.rank:
            self.console = Console(quiet=True)  # the first process speaks for all
        self.resume = resume
        self.store = RunDir(config.run.dir, writer=self.rank == 0, world_size=self.world_size)
        self.public = config.public_dict()
        self.fingerprint = config_fingerprint(self.public)
        self.stop = StopFlag(self.console)
        self.status = "failed"
        self.started = time.monotonic()
        self.process = process_id(self.rank)  # this start's name in the call journal

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg, store = self.config, self.store
        self.prompts, self.loss = assembly.check_cheaply(cfg, self.parts)  # before the run directory is touched
        if self.resume:
            store.require_existing()
        else:
            store.check_free(overwrite=cfg.run.overwrite)
        state = read_checkpoint(store, self.fingerprint, config=self.public) if self.resume else None
        note_fallback(store, state, self.console)
        with self.console.status(f"starting the oracle {cfg.oracle.name!r}…"):
            self.oracle = assembly.build_oracle(
                cfg, store, self._spent(state), share=1 / self.world_size, parts=self.parts
            )
        try:
            self.oracle.preflight()
            store.start_process()
            if self.resume:
                self._warn_in_flight()
                store.set_status("running")
            else:
                store.prepare(self.public, overwrite=cfg.run.overwrite)
            self.lockstep.barrier()  # the run directory exists for every process from here on
            self.ledger = self._attach_ledger()
            with self.console.status("loading the white-box model…"):
                self.whitebox, self.trainer = assembly.build_whitebox(cfg, self.loss, self.lockstep, self.parts)
            self.prompts = assembly.fit_prompts(self.prompts, self.whitebox.tokenizer, cfg, self.console)
            self.totals = self._load(state)
            self.cycle = assembly.build_cycle(
                cfg,
                whitebox=self.whitebox,
                oracle=self.oracle,
                trainer=self.trainer,
                store=store,
                totals=self.totals,
                should_stop=self.stop,
                lockstep=self.lockstep,
            )
            if state is not None and self.cycle.lookahead is not None:
                self.cycle.lookahead.restore(state.extra.get("sample_ahead"))
            self.checkpoints = Checkpointer(
                store,
                self.trainer,
                fingerprint=self.fingerprint,
                every=cfg.run.checkpoint_every,
                total_prompts=len(self.prompts),
                start_prompts=self.totals.prompts,
                lockstep=self.lockstep,
                interval_s=cfg.run.checkpoint_interval_s,
                config=self.public,
            )
            if state is None:
                self.checkpoint(force=True)  # a run stopped before its first prompt ends still resumes from here
        except BaseException:
            self.oracle.close()
            if store.path.joinpath("run.json").exists():
                store.set_status("failed")
            raise

    def _load(self, state: Any) -> CycleTotals:
        """The totals to start from: the checkpoint's on resume (weights, RNG and records restored too)."""
        if state is None:
            self.store.interactions, self.store.demos = [], []
            return CycleTotals()
        load_checkpoint(self.store, self.trainer, state)
        self.console.print(f"resuming {self.store.path} after {state.prompts_done} of {len(self.prompts)} prompts")
        return CycleTotals(**{**state.totals, "stopped": None})

    def _spent(self, state: Any) -> Usage | None:
        """What this process's oracle had paid at the checkpoint (each process keeps its own account)."""
        if state is None:
            return None
        spend = state.extra.get("oracle_spend", [])
        spend = [spend] if isinstance(spend, dict) else spend
        return Usage.from_dict(spend[self.rank]) if self.rank < len(spend) else None

    def _attach_ledger(self) -> CallLedger | None:
        """Journal every HTTP call of the oracle's transport (a plugin's own ``Oracle`` has none)."""
        transport = getattr(self.oracle, "transport", None)
        if transport is None or not hasattr(transport, "ledger"):
            return None
        transport.ledger = CallLedger(self.store.path / LEDGER, self.process)
        return transport.ledger

    def _warn_in_flight(self) -> None:
        n = len(in_flight(self.store.path / LEDGER))
        if n:
            self.console.print(
                f"[yellow]{n} oracle call(s) were in flight when the run stopped: sent again, they may be paid "
                "twice (counted as re-paid in the summary)[/yellow]"
            )

    def checkpoint(self, force: bool = False) -> None:
        """At every wave: the checkpoint when due, and this process's counters in run.json."""
        gathered = self.lockstep.gather((self.oracle.stats.usage.as_dict(), counters(self.oracle.stats)))
        spent = [usage for usage, _ in gathered]
        ahead = self.cycle.lookahead.snapshot() if self.cycle.lookahead is not None else None
        self.checkpoints.maybe_save(self.cycle.totals, spent, force=force, ahead=ahead)
        self.store.update_process(oracle=sum_counters([c for _, c in gathered]))
        self.store.set_status("running")

    # ------------------------------------------------------------------ train
    def train(self) -> CycleTotals:
        progress = Progress(
            TextColumn("[bold]aligning"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("prompts · {task.fields[interactions]} interactions · agree {task.fields[agree]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.config.run.progress,
        )
        t = self.totals
        with progress, self.stop.installed():
            task = progress.add_task(
                "run", total=len(self.prompts), completed=t.prompts, interactions=t.interactions, agree="–"
            )

            def prompts_done(n: int) -> None:
                t = self.cycle.totals
                progress.update(task, advance=n, interactions=t.interactions, agree=f"{t.agreement_rate:.0%}")

            batch, world = self.config.cycle.prompt_batch, self.world_size
            positions = list(range(self.rank, len(self.prompts), world))[t.waves * batch :]  # this process's shard
            waves = math.ceil(math.ceil(len(self.prompts) / world) / batch) - t.waves  # the largest shard's
            totals = self.cycle.run(
                [self.prompts[i] for i in positions],
                positions=positions,
                waves=waves,
                on_prompts_done=prompts_done,
                on_wave_done=self.checkpoint,
            )
        if not totals.stopped:
            self.status = "completed"
        elif totals.stopped.startswith(FATAL_STOP):
            self.status = "failed"  # resumable: the checkpoint of the last whole wave stays
        else:
            self.status = "budget" if totals.stopped.startswith("budget") else "interrupted"
        return totals

    # ------------------------------------------------------------------ cleanup
    def cleanup(self) -> dict[str, Any]:
        """Always: stop the oracle, then save the weights, the records, the summary and the status."""
        from cyclealign.whitebox.trainer import save_trainable, weights_digest

        self.oracle.close()
        if self.ledger is not None:
            self.ledger.close()
        self.store.flush()
        save_trainable(self.whitebox, self.store.adapter_dir, self.trainer)
        parts = self.lockstep.gather((self.oracle.stats, self.process))
        stats = sum_stats([part for part, _ in parts])
        summary = summarize(self.loss, self.cycle.totals, stats, self.started)
        self.store.update_process(oracle=counters(stats), ended=self.status)
        journal = ledger_totals(self.store.path / LEDGER, {p for _, p in parts}) if self.ledger else None
        across_processes(summary, self.store.earlier_processes, journal)
        summary["world_size"] = self.world_size
        if self.world_size > 1:  # equal digests: every process ends with the same weights
            summary["weights_digest_by_rank"] = self.lockstep.gather(weights_digest(self.whitebox, self.trainer))
        self.store.write_summary(summary)
        stopped = self.cycle.totals.stopped or ""
        self.store.set_status(self.status, **({"error": stopped} if stopped.startswith(FATAL_STOP) else {}))
        return summary

    def run(self) -> RunResult:
        try:
            self.setup()
            try:
                self.train()
            finally:
                summary = self.cleanup()
        finally:
            process_group.leave()  # the group this run made (DeepSpeed), error or not: NCCL warns otherwise
        totals = self.cycle.totals
        print_summary(self.console, summary, self.store.path)
        if totals.stopped and totals.stopped.startswith(FATAL_STOP):
            raise OracleFatalError(
                f"{totals.stopped}; the run stopped after {totals.prompts} of {len(self.prompts)} prompts and is "
                f"marked failed. Fix the cause, then continue with: cyclealign run --resume {self.store.path}"
            )
        if self.status != "completed":
            self.console.print(f"[yellow]stopped ({totals.stopped}); continue with:[/yellow]")
            print(f"  cyclealign run --resume {self.store.path}", file=self.console.file, flush=True)  # never wrapped
        return RunResult(self.store.path, totals, summary)
