"""`cyclealign eval reward`: answers on the HH-RLHF test splits, scored by a reward model: the paper's Table 1
(mean 100·sigmoid(score) per subset: the paper states no scale; this one is the project's reading of its values).

The answers come from a run or a model (greedy, ``cyclealign.whitebox.greedy``) or
from a file (``eval generate``'s, ``aligner correct``'s); the reward models are
``reward_model.py``'s.  The table, its CSV and Markdown and the scored answers
(``answers.jsonl``) go to the output folder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from cyclealign.data.hh_rlhf import HHExample, dialogue_text
from cyclealign.errors import ConfigError, DataError
from cyclealign.evaluate.sample import examples_and_sizes, progress_bar
from cyclealign.evaluate.tables import merge_row, print_table, write_table

TABLE1_TITLE = "Reward-model score, mean 100·sigmoid (Table 1; total weighted by test-set size)"


@dataclass(frozen=True)
class ScoredAnswer:
    id: str
    subset: str
    question: str
    answer: str
    score: float

    @property
    def percent(self) -> float:
        """100·sigmoid(score): our reading of Table 1's scale, which the paper does not state."""
        return 100.0 / (1.0 + math.exp(-self.score))


PAPER_TEST_SIZES = {  # the paper's Table 6: rows in each subset's test split
    "harmless-base": 2312,
    "helpful-base": 2354,
    "helpful-online": 1137,
    "helpful-rejection-sampled": 2749,
}
TOTAL = "total"
PLAIN_MEAN = "unweighted subset mean"


def weighted_total(means: Mapping[str, float], sizes: Mapping[str, int]) -> float:
    """The mean of the subset means weighted by each subset's test-set size: the paper's Table 1 "Total".

    Scored on the full test splits this equals the mean over every answer; on a
    stratified subsample it estimates that figure instead of the plain mean of subsets.
    """
    missing = [s for s in means if sizes.get(s, 0) <= 0]
    if missing:
        raise DataError(f"no test-set size for subset(s) {', '.join(missing)}")
    weight = sum(sizes[s] for s in means)
    return sum(means[s] * sizes[s] for s in means) / weight


def table1(
    scored: Sequence[ScoredAnswer], sizes: Mapping[str, int] | None = None
) -> tuple[list[str], list[list[object]]]:
    """The paper's Table 1 layout: one row, mean 100·sigmoid(score) per subset, then the Totals.

    ``total`` weighs each subset by ``sizes`` (its full test split; default: the
    answers scored per subset); the unweighted mean of the subsets stands beside it.
    """
    subsets = sorted({s.subset for s in scored})
    header = ["system", *subsets, TOTAL, PLAIN_MEAN]
    if not scored:
        return header, [[float("nan"), float("nan")]]
    means = {sub: sum(xs) / len(xs) for sub in subsets if (xs := [s.percent for s in scored if s.subset == sub])}
    counts = {sub: sum(1 for s in scored if s.subset == sub) for sub in subsets}
    total = weighted_total(means, sizes if sizes is not None else counts)
    plain = sum(means.values()) / len(means)
    return header, [[*(round(means[s], 2) for s in subsets), round(total, 2), round(plain, 2)]]


