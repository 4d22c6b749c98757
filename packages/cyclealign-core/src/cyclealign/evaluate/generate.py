"""`cyclealign eval generate`: answers to the evaluation sample from any model (the paper's zero-shot rows).

The sample is drawn exactly as ``eval reward`` draws it (same ``--k``/``--seed``,
same ids), so the file scores with ``eval reward --answers`` and pairs with any other
system's answers in ``eval judge``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from cyclealign.config import OracleConfig


def eval_generate(
    *,
    data: str | Path,
    model: str | Path,
    oracle: OracleConfig | None = None,
    api_base: str | None = None,
    system: str | None = None,
    subsets: Sequence[str] | None = None,
    split: str = "test",
    k: int | None = None,
    seed: int = 0,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "auto",
    lenient: bool = False,
    out_dir: Path | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Answer every test row (with ``k``: the stratified sample ``eval reward --k`` draws) with ``model``.

    ``model`` is a litellm model string or a local model or run directory.

    A chat model is called with the ``oracle`` section's retries, concurrency, cache
    (``OUT/upstream_cache.sqlite`` unless ``oracle.cache_path`` is set) and budget.
    """
    from cyclealign.data.hh_rlhf import dialogue_text
    from cyclealign.evaluate.answers import answer_record, write_answers
    from cyclealign.evaluate.sample import examples_and_sizes
    from cyclealign.upstream import answer_and_close, open_upstream

    console = console or Console()
    examples = examples_and_sizes(data, subsets, split, k, seed, lenient, console)[0]
    system = system or Path(str(model)).name
    out_dir = Path(out_dir or Path("eval") / system)
    upstream = open_upstream(
        model,
        oracle=oracle,
        api_base=api_base,
        cache_path=out_dir / "upstream_cache.sqlite",
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
    )
    answers, usage = answer_and_close(upstream, [ex.prompt for ex in examples], console)

    records = [
        answer_record(ex.id, ex.subset, ex.prompt, dialogue_text(ex.prompt), answer=a, source=ex.source, system=system)
        for ex, a in zip(examples, answers, strict=True)
    ]
    path = write_answers(out_dir / "answers.jsonl", records)
    console.print(f"{len(records)} answers by {system} → {path}" + (f" ({usage})" if usage else ""), highlight=False)
    return {"answers": path, "count": len(records), "system": system}
