"""Assemble the real parts from a config and run the cycle: the function behind `cyclealign run`."""

from __future__ import annotations

import hashlib
import random
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
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
            "(press Ctrl+C again to abort at once)[/yellow]",
            soft_wrap=True,
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


def fit_prompts(prompts: list[Prompt], tokenizer: Any, config: Config, console: Console) -> list[Prompt]:
    """Prompts longer than ``whitebox.max_prompt_tokens``: keep their tail (counted) or reject the run."""
    from cyclealign.data import DataError
    from cyclealign.whitebox import encode_prompt

    limit = config.whitebox.max_prompt_tokens
    too_long = [p for p in prompts if encode_prompt(tokenizer, p, limit)[1]]
    if too_long and config.data.overlong == "reject":
        ids = ", ".join(p.id for p in too_long[:5])
        raise DataError(
            f"{len(too_long)} prompt(s) exceed whitebox.max_prompt_tokens={limit} (e.g. {ids}); "
            "shorten them, raise the limit, or set data.overlong=truncate"
        )
    if too_long:
        console.print(f"[yellow]{len(too_long)} prompt(s) longer than {limit} tokens keep their last {limit}[/yellow]")
    return prompts


def build_loss(config: Config) -> Any:
    entry = plugins.get_registry().get("loss", config.loss.name, field="loss.name")
    return entry.factory(config.loss, num_samples=config.cycle.num_samples)


def build_oracle(config: Config, run_dir: RunDir) -> Any:
    oracle_cfg = config.oracle
    if oracle_cfg.cache and oracle_cfg.cache_path is None:
        oracle_cfg = oracle_cfg.model_copy(update={"cache_path": run_dir.cache_path})
    return plugins.create_oracle(oracle_cfg)


def summarize(config: Config, totals: CycleTotals, oracle: Any, started: float) -> dict[str, Any]:
    stats = getattr(oracle, "stats", None)
    stats = stats.as_dict() if hasattr(stats, "as_dict") else dict(stats or {})
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


