"""The Python functions behind `cyclealign eval …` (the CLI only parses arguments and calls these)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from cyclealign.config import OracleConfig
from cyclealign.data.hh_rlhf import SUBSETS, load_hh_rlhf, stratified_sample
from cyclealign.evaluate.tables import print_table, write_table
from cyclealign.store import atomic_write_jsonl


def _examples(data: str | Path, subsets: Sequence[str] | None, split: str, k: int | None, seed: int) -> list[Any]:
    examples, _report = load_hh_rlhf(data, subsets=subsets or SUBSETS, split=split)
    return stratified_sample(examples, k, seed)


def _oracle(config: OracleConfig, cache_dir: Path) -> Any:
    from cyclealign.plugins import create_oracle

    if config.cache and config.cache_path is None:
        config = config.model_copy(update={"cache_path": cache_dir / "eval_cache.sqlite"})
    return create_oracle(config)


def eval_reward(
    *,
    data: str | Path,
    reward_model: str | Path,
    reward_kind: str = "classifier",
    run_dir: Path | None = None,
    model: str | None = None,
    system: str | None = None,
    subsets: Sequence[str] | None = None,
    split: str = "test",
    k: int | None = 40,
    seed: int = 0,
    max_new_tokens: int = 128,
    out_dir: Path | None = None,
    answers: Sequence[str] | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Generate answers on a stratified test sample and score them: the paper's Table 1."""
    from cyclealign.evaluate.generate import generate_answers, load_system
    from cyclealign.evaluate.reward import RewardScorer, ScoredAnswer, question_text, table1

    console = console or Console()
    examples = _examples(data, subsets, split, k, seed)
    out_dir = Path(out_dir or (Path(run_dir) / "eval" if run_dir else Path("eval")))
    system = system or (Path(run_dir).name if run_dir else str(model))
    if answers is None:
        with console.status(f"generating {len(examples)} answers with {system}…"):
            wb = load_system(run_dir=run_dir, model=model)
            answers = generate_answers(wb, [ex.prompt for ex in examples], max_new_tokens)
    questions = [question_text(ex.prompt) for ex in examples]
    with console.status("scoring with the reward model…"):
        scores = RewardScorer(reward_model, reward_kind).score(questions, list(answers))
    scored = [
        ScoredAnswer(ex.id, ex.subset, q, a, s)
        for ex, q, a, s in zip(examples, questions, answers, scores, strict=True)
    ]
    atomic_write_jsonl(
        out_dir / "answers.jsonl",
        [
            {"id": s.id, "subset": s.subset, "question": s.question, "answer": s.answer, "score": s.score}
            for s in scored
        ],
    )
    header, rows = table1(scored)
    rows = [[system, *rows[0]]]
    header = ["system", *header[1:]]
    write_table(out_dir, "table1_reward", "Reward-model score, 100·sigmoid (Table 1)", header, rows)
    print_table(console, "Reward-model score, 100·sigmoid (Table 1)", header, rows)
    return {"header": header, "rows": rows, "answers": out_dir / "answers.jsonl"}


def eval_judge(
    *,
    answers_a: str | Path,
    answers_b: str | Path,
    oracle: OracleConfig,
    name_a: str = "A",
    name_b: str = "B",
    seed: int = 0,
    randomize: bool = True,
    out_dir: Path = Path("eval"),
    console: Console | None = None,
) -> dict[str, Any]:
    """Pairwise win / tie / lose of system A against B by an LLM judge: the paper's Table 2."""
    from cyclealign.evaluate.judge import JudgeItem, judge, load_answers, table2

    console = console or Console()
    a, b = load_answers(str(answers_a)), load_answers(str(answers_b))
    common = [i for i in a if i in b]
    if not common:
        raise ValueError(f"{answers_a} and {answers_b} share no item ids")
    items = [JudgeItem(i, a[i]["subset"], a[i]["question"], a[i]["answer"], b[i]["answer"]) for i in common]
    judge_oracle = _oracle(oracle, Path(out_dir))
    try:
        judgements = judge(items, judge_oracle, seed=seed, randomize=randomize)
    finally:
        judge_oracle.close()
    atomic_write_jsonl(
        Path(out_dir) / "judgements.jsonl",
        [
            {"id": j.item.id, "a_shown_first": j.a_shown_first, "outcome": j.outcome, "error": j.error}
            for j in judgements
        ],
    )
    header, rows = table2(judgements, name_a, name_b)
    write_table(Path(out_dir), "table2_judge", f"LLM judge: {name_a} vs {name_b} (Table 2)", header, rows)
    print_table(console, f"LLM judge: {name_a} vs {name_b} (Table 2)", header, rows)
    return {"header": header, "rows": rows, "judgements": judgements}


def eval_oracle_accuracy(
    *,
    data: str | Path,
    oracle: OracleConfig,
    modes: Sequence[str] = ("none", "static", "dynamic"),
    demos: str | Path | None = None,
    subsets: Sequence[str] | None = None,
    split: str = "test",
    k: int | None = 40,
    seed: int = 0,
    out_dir: Path = Path("eval"),
    console: Console | None = None,
) -> dict[str, Any]:
    """Oracle ranking accuracy against human labels with none / static / dynamic demonstrations."""
    from cyclealign.evaluate.oracle_accuracy import load_demos_file, oracle_accuracy

    console = console or Console()
    examples = _examples(data, subsets, split, k, seed)
    dynamic = load_demos_file(demos)
    modes = [m for m in modes if m != "dynamic" or dynamic]
    ranker = _oracle(oracle, Path(out_dir))
    try:
        results = [oracle_accuracy(examples, ranker, mode, dynamic, seed) for mode in modes]
    finally:
        ranker.close()
    header = ["demonstrations", "pairs", "valid", "correct", "accuracy %", "accuracy (failures wrong) %"]
    rows = [
        [r.mode, r.pairs, r.valid, r.correct, round(100 * r.accuracy, 1), round(100 * r.accuracy_all, 1)]
        for r in results
    ]
    write_table(Path(out_dir), "oracle_accuracy", "Oracle ranking accuracy (Figure 4 / Table 4)", header, rows)
    print_table(console, "Oracle ranking accuracy (Figure 4 / Table 4)", header, rows)
    (Path(out_dir) / "oracle_accuracy.json").write_text(json.dumps([r.__dict__ for r in results], indent=2))
    return {"header": header, "rows": rows, "results": results}
