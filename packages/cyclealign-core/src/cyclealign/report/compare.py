"""`cyclealign report RUN RUN …`: several runs on one page, one curve per run (e.g. Figure 4's full / w/o D2 / w/o ICL).

Two figures: the oracle's ranking accuracy over training, from each run's
``eval/oracle_accuracy_training.json`` (written by ``cyclealign eval oracle-accuracy
--run``; runs without it are named on the page and left out of that figure), and
the cumulative full-agreement rate from each run's ``interactions.jsonl``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from cyclealign.errors import RunDirError
from cyclealign.evaluate.run_accuracy import RESULT_NAME, load_curve
from cyclealign.infra.store import read_jsonl
from cyclealign.report.page import (
    cumulative_rate,
    html_img,
    html_table,
    md_table,
    pyplot,
    save_figure,
    write_pages,
)


def _label(run_dir: Path, runs: Sequence[Path]) -> str:
    """The folder's name, or the path as given when two runs share a name."""
    names = [r.resolve().name for r in runs]
    return run_dir.resolve().name if names.count(run_dir.resolve().name) == 1 else str(run_dir)


def accuracy_curves(
    runs: Sequence[Path],
) -> tuple[list[tuple[str, list[float], list[float]]], list[str]]:
    """(label, interval ends, accuracy %) for each run that has the measurement; the labels of those without."""
    curves, missing = [], []
    for r in runs:
        if (r / "eval" / f"{RESULT_NAME}.json").is_file():
            _, xs, ys = load_curve(r)
            curves.append((_label(r, runs), xs, ys))
        else:
            missing.append(_label(r, runs))
    return curves, missing


def write_comparison(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Write ``OUT/figure4.png``, ``OUT/agreement.png``, ``compare.md`` and a self-contained ``compare.html``."""
    runs = [Path(r) for r in run_dirs]
    for r in runs:
        if not (r / "interactions.jsonl").is_file():
            raise RunDirError(f"{r}: no interactions.jsonl (is this a run directory?)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    figures: list[tuple[str, Path]] = []
    curves, missing = accuracy_curves(runs)
    rows = []
    if curves:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for label, xs, ys in curves:
            ax.plot(xs, ys, marker="o", label=label)
            rows.append([label, *(f"{x:g}: {y:.1f}" for x, y in zip(xs, ys, strict=True))])
        ax.set(xlabel="interaction", ylabel="pairwise accuracy %", ylim=(0, 100))
        ax.set_title("Oracle ranking accuracy during training (Figure 4)")
        ax.legend(fontsize="small")
        figures.append(
            ("Oracle ranking accuracy against a reward model's order", save_figure(fig, out / "figure4.png"))
        )
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for r in runs:
        records = read_jsonl(r / "interactions.jsonl")
        rate = cumulative_rate([bool(x.get("agreed_fully")) for x in records])
        ax.plot(range(1, len(rate) + 1), rate, label=_label(r, runs))
    ax.set(xlabel="interaction", ylabel="rate", ylim=(0, 1.05), title="Full agreement (cumulative)")
    ax.legend(fontsize="small")
    figures.append(
        ("Full agreement between the oracle's and the model's rankings", save_figure(fig, out / "agreement.png"))
    )

    note = f"No oracle-accuracy measurement (eval/{RESULT_NAME}.json) for: {', '.join(missing)}." if missing else ""
    md = ["# CycleAlign runs compared", "", ", ".join(f"`{_label(r, runs)}`" for r in runs)]
    body = ["<h1>CycleAlign runs compared</h1>", f"<p>{html.escape(', '.join(_label(r, runs) for r in runs))}</p>"]
    if note:
        md += ["", note]
        body.append(f"<p>{html.escape(note)}</p>")
    if rows:
        width = max(len(r) for r in rows)
        header = ["run", *(f"point {i}" for i in range(1, width))]
        rows = [r + [""] * (width - len(r)) for r in rows]
        md += ["", "## Accuracy % at interval end (interaction: accuracy)", "", *md_table(header, rows)]
        body += ["<h2>Accuracy % at interval end</h2>", html_table(header, rows)]
    for caption, path in figures:
        md += ["", f"![{caption}]({path.name})"]
        body.append(html_img(caption, path))
    return write_pages(out, "compare", "CycleAlign runs compared", md, body)
