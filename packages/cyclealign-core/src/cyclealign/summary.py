"""The numbers a run ends with: ``summary.json`` and the table printed at the end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cyclealign.cycle_state import CycleTotals
from cyclealign.usage import OracleStats


def summarize(loss: Any, totals: CycleTotals, stats: OracleStats, started: float) -> dict[str, Any]:
    return {
        "prompts_done": totals.prompts,
        "interactions": totals.interactions,
        "full_agreements": totals.full_agreements,
        "agreement_rate": totals.agreement_rate,
        "oracle_failures": totals.oracle_failures,
        "oracle_failures_by_kind": dict(sorted(totals.oracle_failures_by_kind.items())),
        "trained_steps": totals.trained_steps,
        "mean_loss": totals.mean_loss,
        "stopped": totals.stopped,
        "oracle": stats.as_dict(),
        "wall_s": round(time.monotonic() - started, 2),
        "loss": loss.name,
        "sft_weight": loss.sft_weight,
    }


def sum_stats(parts: list[OracleStats]) -> OracleStats:
    """The oracle accounts of every process of a run, as one."""
    total = OracleStats()
    for part in parts:
        total.usage = total.usage + part.usage
        for name, value in vars(part).items():
            if name != "usage":
                setattr(total, name, getattr(total, name) + value)
    return total


def failures_line(summary: dict[str, Any]) -> str:
    """``"3 (invalid answer 1, timeout 2)"``: the failed interactions, by kind."""
    kinds = summary.get("oracle_failures_by_kind") or {}
    parts = ", ".join(f"{kind.replace('_', ' ')} {n}" for kind, n in sorted(kinds.items()) if n)
    return f"{summary['oracle_failures']}" + (f" ({parts})" if parts else "")


def print_summary(console: Console, summary: dict[str, Any], run_dir: Path) -> None:
    table = Table(title="CycleAlign run", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    mean_loss = summary["mean_loss"]
    oracle = summary["oracle"]
    rows = [
        ("prompts done", str(summary["prompts_done"])),
        ("interactions", str(summary["interactions"])),
        ("agreement rate", f"{summary['agreement_rate']:.1%} ({summary['full_agreements']} full agreements)"),
        ("oracle failures", failures_line(summary)),
        ("training steps", str(summary["trained_steps"])),
        ("mean loss", "n/a" if mean_loss is None else f"{mean_loss:.4f}"),
        ("oracle cost", f"${oracle['cost_usd']:.4f}"),
        ("oracle HTTP calls", f"{oracle['http_calls']} (cache hits {oracle['cache_hits']})"),
        ("wall time", f"{summary['wall_s']:.1f} s"),
    ]
    if summary.get("stopped"):
        rows.append(("stopped", str(summary["stopped"])))
    rows.append(("run directory", str(run_dir)))
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
