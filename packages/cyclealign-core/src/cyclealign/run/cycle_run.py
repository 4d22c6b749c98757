"""The cycle's unit of work for the run lifecycle: waves of prompts, ranked by the oracle, trained on.

:class:`CycleWork` supplies what only ``cyclealign run`` has: the oracle (built
and checked before the run directory is prepared, its spend restored on resume,
its HTTP calls journalled), the prompts (sharded over data-parallel processes),
the engine of :mod:`cyclealign.cycle.engine`, its look-ahead draws, and the
summary table.  Everything around it (run directory, checkpoints, stop flag,
progress, callbacks, status) is :class:`cyclealign.run.lifecycle.RunLifecycle`'s.
"""

from __future__ import annotations

import math
from typing import Any

from cyclealign.config import Config
from cyclealign.cycle.engine import FATAL_STOP
from cyclealign.cycle.state import CycleTotals
from cyclealign.errors import OracleFatalError
from cyclealign.oracle.ledger import NAME as LEDGER
from cyclealign.oracle.ledger import CallLedger, in_flight, ledger_totals, process_id
from cyclealign.run import assembly
from cyclealign.run.lifecycle import Ending, RunLifecycle, Work
from cyclealign.run.summary import counters, print_summary, sum_counters, sum_stats, summarize
from cyclealign.usage import Usage


