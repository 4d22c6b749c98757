"""Training prompts: the built-in set, a JSONL file, or HH-RLHF (see docs/data.md)."""

from __future__ import annotations

import random

from cyclealign.config import IN_MEMORY, DataConfig
from cyclealign.data.prompt_file import load_jsonl_prompts
from cyclealign.errors import DataError
from cyclealign.protocols import Prompt


def load_prompts(cfg: DataConfig, seed: int = 0, given: list[Prompt] | None = None) -> list[Prompt]:
    """The prompts ``data.source`` names (or ``given`` from Python), shuffled (seeded) and cut to ``data.max_prompts``.

    ``hh-rlhf:<dir>`` (or ``hh-rlhf:hub``) samples ``max_prompts`` contexts stratified over
    the subsets present, from the train split; ``hh-rlhf:<dir>:test`` uses the test split.
    """
    source = cfg.source
    if given is not None:
        prompts = list(given)
    elif source.startswith(IN_MEMORY):
        raise DataError(
            f"data.source: {source!r}: this run's prompts were handed in from Python; resume it from Python "
            "with the same prompts: CycleAlignTrainer(train_dataset=..., resume_from=RUN_DIR)"
        )
    elif source == "builtin":
        from cyclealign.data.builtin import builtin_prompts

        prompts = builtin_prompts()
    elif source.startswith("hh-rlhf:"):
        from cyclealign.data.hh_rlhf import hh_rlhf_prompts

        spec = source.split(":", 1)[1]
        root, _, split = spec.rpartition(":") if spec.endswith((":train", ":test")) else (spec, "", "train")
        prompts = hh_rlhf_prompts(root, k=cfg.max_prompts, seed=seed, split=split, lenient=cfg.lenient)
    else:
        prompts = load_jsonl_prompts(source, lenient=cfg.lenient)
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"data.source: prompt id {dup!r} appears more than once")
    if cfg.shuffle:
        prompts = list(prompts)
        random.Random(seed).shuffle(prompts)
    return prompts[: cfg.max_prompts] if cfg.max_prompts else list(prompts)


__all__ = ["DataError", "load_prompts"]
