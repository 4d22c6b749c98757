"""Assemble the real parts from a config and run the cycle: the function behind `cyclealign run`."""

from __future__ import annotations

import hashlib
import random
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cyclealign import plugins
from cyclealign.agreement import make_agreement
from cyclealign.config import Config
from cyclealign.demos import DemoPool
from cyclealign.engine import Cycle, CycleSettings, CycleTotals
from cyclealign.protocols import Prompt
from cyclealign.store import RunDir


@dataclass
class RunResult:
    run_dir: Path
    totals: CycleTotals
    summary: dict[str, Any]


def reseed_all(key: str) -> None:
    """Seed every RNG the white-box touches from a string key (exact, resumable sampling)."""
    import numpy as np
    import torch

    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
            "(press Ctrl+C again to abort at once)[/yellow]"
        )

    @contextmanager
    def installed(self) -> Iterator[StopFlag]:
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def load_training_prompts(config: Config) -> list[Prompt]:
    from cyclealign.data import load_prompts

    return load_prompts(config.data, seed=config.run.seed)


def build_loss(config: Config) -> Any:
    entry = plugins.get_registry().get("loss", config.loss.name)
    return entry.factory(config.loss, num_samples=config.cycle.num_samples)


def build_oracle(config: Config, run_dir: RunDir) -> Any:
    oracle_cfg = config.oracle
    if oracle_cfg.cache and oracle_cfg.cache_path is None:
        oracle_cfg = oracle_cfg.model_copy(update={"cache_path": run_dir.cache_path})
    return plugins.create_oracle(oracle_cfg)


def summarize(config: Config, totals: CycleTotals, oracle: Any, started: float) -> dict[str, Any]:
    stats = dict(getattr(oracle, "stats", {}) or {})
    return {
        "prompts_done": totals.prompts,
        "interactions": totals.interactions,
        "full_agreements": totals.full_agreements,
        "agreement_rate": totals.agreement_rate,
        "oracle_failures": totals.oracle_failures,
        "trained_steps": totals.trained_steps,
        "mean_loss": totals.mean_loss,
        "stopped": totals.stopped,
        "oracle": {k: v for k, v in stats.items() if isinstance(v, int | float | str | None)},
        "wall_s": round(time.monotonic() - started, 2),
        "loss": config.loss.name,
        "sft_weight": config.sft_weight(),
    }


def print_summary(console: Console, summary: dict[str, Any], run_dir: Path) -> None:
    table = Table(title="CycleAlign run", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    mean_loss = summary["mean_loss"]
    rows = [
        ("prompts done", str(summary["prompts_done"])),
        ("interactions", str(summary["interactions"])),
        ("agreement rate", f"{summary['agreement_rate']:.1%} ({summary['full_agreements']} full agreements)"),
        ("oracle parse failures", str(summary["oracle_failures"])),
        ("training steps", str(summary["trained_steps"])),
        ("mean loss", "n/a" if mean_loss is None else f"{mean_loss:.4f}"),
    ]
    oracle = summary.get("oracle", {})
    if "cost_usd" in oracle:
        rows.append(("oracle cost", f"${oracle['cost_usd']:.4f}"))
    if "http_calls" in oracle:
        rows.append(("oracle HTTP calls", f"{oracle['http_calls']} (cache hits {oracle.get('cache_hits', 0)})"))
    rows.append(("wall time", f"{summary['wall_s']:.1f} s"))
    if summary.get("stopped"):
        rows.append(("stopped", str(summary["stopped"])))
    rows.append(("run directory", str(run_dir)))
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


def run(config: Config, *, console: Console | None = None) -> RunResult:
    """Run CycleAlign as configured; always saves what it has, and always stops the oracle."""
    from cyclealign.whitebox import MeanLogProbRanker, build_trainer, load_whitebox, save_trainable
    from cyclealign.whitebox.sampler import HFSampler

    console = console or Console()
    started = time.monotonic()
    store = RunDir(config.run.dir)
    prompts = load_training_prompts(config)
    loss = build_loss(config)
    store.prepare(config.public_dict(), overwrite=config.run.overwrite)
    reseed_all(f"{config.run.seed}:init")

    with console.status("loading the white-box model…"):
        whitebox = load_whitebox(config.whitebox, seed=config.run.seed)
    trainer = build_trainer(whitebox, loss, config.train)
    with console.status(f"starting the oracle {config.oracle.name!r}…"):
        oracle = build_oracle(config, store)

    pool = DemoPool(
        _static_demo(),
        use_static=config.cycle.icl,
        use_dynamic=config.cycle.icl and config.cycle.dynamic_demos,
        max_dynamic=config.cycle.max_dynamic_demos,
        selection=config.cycle.demo_selection,
        token_budget=config.cycle.demo_token_budget,
    )
    stop = StopFlag(console)
    totals = CycleTotals()
    status = "failed"
    try:
        from cyclealign_losses import ranks_to_rewards

        c = config.cycle
        settings = CycleSettings(
            num_samples=c.num_samples,
            max_interactions=c.max_interactions,
            early_stop=c.early_stop,
            include_oracle_response=c.include_oracle_response,
            shuffle=c.shuffle,
            min_agreement=c.min_agreement,
            prompt_batch=c.prompt_batch,
            on_oracle_failure=c.on_oracle_failure,
            seed=config.run.seed,
        )
        with (
            Progress(
                TextColumn("[bold]aligning"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("prompts · {task.fields[interactions]} interactions · agree {task.fields[agree]}"),
                TimeElapsedColumn(),
                console=console,
                disable=not config.run.progress,
                transient=False,
            ) as progress,
            stop.installed(),
        ):
            task = progress.add_task("run", total=len(prompts), interactions=0, agree="–")
            cycle = Cycle(
                sampler=HFSampler(whitebox, config.whitebox),
                oracle=oracle,
                self_ranker=MeanLogProbRanker(),
                agreement=make_agreement(c.agreement),
                trainer=trainer,
                demos=pool,
                rewards=lambda order: ranks_to_rewards(order, c.reward_scheme),
                settings=settings,
                on_record=store.add_interaction,
                on_demo=store.add_demo,
                reseed=reseed_all,
                should_stop=stop,
            )
            totals = cycle.totals

            def prompt_done(prompt: Prompt) -> None:
                t = cycle.totals
                progress.update(task, advance=1, interactions=t.interactions, agree=f"{t.agreement_rate:.0%}")
                if t.prompts % config.run.checkpoint_every == 0:
                    store.flush()

            totals = cycle.run(prompts, on_prompt_done=prompt_done)
        status = "completed" if not totals.stopped else ("budget" if "budget" in totals.stopped else "interrupted")
    finally:
        oracle.close()
        store.flush()
        save_trainable(whitebox, store.adapter_dir)
        summary = summarize(config, totals, oracle, started)
        store.write_summary(summary)
        store.set_status(status)
    print_summary(console, summary, store.path)
    return RunResult(store.path, totals, summary)


def _static_demo() -> Any:
    from cyclealign.prompts import STATIC_DEMONSTRATION

    return STATIC_DEMONSTRATION
