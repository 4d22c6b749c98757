"""`cyclealign report RUN_DIR`: a run as pictures (PNG) and one page (HTML, plus Markdown).

Plots from ``interactions.jsonl``: agreement over interactions, oracle failures
and cumulative cost, training losses.  When ``RUN/eval/`` holds evaluation tables
(written by ``cyclealign eval …``) they are plotted too and shown as tables.  The
HTML embeds the PNGs (base64), so the page alone can be mailed or archived; the
Markdown page references the PNG files beside it.  Records are read tolerantly:
a missing optional key leaves a gap, never a crash.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cyclealign.errors import RunDirError, SetupError
from cyclealign.infra.store import atomic_write_text, read_jsonl

INSTALL_HINT = 'pip install "cyclealign-core[eval]"'


def pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SetupError(f"reports need matplotlib: {INSTALL_HINT}") from None
    return plt


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def cumulative_rate(flags: Sequence[bool]) -> list[float]:
    out, hits = [], 0
    for i, f in enumerate(flags, 1):
        hits += int(f)
        out.append(hits / i)
    return out


def save_figure(fig: Any, path: Path) -> Path:
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:
        if ax.get_xlabel() == "interaction":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def plot_run(records: Sequence[dict[str, Any]], out_dir: Path) -> list[tuple[str, Path]]:
    """The run's PNGs, as (caption, path)."""
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    x = list(range(1, len(records) + 1))
    plots: list[tuple[str, Path]] = []

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(x, cumulative_rate([bool(r.get("agreed_fully")) for r in records]), label="full agreement (cumulative)")
    lcs = [len(r.get("agreement") or []) / max(1, len(r.get("candidates") or [None])) for r in records]
    ax.plot(x, lcs, ".", alpha=0.5, label="agreement length / candidates")
    ax.set(xlabel="interaction", ylabel="rate", ylim=(0, 1.05), title="Oracle and self ranking agreement")
    ax.legend(loc="lower right", fontsize="small")
    plots.append(
        ("Agreement between the oracle's and the model's rankings", save_figure(fig, out_dir / "agreement.png"))
    )

    fig, ax = plt.subplots(figsize=(6, 3.2))
    oracles = [r.get("oracle") or {} for r in records]
    failures = [o.get("order") is None for o in oracles]
    (fail_line,) = ax.plot(x, [sum(failures[:i]) for i in x], color="tab:red", label="oracle failures (cumulative)")
    ax.set(xlabel="interaction", ylabel="failures", title="Oracle failures and cost")
    ax.set_ylim(bottom=0, top=max(1, sum(failures)) * 1.1)
    ax2 = ax.twinx()
    costs, total = [], 0.0
    for o in oracles:
        total += _num(o.get("cost_usd")) or 0.0
        costs.append(total)
    (cost_line,) = ax2.plot(x, costs, color="tab:green", linestyle="--", label="cost USD (cumulative)")
    ax2.set_ylabel("USD")
    ax2.set_ylim(bottom=0, top=max(total, 0.01) * 1.1)
    ax.legend(handles=[fail_line, cost_line], loc="upper left", fontsize="small")
    plots.append(("Oracle failures and cumulative cost", save_figure(fig, out_dir / "oracle.png")))

    fig, ax = plt.subplots(figsize=(6, 3.2))
    drawn = False
    for key in ("total", "rank", "sft"):
        pts = [(i, _num((r.get("loss") or {}).get(key))) for i, r in enumerate(records, 1)]
        pts = [(i, v) for i, v in pts if v is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=key)
            drawn = True
    ax.set(xlabel="interaction", ylabel="loss", title="Training losses")
    if drawn:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no training step recorded", ha="center", va="center", transform=ax.transAxes)
    plots.append(("Losses per training step", save_figure(fig, out_dir / "losses.png")))
    return plots


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]] | None:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, csv.Error):
        return None
    return (rows[0], rows[1:]) if rows else None


def _floats(row: Sequence[str]) -> list[float]:
    out = []
    for cell in row:
        try:
            out.append(float(cell))
        except ValueError:
            out.append(float("nan"))
    return out


_TABLE = {"table2_judge": "Table 2", "table3_human": "Table 3"}


