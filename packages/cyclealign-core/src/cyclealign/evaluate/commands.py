"""The Python functions behind `cyclealign eval …` (the CLI only parses arguments and calls these).

Each writes its table as CSV and Markdown (plus per-item JSONL) into ``out_dir`` and
prints it with rich; each returns ``{"header", "rows", …}`` for programmatic use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from cyclealign.config import OracleConfig
from cyclealign.data.hh_rlhf import SUBSETS, HHExample, dialogue_text, load_hh_rlhf, stratified_sample
from cyclealign.errors import ConfigError, DataError
from cyclealign.evaluate.tables import merge_row, print_table, write_table
from cyclealign.infra.store import atomic_write_jsonl

TABLE1_TITLE = "Reward-model score, mean 100·sigmoid (Table 1; total weighted by test-set size)"


def _examples_and_sizes(
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


def load_examples(
    data: str | Path,
    subsets: Sequence[str] | None,
    split: str,
    k: int | None,
    seed: int,
    lenient: bool,
    console: Console,
) -> list[HHExample]:
    return _examples_and_sizes(data, subsets, split, k, seed, lenient, console)[0]


@contextmanager
def _progress(console: Console, label: str) -> Iterator[tuple[Progress, TaskID]]:
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


def _free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
    from cyclealign.evaluate.reward import RewardScorer, ScoredAnswer, table1
    from cyclealign.whitebox.prompt_format import FORMATS

    if prompt_format is not None and prompt_format not in FORMATS:
        raise ConfigError(f"--prompt-format: {prompt_format!r} is not one of {', '.join(FORMATS)}")
    console = console or Console()
    sizes: dict[str, int] | None
    if answers_file is not None:
        from cyclealign.evaluate.answers import file_examples

        examples, answers, system, out_dir = file_examples(answers_file, column, system, out_dir)
        sizes = _examples_and_sizes(data, subsets, split, None, seed, lenient, console)[1] if data else None
        weights = "the full splits' sizes (--data)" if sizes else "the file's rows per subset (--data: the splits')"
        console.print(f"scoring {len(examples)} answers from {answers_file}; total weighted by {weights}")
    elif data is None:
        raise ConfigError("--data: give the evaluation data (or --answers, a file of answers to score)")
    else:
        examples, sizes = _examples_and_sizes(data, subsets, split, k, seed, lenient, console)
        rows_in_split = sum(sizes.values())
        scope = "every row" if len(examples) == rows_in_split else f"a stratified subsample (--k {k})"
        console.print(f"scoring {len(examples)} of {rows_in_split} {split} rows: {scope}", highlight=False)
    out_dir = Path(out_dir or (Path(run_dir) / "eval" if run_dir else Path("eval")))
    system = system or (Path(run_dir).name if run_dir else Path(str(model)).name)
    if answers is None:
        from cyclealign.evaluate.generate import generate_answers, load_system

        with console.status(f"loading {system}…"):
            wb = load_system(
                run_dir=run_dir,
                model=model,
                device=None if device == "auto" else device,
                dtype=None if dtype == "auto" else dtype,
                prompt_format=prompt_format,
            )
        with _progress(console, f"generating with {system}") as (progress, task):
            progress.update(task, total=len(examples))
            answers = generate_answers(
                wb,
                [ex.prompt for ex in examples],
                max_new_tokens,
                batch_size,
                on_batch=lambda n: progress.update(task, advance=n),
            )
        del wb
        _free_accelerator_memory()  # the reward model (6.9B in the paper) needs the room next
    if len(answers) != len(examples):
        raise DataError(f"{len(answers)} answers for {len(examples)} sampled prompts")
    with console.status("loading the reward model…"):
        scorer = RewardScorer(reward_model, reward_kind, batch_size=batch_size, device=device, dtype=dtype)
    with _progress(console, "scoring with the reward model") as (progress, task):
        progress.update(task, total=len(examples))
        scores = scorer.score(
            [ex.prompt for ex in examples], list(answers), on_batch=lambda n: progress.update(task, advance=n)
        )
    scored = [
        ScoredAnswer(ex.id, ex.subset, dialogue_text(ex.prompt), a, s)
        for ex, a, s in zip(examples, answers, scores, strict=True)
    ]
    atomic_write_jsonl(
        out_dir / "answers.jsonl",
        [
            {
                "id": s.id,
                "subset": s.subset,
                "question": s.question,
                "messages": [{"role": m.role, "content": m.content} for m in ex.prompt.messages],
                "answer": s.answer,
                "score": s.score,
                "percent": round(s.percent, 4),
                "source": ex.source,
            }
            for s, ex in zip(scored, examples, strict=True)
        ],
    )
    header, rows = table1(scored, sizes)
    rows = [[system, *rows[0]]]
    write_table(out_dir, "table1_reward", TABLE1_TITLE, header, rows)
    if table is not None:
        rows = merge_row(Path(table), TABLE1_TITLE, header, rows[0])
    print_table(console, TABLE1_TITLE, header, rows)
    return {
        "header": header,
        "rows": rows,
        "answers": out_dir / "answers.jsonl",
        "scored": len(scored),
        "sizes": sizes,
    }


def eval_judge(
    *,
    answers_a: str | Path,
    answers_b: str | Path | None,
    oracle: OracleConfig,
    name_a: str = "A",
    name_b: str = "B",
    seed: int = 0,
    randomize: bool = True,
    max_tokens: int = 1024,
    out_dir: Path = Path("eval"),
    column_a: str | None = None,
    column_b: str | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Pairwise win / tie / lose of system A against B by an LLM judge: the paper's Table 2.

    With ``answers_b`` None, ``answers_a`` is a corrected file (``aligner correct``):
    its ``original`` answers (A) are judged against its ``corrected`` ones (B).
    ``max_tokens`` is the judge's own reply limit (its reasoning comes before the verdict;
    ``oracle.max_tokens`` is sized for rankings); replies cut off there are counted as truncated.
    """
    from cyclealign.evaluate.answers import answers_by_id, pair_mode
    from cyclealign.evaluate.judge import JudgeItem, judge, table2

    console = console or Console()
    if answers_b is None:
        answers_b, column_a, column_b, name_a, name_b = pair_mode(answers_a, name_a, name_b)
    a, b = answers_by_id(answers_a, column_a), answers_by_id(answers_b, column_b)
    common = [i for i in a if i in b]
    if not common:
        raise DataError(f"{answers_a} and {answers_b} share no item ids (answer the same sample: same --k/--seed)")
    for i in common:
        if a[i]["question"] != b[i]["question"]:
            raise DataError(f"item {i!r} has different questions in {answers_a} and {answers_b}")
    items = [JudgeItem(i, a[i]["subset"], a[i]["question"], a[i]["answer"], b[i]["answer"]) for i in common]
    out_dir = Path(out_dir)
    judge_oracle = open_oracle(oracle.model_copy(update={"max_tokens": max_tokens}), out_dir)
    try:
        with console.status(f"judging {len(items)} pairs…"):
            judgements = judge(items, judge_oracle, seed=seed, randomize=randomize)
        stats = judge_oracle.stats
    finally:
        judge_oracle.close()
    atomic_write_jsonl(
        out_dir / "judgements.jsonl",
        [
            {
                "id": j.item.id,
                "subset": j.item.subset,
                "a_shown_first": j.a_shown_first,
                "outcome": j.outcome,
                "reasoning": j.reasoning,
                "error": j.error,
                "truncated": j.truncated,
            }
            for j in judgements
        ],
    )
    title = f"LLM judge: {name_a} vs {name_b} (Table 2)"
    header, rows = table2(judgements, name_a, name_b)
    write_table(out_dir, "table2_judge", title, header, rows)
    print_table(console, title, header, rows)
    cut = sum(j.truncated for j in judgements)
    if cut:
        console.print(
            f"{cut} verdict(s) cut off at max_tokens={max_tokens} (column truncated): raise --max-tokens",
            highlight=False,
        )
    if stats.cost_usd:
        console.print(f"judge cost: ${stats.cost_usd:.4f}", highlight=False)
    return {"header": header, "rows": rows, "judgements": judgements}
