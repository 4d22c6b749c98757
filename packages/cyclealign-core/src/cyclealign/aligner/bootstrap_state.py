"""The directory of ``aligner bootstrap``: which step of which round is done, and the table of rounds.

What is done lives in ``run.json`` (``rounds``: per round, each finished step with its
numbers), rewritten atomically after the step's outputs are complete, so a kill at any
moment leaves every recorded step whole.  A resume removes only the project's temporary
names (``.cyclealign-tmp-*``) and redoes the step that was cut off; files a user put into
the directory stay where they are.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from cyclealign.errors import ConfigError, RunDirError
from cyclealign.infra.store import TEMP_PREFIX, RunDir, atomic_write_json, atomic_write_text

STEPS = ("correct", "export", "train", "model")  # one round, in order
COLUMNS = ("round", "answers", "changed", "kept", "pairs", "steps", "held-out margin", "upstream")


class BootstrapDir(RunDir):
    """A bootstrap run: ``run.json`` (status and the done steps), ``config.yaml``, ``round-K/``, the summary."""

    def round_dir(self, k: int) -> Path:
        return self.path / f"round-{k}"

    @property
    def rounds(self) -> dict[str, dict[str, Any]]:
        return self.meta.setdefault("rounds", {})

    def done(self, k: int, step: str) -> dict[str, Any] | None:
        return self.rounds.get(str(k), {}).get(step)

    def mark(self, k: int, step: str, info: dict[str, Any]) -> None:
        """Record ``step`` of round ``k`` as done (call only once its outputs are complete)."""
        self.rounds.setdefault(str(k), {})[step] = info
        self.update_process()
        self.set_status("running")

    def create(self, public: dict[str, Any]) -> None:
        """A fresh run directory; refuses one that holds anything but the project's temporary names."""
        if public["run"]["overwrite"]:
            raise ConfigError(
                "run.overwrite: aligner bootstrap never replaces a run; choose another run.dir, or continue "
                "this one with --resume"
            )
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"run.dir: {self.path} is a file, not a directory")
        if self.path.is_dir():
            others = sorted(c.name for c in self.path.iterdir() if not c.name.startswith(TEMP_PREFIX))
            if (self.path / "run.json").is_file():
                raise RunDirError(
                    f"run.dir: {self.path} already holds a run; continue it with "
                    f"`cyclealign aligner bootstrap --resume {self.path}` or choose another run.dir"
                )
            if others:
                raise RunDirError(f"run.dir: {self.path} is not empty ({', '.join(others[:5])}); choose another")
        self.path.mkdir(parents=True, exist_ok=True)
        self.meta.update(kind="aligner-bootstrap", rounds={})
        self.start_process()
        self.write_config(public)
        self.set_status("running")

    def write_config(self, public: dict[str, Any]) -> None:
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(public, sort_keys=False))

    def reopen(self) -> None:
        """An existing bootstrap run, its temporary leftovers (top level and rounds) removed."""
        self.require_existing()
        if self.meta.get("kind") != "aligner-bootstrap":
            raise RunDirError(f"{self.path} holds no aligner bootstrap run (its run.json has no rounds)")
        for leftover in [*self.path.glob(f"round-*/{TEMP_PREFIX}*")]:
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        self.start_process()
        self.set_status("running")


def _margin(train: dict[str, Any] | None) -> str:
    before = (train or {}).get("heldout_before") or {}
    after = (train or {}).get("heldout_after") or {}
    if "margin" not in before or "margin" not in after:
        return "–"
    return f"{before['margin']:+.3f} → {after['margin']:+.3f}"


def _short(path: str | None, root: Path) -> str | None:
    """A path inside the run directory relative to it (``round-1/model``), any other as given."""
    if path is None or not Path(path).is_relative_to(root):
        return path
    return str(Path(path).relative_to(root))


def table_rows(store: BootstrapDir) -> list[dict[str, Any]]:
    """One row per round that has at least its corrections: how many answers the corrector changed and kept."""
    rows = []
    for key in sorted(store.rounds, key=int):
        steps = store.rounds[key]
        if "correct" not in steps:
            continue
        c, e, t = steps["correct"], steps.get("export") or {}, steps.get("train")
        rows.append(
            {
                "round": int(key),
                "upstream": _short(c["upstream"], store.path),
                "answers": c["answers"],
                "changed": c["changed"],
                "kept": c["kept"],
                "pairs": e.get("pairs", "–"),
                "steps": t["steps"] if t else "–",
                "held-out margin": _margin(t),
                "model": _short((steps.get("model") or {}).get("path"), store.path),
            }
        )
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_summary(store: BootstrapDir, rows: list[dict[str, Any]], rounds: int) -> None:
    """``summary.json`` (the rows) and ``summary.md`` (the same table, for a person)."""
    finished = sum(1 for r in rows if r["model"])
    summary = {"rounds": rounds, "rounds_finished": finished, "table": rows}
    atomic_write_json(store.path / "summary.json", summary)
    head = f"# aligner bootstrap: {finished} of {rounds} rounds\n\n"
    atomic_write_text(store.path / "summary.md", head + markdown_table(rows))


def print_table(console: Any, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="corrected vs original, per round")
    for c in COLUMNS:  # the numbers never wrap; a long upstream path folds instead
        if c == "upstream":
            table.add_column(c, overflow="fold")
        else:
            table.add_column(c.replace("held-out ", ""), justify="right", no_wrap=True)
    for r in rows:
        table.add_row(*(str(r[c]) for c in COLUMNS))
    console.print(table)
