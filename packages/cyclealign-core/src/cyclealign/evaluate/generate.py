"""Answers from a trained run (base model + its adapter) or a base model, greedy, for evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cyclealign.config import WhiteboxConfig, load_config
from cyclealign.protocols import Prompt


def load_system(run_dir: Path | None = None, model: str | None = None, gguf_file: str | None = None) -> Any:
    """A ``WhiteBox`` for a run directory (its base model and trained adapter) or a plain model."""
    from cyclealign.whitebox import load_whitebox

    if run_dir is not None:
        cfg = load_config(Path(run_dir) / "config.yaml", [f"run.dir={run_dir}"]).whitebox
        wb = load_whitebox(cfg.model_copy(update={"finetune": "full"}), seed=0)
        adapter = Path(run_dir) / "adapter"
        if (adapter / "adapter_config.json").exists():
            from peft import PeftModel

            wb.model = PeftModel.from_pretrained(wb.model, adapter).eval()
        return wb
    if model is None:
        raise ValueError("give a run directory (--run) or a model (--model)")
    return load_whitebox(WhiteboxConfig(model=model, gguf_file=gguf_file, finetune="full"), seed=0)


@torch.no_grad()
def generate_answers(whitebox: Any, prompts: Sequence[Prompt], max_new_tokens: int = 128) -> list[str]:
    """One greedy answer per prompt (deterministic, as evaluations should be)."""
    from cyclealign.whitebox import encode_prompt

    tok, model = whitebox.tokenizer, whitebox.model
    model.eval()
    answers = []
    for prompt in prompts:
        ids, _ = encode_prompt(tok, prompt, whitebox.config.max_prompt_tokens)
        input_ids = torch.tensor([ids], device=whitebox.device)
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        answers.append(tok.decode(out[0, input_ids.shape[1] :], skip_special_tokens=True).strip())
    return answers
