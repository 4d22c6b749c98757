"""`cyclealign report RUN_DIR`: a run as pictures (PNG) and one self-contained HTML page.

Plots: agreement over interactions, oracle failures and cumulative cost, losses
per training step; evaluation tables (``RUN/eval/*.md``) are included when present.
The HTML embeds the PNGs (base64), so the page alone can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cyclealign.store import RunDirError, atomic_write_text, read_jsonl


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RunDirError('reports need matplotlib: pip install "cyclealign-core[eval]"') from None
    return plt


def _cumulative_rate(flags: list[bool]) -> list[float]:
    out, hits = [], 0
    for i, f in enumerate(flags, 1):
        hits += int(f)
        out.append(hits / i)
    return out


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def plot_run(records: list[dict[str, Any]], out_dir: Path) -> list[tuple[str, Path]]:
    """The run's PNGs, as (caption, path)."""
    plt = _plt()
    out_dir.mkdir(parents=True, exist_ok=True)
    x = list(range(1, len(records) + 1))
    plots: list[tuple[str, Path]] = []

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(x, _cumulative_rate([bool(r.get("agreed_fully")) for r in records]), label="full agreement")
    lengths = [len(r.get("agreement") or []) / max(1, len(r.get("candidates") or [1])) for r in records]
    ax.plot(x, lengths, ".", alpha=0.5, label="LCS length / l")
    ax.set(xlabel="interaction", ylabel="rate", ylim=(0, 1.05), title="Oracle and self ranking agreement")
    ax.legend()
    plots.append(("Agreement between the oracle's and the model's rankings", _save(fig, out_dir / "agreement.png")))

    fig, ax = plt.subplots(figsize=(6, 3.2))
    failures = [r.get("oracle", {}).get("order") is None for r in records]
    (fail_line,) = ax.plot(x, [sum(failures[:i]) for i in x], color="tab:red", label="oracle failures (cumulative)")
    ax.set(xlabel="interaction", ylabel="failures", title="Oracle failures and cost")
    ax.set_ylim(bottom=0, top=max(1, sum(failures)) * 1.1)
    ax2 = ax.twinx()
    costs, total = [], 0.0
    for r in records:
        total += float(r.get("oracle", {}).get("cost_usd") or 0.0)
        costs.append(total)
    (cost_line,) = ax2.plot(x, costs, color="tab:green", linestyle="--", label="cost USD (cumulative)")
    ax2.set_ylabel("USD")
    ax2.set_ylim(bottom=0, top=max(total, 0.01) * 1.1)
    ax.legend(handles=[fail_line, cost_line], loc="upper left", fontsize="small")
    plots.append(("Oracle failures and cumulative cost", _save(fig, out_dir / "oracle.png")))

    trained = [(i, r["loss"]) for i, r in enumerate(records, 1) if r.get("loss")]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for key in ("total", "rank", "sft"):
        pts = [(i, loss[key]) for i, loss in trained if key in loss]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=key)
    ax.set(xlabel="interaction", ylabel="loss", title="Training losses")
    if trained:
        ax.legend()
    plots.append(("Losses per training step", _save(fig, out_dir / "losses.png")))
    return plots


def write_report(run_dir: str | Path) -> Path:
    """Write ``RUN/report/*.png``, ``report.md`` and a self-contained ``report.html``; return the HTML path."""
    run_dir = Path(run_dir)
    interactions = run_dir / "interactions.jsonl"
    if not interactions.exists():
        raise RunDirError(f"{run_dir}: no interactions.jsonl, so nothing to report (is this a run directory?)")
    records = read_jsonl(interactions)
    out = run_dir / "report"
    plots = plot_run(records, out)
    tables = sorted((run_dir / "eval").glob("*.md")) if (run_dir / "eval").is_dir() else []
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else None

    md = [f"# CycleAlign run `{run_dir.name}`", ""]
    body = [f"<h1>CycleAlign run <code>{html.escape(run_dir.name)}</code></h1>"]
    if summary:
        md += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in summary.items() if not isinstance(v, dict)]
        body.append(
            "<table>"
            + "".join(
                f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                for k, v in summary.items()
                if not isinstance(v, dict)
            )
            + "</table>"
        )
    for caption, path in plots:
        md += ["", f"## {caption}", "", f"![{caption}]({path.name})"]
        data = base64.b64encode(path.read_bytes()).decode()
        body.append(
            f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
        )
    for table in tables:
        text = table.read_text()
        md += ["", text]
        body.append(f"<pre>{html.escape(text)}</pre>")
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>CycleAlign report</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:.2em .8em;"
        "text-align:left}img{max-width:100%}</style></head><body>" + "".join(body) + "</body></html>"
    )
    atomic_write_text(out / "report.html", page)
    return out / "report.html"


def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `cyclealign run`.")],
) -> None:
    """Plot a run (agreement, oracle failures and cost, losses) into PNGs and one HTML page."""
    from rich.console import Console

    try:
        path = write_report(run_dir)
    except RunDirError as e:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    Console().print(f"report written: {path} (and PNGs + report.md beside it)")
