"""What every `cyclealign eval …` command draws on: the evaluation sample, a progress bar, the judging oracle.

The sample is the same for every command given the same ``--k``/``--seed`` (same
ids), so the answers of one system pair with another's in ``eval judge``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from cyclealign.config import OracleConfig
from cyclealign.data.hh_rlhf import SUBSETS, HHExample, load_hh_rlhf, stratified_sample


def examples_and_sizes(
    data: str | Path,
    subsets: Sequence[str] | None,
    split: str,
    k: int | None,
    seed: int,
    lenient: bool,
    console: Console,
) -> tuple[list[HHExample], dict[str, int]]:
    """The (sampled) examples, and how many rows each subset's split holds after filtering."""
    examples, report = load_hh_rlhf(data, subsets=subsets or SUBSETS, split=split, lenient=lenient)
    console.print(f"HH-RLHF {split} ({', '.join(sorted(report.per_subset))}): {report.summary()}", highlight=False)
    sizes: dict[str, int] = {}
    for ex in examples:
        sizes[ex.subset] = sizes.get(ex.subset, 0) + 1
    return stratified_sample(examples, k, seed), sizes


@contextmanager
def progress_bar(console: Console, label: str) -> Iterator[tuple[Progress, TaskID]]:
    """A progress bar for long evaluation work (thousands of answers on the full test splits)."""
    progress = Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    with progress:
        yield progress, progress.add_task(label, total=None)


def open_oracle(config: OracleConfig, cache_dir: Path) -> Any:
    """Any registered oracle (plugins included), its cache in the output folder unless configured."""
    from cyclealign.plugins import create_oracle

    if config.cache and config.cache_path is None:
        config = config.model_copy(update={"cache_path": Path(cache_dir) / "eval_cache.sqlite"})
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return create_oracle(config)
