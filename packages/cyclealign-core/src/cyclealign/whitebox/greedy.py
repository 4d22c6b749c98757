"""Greedy answers from a trained run (base model + its trained weights) or a base model: evaluation, upstreams."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import ConfigDict

from cyclealign.config import Section, WhiteboxConfig, load_config
from cyclealign.errors import ConfigError, MissingPathError
from cyclealign.protocols import Prompt


class RunWhitebox(Section):
    """The ``whitebox`` section of any run's ``config.yaml`` (a cycle run, ``train``, ``aligner train``).

    The other sections are each command's own and are not read here, so loading a run's
    model needs no command's schema (and this layer imports none).
    """

    model_config = ConfigDict(extra="ignore", validate_assignment=True)
    whitebox: WhiteboxConfig = WhiteboxConfig()


def load_system(
    run_dir: Path | None = None,
    model: str | None = None,
    gguf_file: str | None = None,
    *,
    device: str | None = None,
    dtype: str | None = None,
    prompt_format: str | None = None,
) -> Any:
    """A ``WhiteBox`` for a run directory (its base model plus trained weights) or a plain model.

    A LoRA run's ``adapter/`` is applied on top of the base model named in its
    ``config.yaml``; a full fine-tuning run saved the whole model there instead.
    ``device``/``dtype`` override the run's settings (e.g. evaluate on a GPU), and
    ``prompt_format`` its ``whitebox.prompt_format`` (a run is evaluated as it was trained by default).
    """
    from cyclealign.whitebox import load_whitebox

    overrides: dict[str, Any] = {"finetune": "full"}  # evaluation adds no fresh LoRA layers
    if device is not None:
        overrides["device"] = device
    if dtype is not None:
        overrides["dtype"] = dtype
    if prompt_format is not None:
        overrides["prompt_format"] = prompt_format
    if run_dir is not None:
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise MissingPathError(f"--run: {run_dir} has no config.yaml (is it a run directory?)")
        cfg = load_config(run_dir / "config.yaml", schema=RunWhitebox).whitebox
        adapter = run_dir / "adapter"
        if (adapter / "adapter_config.json").is_file():
            from peft import PeftModel

            wb = load_whitebox(cfg.model_copy(update=overrides), seed=0)
            from cyclealign.whitebox.known_warnings import quiet_known_warnings

            with quiet_known_warnings():  # peft reads a property transformers deprecated
                wb.model = PeftModel.from_pretrained(wb.model, adapter).eval()
            return wb
        if (adapter / "config.json").is_file():  # full fine-tuning: the whole model was saved
            return load_whitebox(cfg.model_copy(update={**overrides, "model": str(adapter), "gguf_file": None}), seed=0)
        raise MissingPathError(f"--run: {run_dir} has no trained weights in adapter/ (did the run save any?)")
    if model is None:
        raise ConfigError("give a run directory (--run) or a model (--model)")
    return load_whitebox(WhiteboxConfig(model=model, gguf_file=gguf_file, **overrides), seed=0)


@torch.no_grad()
def generate_answers(
    whitebox: Any,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 128,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """One greedy answer per prompt (deterministic, as evaluations should be), in left-padded batches.

    Prompts are rendered in ``whitebox.prompt_format`` (as in training) and batched by
    length so little compute goes to padding; an answer is cut where the model began a
    turn of its own (``hh``, ``alpaca``), exactly as the cycle's samples are; answers
    come back in the prompts' order.  ``on_batch(n)`` is told after each batch of n (a progress bar).
    """
    from cyclealign.whitebox.prompt_format import STOP_STRINGS, cut_text, encode_prompt, resolve_format

    tok, model = whitebox.tokenizer, whitebox.model
    model.eval()
    fmt = resolve_format(tok, whitebox.config.prompt_format)
    stops = {"stop_strings": list(STOP_STRINGS[fmt]), "tokenizer": tok} if fmt in STOP_STRINGS else {}
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    encoded = [encode_prompt(tok, p, whitebox.config.max_prompt_tokens, fmt)[0] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    answers = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in chunk)
        ids = [[pad] * (width - len(encoded[i])) + encoded[i] for i in chunk]
        mask = [[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in chunk]
        out = model.generate(
            input_ids=torch.tensor(ids, device=whitebox.device),
            attention_mask=torch.tensor(mask, device=whitebox.device),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad,
            eos_token_id=tok.eos_token_id,
            **stops,  # a batch ends early once every row has begun an invented turn
        )
        for i, row in zip(chunk, out[:, width:], strict=True):
            answers[i] = cut_text(tok.decode(row, skip_special_tokens=True), fmt).strip()
        if on_batch is not None:
            on_batch(len(chunk))
    return answers


def release_memory() -> None:
    """Collect a dropped model and hand the accelerator's cached blocks back (the next model needs the room)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
