"""The numbers a run ends with: ``summary.json`` and the table printed at the end.

They count every process of the run (its start and each ``--resume``): the
counters and wall time of earlier processes come from run.json's ``processes``
(as of each one's last checkpoint), the HTTP and paid calls from the run's call
journal (``oracle/ledger.py``, exact even across a SIGKILL).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cyclealign.cycle.state import CycleTotals
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


COUNTERS = ("calls", "http_calls", "cache_hits", "retries", "parse_retries", "failures", "waited_s")
COUNTERS += ("demos_dropped", "format_downgrades")


def counters(stats: OracleStats) -> dict[str, Any]:
    """What run.json keeps of one process's oracle: its counters (the money is the call journal's)."""
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in stats.as_dict().items() if k in COUNTERS}


def sum_counters(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The counters of the data-parallel processes of one start, as one."""
    return {k: sum(part.get(k, 0) for part in parts) for k in parts[0]} if parts else {}


def across_processes(summary: dict[str, Any], earlier: list[dict[str, Any]], ledger: dict[str, Any] | None) -> None:
    """Add the earlier processes' counters and wall time to ``summary``; the journal's calls replace this one's."""
    oracle = summary.get("oracle")
    if oracle is not None:
        for entry in earlier:
            for k, v in (entry.get("oracle") or {}).items():
                if k in COUNTERS:
                    oracle[k] = oracle.get(k, 0) + v
        if ledger is not None:
            oracle.update(ledger)
    summary["wall_s"] = round(summary["wall_s"] + sum(float(e.get("wall_s", 0.0)) for e in earlier), 2)
    summary["resumes"] = len(earlier)


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
    hits = oracle["cache_hits"]
    rows = [
        ("prompts done", str(summary["prompts_done"])),
        ("interactions", str(summary["interactions"])),
        ("agreement rate", f"{summary['agreement_rate']:.1%} ({summary['full_agreements']} full agreements)"),
        ("oracle failures", failures_line(summary)),
        ("training steps", str(summary["trained_steps"])),
        ("mean loss", "n/a" if mean_loss is None else f"{mean_loss:.4f}"),
        ("oracle cost", f"${oracle['cost_usd']:.4f}"),
        ("oracle HTTP calls", f"{oracle['http_calls']} ({oracle['paid_calls']} answered, cache hits {hits})"),
        ("wall time", f"{summary['wall_s']:.1f} s"),
    ]
    if summary.get("resumes"):
        crash = ""
        if "in_flight_at_crash" in oracle:
            lost, repaid = oracle["in_flight_at_crash"], oracle["repaid_calls"]
            crash = f"; {lost} oracle calls in flight at a crash, {repaid} of them paid again"
        rows.append(("resumes", f"{summary['resumes']} (totals span every process{crash})"))
    if summary.get("stopped"):
        rows.append(("stopped", str(summary["stopped"])))
    rows.append(("run directory", str(run_dir)))
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