def plot_eval_table(kind: str, header: list[str], rows: list[list[str]], path: Path) -> Path | None:
    """A chart for a Table 1 / 2 / 3, oracle-accuracy or human-pair-accuracy CSV; None for other tables."""
    plt = pyplot()
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    if kind == "table1_reward":
        cols = header[1:]
        width = 0.8 / len(rows)
        for k, row in enumerate(rows):
            ax.bar([i + k * width for i in range(len(cols))], _floats(row[1:]), width, label=row[0])
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cols))], cols, rotation=15, fontsize="small")
        ax.set(ylabel="mean 100·sigmoid(score)", title="Reward-model score per subset (Table 1)")
        ax.legend(fontsize="small")
    elif kind in ("table2_judge", "table3_human"):
        rows = rows[::-1]  # barh draws bottom-up; keep the table's reading order
        names = [r[0] for r in rows]
        left = [0.0] * len(rows)
        for col, color in zip((1, 2, 3), ("tab:green", "tab:gray", "tab:red"), strict=True):
            vals = [_floats([r[col]])[0] for r in rows]
            ax.barh(names, vals, left=left, color=color, label=header[col])
            left = [a + b for a, b in zip(left, vals, strict=True)]
        versus = f"{header[1].removesuffix(' win %')} vs {header[3].removesuffix(' win %')}"
        what = "LLM judge" if kind == "table2_judge" else "Human evaluation"
        ax.set(xlabel="% of judged pairs", xlim=(0, 100), title=f"{what}: {versus} ({_TABLE[kind]})")
        ax.legend(fontsize="small", ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    elif kind == "oracle_accuracy_training":
        points = [(_floats([r[0].split("-")[-1]])[0], _floats([r[header.index("accuracy %")]])[0]) for r in rows[:-1]]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color="tab:blue")
        ax.set(xlabel="interaction", ylabel="pairwise accuracy %", ylim=(0, 100))
        ax.set_title("Oracle ranking accuracy during training (Figure 4)")
    elif kind in ("human_pair_accuracy", "oracle_accuracy"):  # oracle_accuracy: its name before the rename
        modes = [r[0] for r in rows]
        acc = [_floats([r[header.index("accuracy %")]])[0] for r in rows]
        ax.bar(modes, acc, color="tab:blue")
        ax.set(
            ylabel="accuracy % (valid verdicts)", ylim=(0, 100), title="Oracle accuracy on fixed human-labelled pairs"
        )
        ax.tick_params(axis="x", labelrotation=15, labelsize="small")
    else:
        pyplot().close(fig)
        return None
    return save_figure(fig, path)


def _eval_tables(run_dir: Path, out: Path) -> list[tuple[str, list[str], list[list[str]], Path | None]]:
    """(title, header, rows, plot) for each evaluation CSV under ``RUN/eval``."""
    eval_dir = run_dir / "eval"
    if not eval_dir.is_dir():
        return []
    found = []
    for csv_path in sorted(eval_dir.rglob("*.csv")):
        table = _read_csv(csv_path)
        if table is None:
            continue
        header, rows = table
        rel = csv_path.relative_to(eval_dir)
        slug = "eval-" + "-".join(rel.with_suffix("").parts)
        plot = plot_eval_table(csv_path.stem, header, rows, out / f"{slug}.png")
        md = csv_path.with_suffix(".md")
        title = md.read_text(encoding="utf-8").splitlines()[0].lstrip("# ") if md.exists() else str(rel)
        found.append((f"{title} — eval/{rel.as_posix()}", header, rows, plot))
    return found


def _flat(summary: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in summary.items():
        if isinstance(value, dict):
            items += _flat(value, f"{prefix}{key}.")
        elif not isinstance(value, list):
            items.append((f"{prefix}{key}", round(value, 4) if isinstance(value, float) else value))
    return items


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(map(str, r)) + " |" for r in rows
    ]


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    esc = lambda v: html.escape(str(v))  # noqa: E731
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_img(caption: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    alt = html.escape(caption, quote=True)
    return f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption>{alt}</figcaption></figure>'


PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .7em;text-align:left}"
    "img{max-width:100%}figure{margin:1em 0}figcaption{color:#555;font-size:.9em}"
)


def write_pages(out: Path, stem: str, title: str, md: Sequence[str], body: Sequence[str]) -> Path:
    """``stem.md`` and ``stem.html`` (one style for every page the reports write); returns the HTML page."""
    atomic_write_text(out / f"{stem}.md", "\n".join(md) + "\n")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{PAGE_STYLE}</style></head><body>" + "\n".join(body) + "</body></html>"
    )
    atomic_write_text(out / f"{stem}.html", page)
    return out / f"{stem}.html"


def write_report(run_dir: str | Path) -> Path:
    """Write ``RUN/report/*.png``, ``report.md`` and a self-contained ``report.html``; return the HTML path."""
    run_dir = Path(run_dir)
    interactions = run_dir / "interactions.jsonl"
    if not interactions.exists():
        raise RunDirError(f"{run_dir}: no interactions.jsonl, so nothing to report (is this a run directory?)")
    records = read_jsonl(interactions)
    out = run_dir / "report"
    plots = plot_run(records, out)
    tables = _eval_tables(run_dir, out)
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text(encoding="utf-8")) if summary_file.exists() else None

    name = html.escape(run_dir.resolve().name)
    md = [f"# CycleAlign run `{run_dir.resolve().name}`", "", f"{len(records)} interactions."]
    body = [f"<h1>CycleAlign run <code>{name}</code></h1><p>{len(records)} interactions.</p>"]
    if summary:
        rows = _flat(summary)
        md += ["", "## Summary", "", *md_table(["key", "value"], rows)]
        body += ["<h2>Summary</h2>", html_table(["key", "value"], rows)]
    md += ["", "## Training"]
    body.append("<h2>Training</h2>")
    for caption, path in plots:
        md += ["", f"![{caption}]({path.name})", "", f"*{caption}*"]
        body.append(html_img(caption, path))
    if tables:
        md += ["", "## Evaluation"]
        body.append("<h2>Evaluation</h2>")
    for title, header, rows, plot in tables:
        md += ["", f"### {title}", "", *md_table(header, rows)]
        body += [f"<h3>{html.escape(title)}</h3>", html_table(header, rows)]
        if plot is not None:
            md += ["", f"![{title}]({plot.name})"]
            body.append(html_img(title, plot))
    return write_pages(out, "report", f"CycleAlign report: {name}", md, body)