class CycleWork(Work):
    """``cyclealign run``: the unit is a prompt, done in waves of ``cycle.prompt_batch`` per process."""

    kind = "cycle"
    unit = "prompts"
    verb = "aligning"
    progress_text = "{task.fields[interactions]} interactions · agree {task.fields[agree]}"
    command = "cyclealign run"
    journals = ("interactions", "demos")
    totals_type = CycleTotals

    def __init__(self, config: Config, parts: assembly.Parts = assembly.NO_PARTS) -> None:
        self.config = config
        self.parts = parts  # objects handed in from Python (the object API)
        self.oracle: Any = None
        self.ledger: CallLedger | None = None

    def check(self, lc: RunLifecycle) -> int:
        self.prompts, self.loss = assembly.check_cheaply(self.config, self.parts)
        self.process = process_id(lc.rank)  # this start's name in the call journal
        return len(self.prompts)

    def open(self, lc: RunLifecycle, state: Any) -> None:
        """The oracle, with what this process had paid at the checkpoint."""
        with lc.console.status(f"starting the oracle {self.config.oracle.name!r}…"):
            self.oracle = assembly.build_oracle(
                self.config, lc.store, self._spent(lc, state), share=1 / lc.world_size, parts=self.parts
            )

    def preflight(self, lc: RunLifecycle) -> None:
        self.oracle.preflight()

    def _spent(self, lc: RunLifecycle, state: Any) -> Usage | None:
        """What this process's oracle had paid at the checkpoint (each process keeps its own account)."""
        if state is None:
            return None
        spend = state.extra.get("oracle_spend", [])
        spend = [spend] if isinstance(spend, dict) else spend
        return Usage.from_dict(spend[lc.rank]) if lc.rank < len(spend) else None

    def resumed(self, lc: RunLifecycle) -> None:
        n = len(in_flight(lc.store.path / LEDGER))
        if n:
            lc.console.print(
                f"[yellow]{n} oracle call(s) were in flight when the run stopped: sent again, they may be paid "
                "twice (counted as re-paid in the summary)[/yellow]"
            )

    def build(self, lc: RunLifecycle) -> tuple[Any, Any]:
        transport = getattr(self.oracle, "transport", None)  # a plugin's own ``Oracle`` may have none
        if transport is not None and hasattr(transport, "ledger"):
            transport.ledger = self.ledger = CallLedger(lc.store.path / LEDGER, self.process)
        with lc.console.status("loading the white-box model…"):
            whitebox, trainer = assembly.build_whitebox(self.config, self.loss, lc.lockstep, self.parts)
        self.prompts = assembly.fit_prompts(self.prompts, whitebox.tokenizer, self.config, lc.console)
        return whitebox, trainer

    def ready(self, lc: RunLifecycle, state: Any) -> None:
        self.cycle = assembly.build_cycle(
            self.config,
            whitebox=lc.whitebox,
            oracle=self.oracle,
            trainer=lc.trainer,
            store=lc.store,
            totals=lc.totals,
            should_stop=lc.stop,
            lockstep=lc.lockstep,
            on_step=lambda record: lc.store.add_step({**record, "lr": lc.learning_rate()}),
        )
        if state is not None and self.cycle.lookahead is not None:
            self.cycle.lookahead.restore(state.extra.get("sample_ahead"))

    def units(self, totals: CycleTotals) -> int:
        return totals.prompts

    def progress_fields(self, totals: CycleTotals) -> dict[str, Any]:
        return {"interactions": totals.interactions, "agree": "–"}

    def snapshot(self, lc: RunLifecycle) -> tuple[dict[str, Any], dict[str, Any]]:
        """Every process's oracle spend (the checkpoint's) and counters (run.json's), the look-ahead draws."""
        gathered = lc.lockstep.gather((self.oracle.stats.usage.as_dict(), counters(self.oracle.stats)))
        extra: dict[str, Any] = {"oracle_spend": [usage for usage, _ in gathered]}
        if self.cycle.lookahead is not None:
            extra["sample_ahead"] = self.cycle.lookahead.snapshot()
        return extra, {"oracle": sum_counters([c for _, c in gathered])}

    def train(self, lc: RunLifecycle) -> None:
        t = lc.totals

        def prompts_done(n: int) -> None:
            t = self.cycle.totals
            lc.advance(n, interactions=t.interactions, agree=f"{t.agreement_rate:.0%}")

        batch, world = self.config.cycle.prompt_batch, lc.world_size
        positions = list(range(lc.rank, len(self.prompts), world))[t.waves * batch :]  # this process's shard
        waves = math.ceil(math.ceil(len(self.prompts) / world) / batch) - t.waves  # the largest shard's
        self.cycle.run(
            [self.prompts[i] for i in positions],
            positions=positions,
            waves=waves,
            on_prompts_done=prompts_done,
            on_wave_done=lc.checkpoint,
        )

    def outcome(self, lc: RunLifecycle) -> str:
        stopped = lc.totals.stopped
        if not stopped:
            return "completed"
        if stopped.startswith(FATAL_STOP):
            return "failed"  # resumable: the checkpoint of the last whole wave stays
        return "budget" if stopped.startswith("budget") else "interrupted"

    def close(self, lc: RunLifecycle) -> None:
        if self.oracle is not None:
            self.oracle.close()
        if self.ledger is not None:
            self.ledger.close()

    def finish(self, lc: RunLifecycle) -> Ending:
        """The summary over every process's oracle account and the call journal."""
        parts = lc.lockstep.gather((self.oracle.stats, self.process))
        stats = sum_stats([part for part, _ in parts])
        summary = summarize(self.loss, lc.totals, stats, lc.started)
        journal = ledger_totals(lc.store.path / LEDGER, {p for _, p in parts}) if self.ledger else None
        return Ending(summary, {"oracle": counters(stats)}, journal)

    def report(self, lc: RunLifecycle, summary: dict[str, Any]) -> None:
        print_summary(lc.console, summary, lc.store.path)

    def failure(self, lc: RunLifecycle) -> Exception | None:
        totals = lc.totals
        if not (totals.stopped and totals.stopped.startswith(FATAL_STOP)):
            return None
        return OracleFatalError(
            f"{totals.stopped}; the run stopped after {totals.prompts} of {len(self.prompts)} prompts and is "
            f"marked failed. Fix the cause, then continue with: cyclealign run --resume {lc.store.path}"
        )


def cycle_lifecycle(config: Config, parts: assembly.Parts = assembly.NO_PARTS, **kw: Any) -> RunLifecycle:
    """The lifecycle of ``cyclealign run`` (``parts``: objects from Python; ``kw``: console, resume, callbacks)."""
    return RunLifecycle(config, CycleWork(config, parts), **kw)