def eval_reward(
    *,
    data: str | Path | None = None,
    reward_model: str | Path,
    reward_kind: str = "classifier",
    run_dir: Path | None = None,
    model: str | None = None,
    system: str | None = None,
    subsets: Sequence[str] | None = None,
    split: str = "test",
    k: int | None = None,
    seed: int = 0,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "auto",
    prompt_format: str | None = None,
    lenient: bool = False,
    out_dir: Path | None = None,
    table: Path | None = None,
    answers: Sequence[str] | None = None,
    answers_file: Path | None = None,
    column: str | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Generate answers on the full test split of each subset and score them: the paper's Table 1.

    The ``total`` weighs each subset by its split's size, as the paper's Totals do
    (the unweighted mean of the subsets stands beside it).  ``k`` scores a stratified
    subsample instead (its total still weighs by the full splits' sizes).
    ``answers`` skips generation (score answers produced elsewhere, in the sample's
    order); ``answers_file`` scores a file instead (``eval generate``'s, or ``aligner
    correct``'s with ``column`` original or corrected); ``table`` also merges this
    system's row into a shared CSV, one row per system.
    """
    from cyclealign.whitebox.prompt_format import FORMATS

    if prompt_format is not None and prompt_format not in FORMATS:
        raise ConfigError(f"--prompt-format: {prompt_format!r} is not one of {', '.join(FORMATS)}")
    console = console or Console()
    sample = {"subsets": subsets, "split": split, "seed": seed, "lenient": lenient, "console": console}
    if answers_file is not None:
        examples, answers, system, out_dir, sizes = file_sample(answers_file, column, system, out_dir, data, **sample)
    else:
        examples, sizes = split_sample(data, k, **sample)
    out_dir = Path(out_dir or (Path(run_dir) / "eval" if run_dir else Path("eval")))
    system = system or (Path(run_dir).name if run_dir else Path(str(model)).name)
    if answers is None:
        load = {"device": device, "dtype": dtype, "prompt_format": prompt_format}
        answers = generate_for(examples, system, run_dir, model, max_new_tokens, batch_size, load, console)
    if len(answers) != len(examples):
        raise DataError(f"{len(answers)} answers for {len(examples)} sampled prompts")
    scorer = {"kind": reward_kind, "batch_size": batch_size, "device": device, "dtype": dtype}
    scored = score_answers(examples, answers, reward_model, scorer, console)
    write_scored(out_dir / "answers.jsonl", scored, examples)
    header, rows = write_table1(scored, sizes, system, out_dir, table)
    print_table(console, TABLE1_TITLE, header, rows)
    return {"header": header, "rows": rows, "answers": out_dir / "answers.jsonl", "scored": len(scored), "sizes": sizes}


def write_table1(
    scored: Sequence[ScoredAnswer], sizes: Mapping[str, int] | None, system: str, out_dir: Path, table: Path | None
) -> tuple[list[str], list[list[object]]]:
    """This system's Table 1 row into ``out_dir``, and merged into ``table`` (a shared CSV) when given."""
    header, rows = table1(scored, sizes)
    rows = [[system, *rows[0]]]
    write_table(out_dir, "table1_reward", TABLE1_TITLE, header, rows)
    if table is not None:
        rows = merge_row(Path(table), TABLE1_TITLE, header, rows[0])
    return header, rows


def file_sample(
    answers_file: Path,
    column: str | None,
    system: str | None,
    out_dir: Path | None,
    data: str | Path | None,
    *,
    console: Console,
    **sample: Any,
) -> tuple[list[HHExample], list[str], str, Path, dict[str, int] | None]:
    """A file's answers as ``eval reward`` scores them, and its total's weights (the splits' sizes with ``data``)."""
    from cyclealign.evaluate.answers import file_examples

    examples, answers, system, out_dir = file_examples(answers_file, column, system, out_dir)
    sizes = examples_and_sizes(data, k=None, console=console, **sample)[1] if data else None
    weights = "the full splits' sizes (--data)" if sizes else "the file's rows per subset (--data: the splits')"
    console.print(f"scoring {len(examples)} answers from {answers_file}; total weighted by {weights}")
    return examples, answers, system, out_dir, sizes


def split_sample(
    data: str | Path | None, k: int | None, *, split: str, console: Console, **sample: Any
) -> tuple[list[HHExample], dict[str, int]]:
    """Every row of each subset's split, or a stratified subsample of ``k``; and the splits' sizes."""
    if data is None:
        raise ConfigError("--data: give the evaluation data (or --answers, a file of answers to score)")
    examples, sizes = examples_and_sizes(data, k=k, split=split, console=console, **sample)
    rows_in_split = sum(sizes.values())
    scope = "every row" if len(examples) == rows_in_split else f"a stratified subsample (--k {k})"
    console.print(f"scoring {len(examples)} of {rows_in_split} {split} rows: {scope}", highlight=False)
    return examples, sizes


def generate_for(
    examples: Sequence[HHExample],
    system: str,
    run_dir: Path | None,
    model: str | None,
    max_new_tokens: int,
    batch_size: int,
    load: dict[str, Any],
    console: Console,
) -> list[str]:
    """Greedy answers by the run or model, whose memory is freed before the reward model loads."""
    from cyclealign.whitebox.greedy import generate_answers, load_system, release_memory

    device, dtype = load["device"], load["dtype"]
    with console.status(f"loading {system}…"):
        wb = load_system(
            run_dir=run_dir,
            model=model,
            device=None if device == "auto" else device,
            dtype=None if dtype == "auto" else dtype,
            prompt_format=load["prompt_format"],
        )
    with progress_bar(console, f"generating with {system}") as (progress, task):
        progress.update(task, total=len(examples))
        prompts = [ex.prompt for ex in examples]
        answers = generate_answers(
            wb, prompts, max_new_tokens, batch_size, on_batch=lambda n: progress.update(task, advance=n)
        )
    del wb
    release_memory()  # the reward model (6.9B in the paper) needs the room next
    return answers


def score_answers(
    examples: Sequence[HHExample],
    answers: Sequence[str],
    reward_model: str | Path,
    scorer_options: dict[str, Any],
    console: Console,
) -> list[ScoredAnswer]:
    """Each answer scored by the reward model, with a progress bar."""
    from cyclealign.evaluate.reward_model import RewardScorer

    with console.status("loading the reward model…"):
        scorer = RewardScorer(reward_model, **scorer_options)
    with progress_bar(console, "scoring with the reward model") as (progress, task):
        progress.update(task, total=len(examples))
        scores = scorer.score(
            [ex.prompt for ex in examples], list(answers), on_batch=lambda n: progress.update(task, advance=n)
        )
    return [
        ScoredAnswer(ex.id, ex.subset, dialogue_text(ex.prompt), a, s)
        for ex, a, s in zip(examples, answers, scores, strict=True)
    ]


def write_scored(path: Path, scored: Sequence[ScoredAnswer], examples: Sequence[HHExample]) -> None:
    """The scored answers in the answers layout, plus ``score``, ``percent`` and ``source``."""
    from cyclealign.evaluate.answers import answer_record, write_answers

    records = [
        answer_record(
            s.id,
            s.subset,
            ex.prompt,
            s.question,
            answer=s.answer,
            score=s.score,
            percent=round(s.percent, 4),
            source=ex.source,
        )
        for s, ex in zip(scored, examples, strict=True)
    ]
    write_answers(path, records)