def run(config: Config, *, console: Console | None = None, resume: bool = False) -> RunResult:
    """Run CycleAlign as configured; always saves what it has, and always stops the oracle.

    With ``resume=True`` the run directory must hold this run; it continues from
    its last checkpoint (prompt boundary) and ends exactly as an uninterrupted run.
    """
    from cyclealign.checkpoint import (
        CheckpointState,
        config_fingerprint,
        has_checkpoint,
        load_checkpoint,
        save_checkpoint,
    )
    from cyclealign.whitebox import MeanLogProbRanker, build_trainer, load_whitebox, save_trainable
    from cyclealign.whitebox.loading import resolve_model
    from cyclealign.whitebox.sampler import HFSampler
    from cyclealign_losses import ranks_to_rewards

    console = console or Console()
    started = time.monotonic()
    store = RunDir(config.run.dir)
    public = config.public_dict()
    fingerprint = config_fingerprint(public)

    # Everything that can be checked cheaply is checked before the run directory is touched.
    prompts = load_training_prompts(config)
    loss = build_loss(config)
    resolve_model(config.whitebox.model, config.whitebox.gguf_file)
    plugins.get_registry().get("oracle", config.oracle.name, field="oracle.name")
    if resume:
        store.require_existing()
    else:
        store.check_free(overwrite=config.run.overwrite)
    with console.status(f"starting the oracle {config.oracle.name!r}…"):
        oracle = build_oracle(config, store)
    status = "failed"
    try:
        preflight = getattr(oracle, "preflight", None)
        if preflight is not None:
            preflight()
        if resume:
            store.set_status("running")
        else:
            store.prepare(public, overwrite=config.run.overwrite)
        reseed_all(f"{config.run.seed}:init")
        with console.status("loading the white-box model…"):
            whitebox = load_whitebox(config.whitebox, seed=config.run.seed)
        prompts = fit_prompts(prompts, whitebox.tokenizer, config, console)
        trainer = build_trainer(whitebox, loss, config.train)
    except BaseException:
        oracle.close()
        if store.path.joinpath("run.json").exists():
            store.set_status("failed")
        raise

    totals = CycleTotals()
    if resume and has_checkpoint(store):
        state = load_checkpoint(store, trainer, fingerprint)
        totals = CycleTotals(**{**state.totals, "stopped": None})
        _restore_spend(oracle, state.extra.get("oracle_spend", {}))
        console.print(f"resuming {store.path} after {state.prompts_done} of {len(prompts)} prompts")
    else:
        store.interactions, store.demos = [], []
    todo = prompts[totals.prompts :]

    c = config.cycle
    pool = DemoPool(
        _static_demo(),
        use_static=c.icl,
        use_dynamic=c.icl and c.dynamic_demos,
        max_dynamic=c.max_dynamic_demos,
        selection=c.demo_selection,
        token_budget=c.demo_token_budget,
    )
    pool.extend(store.demos)
    settings = CycleSettings.from_config(c, seed=config.run.seed)
    stop = StopFlag(console)
    try:
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
        cycle.totals = totals
        last_checkpoint = {"prompts": totals.prompts}

        def checkpoint(force: bool = False) -> None:
            t = cycle.totals
            due = t.prompts - last_checkpoint["prompts"] >= config.run.checkpoint_every or t.prompts == len(prompts)
            if due or force:
                save_checkpoint(
                    store,
                    trainer,
                    CheckpointState(
                        prompts_done=t.prompts,
                        n_interactions=len(store.interactions),
                        n_demos=len(store.demos),
                        totals=asdict(t),
                        config_fingerprint=fingerprint,
                        extra={"oracle_spend": _spend(oracle)},
                    ),
                )
                last_checkpoint["prompts"] = t.prompts

        if not has_checkpoint(store):
            checkpoint(force=True)  # a run stopped before its first prompt ends still resumes from here

        with (
            Progress(
                TextColumn("[bold]aligning"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("prompts · {task.fields[interactions]} interactions · agree {task.fields[agree]}"),
                TimeElapsedColumn(),
                console=console,
                disable=not config.run.progress,
            ) as progress,
            stop.installed(),
        ):
            task = progress.add_task(
                "run", total=len(prompts), completed=totals.prompts, interactions=totals.interactions, agree="–"
            )

            def prompt_done(prompt: Prompt) -> None:
                t = cycle.totals
                progress.update(task, advance=1, interactions=t.interactions, agree=f"{t.agreement_rate:.0%}")

            totals = cycle.run(todo, on_prompt_done=prompt_done, on_wave_done=checkpoint)
        if not totals.stopped:
            status = "completed"
        else:
            status = "budget" if totals.stopped.startswith("budget") else "interrupted"
    finally:
        oracle.close()
        store.flush()
        save_trainable(whitebox, store.adapter_dir)
        summary = summarize(config, totals, oracle, started)
        store.write_summary(summary)
        store.set_status(status)
    print_summary(console, summary, store.path)
    if status != "completed":
        console.print(f"[yellow]stopped ({totals.stopped}); continue with:[/yellow]")
        print(f"  cyclealign run --resume {store.path}", file=console.file, flush=True)  # never wrapped
    return RunResult(store.path, totals, summary)


def resume(run_dir: Path, *, console: Console | None = None) -> RunResult:
    """Continue the run in ``run_dir`` with its own resolved config."""
    from cyclealign.config import load_config

    config_file = Path(run_dir) / "config.yaml"
    if not config_file.is_file():
        from cyclealign.store import RunDirError

        raise RunDirError(f"{run_dir} holds no run to resume (no config.yaml)")
    config = load_config(config_file, [f"run.dir={run_dir}"])
    return run(config, console=console, resume=True)


SPEND_FIELDS = ("cost_usd", "prompt_tokens", "completion_tokens")


def _spend(oracle: Any) -> dict[str, float]:
    """What the oracle has cost so far: carried across resumes so ``oracle.budget_usd`` spans the whole run."""
    stats = getattr(oracle, "stats", None)
    return {f: getattr(stats, f) for f in SPEND_FIELDS if hasattr(stats, f)}


def _restore_spend(oracle: Any, spend: dict[str, float]) -> None:
    stats = getattr(oracle, "stats", None)
    for f, value in spend.items():
        if stats is not None and hasattr(stats, f):
            setattr(stats, f, type(getattr(stats, f))(value))


def _static_demo() -> Any:
    from cyclealign.prompts import STATIC_DEMONSTRATION

    return STATIC_DEMONSTRATION
