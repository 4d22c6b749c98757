"""A trained corrector: an HF causal LM, its tokenizer and its prompt, in one directory.

A corrector directory is a plain Hugging Face model directory (``config.json``,
weights, tokenizer) plus ``corrector.json`` (the prompt it was trained with).
LoRA adapters are merged into the weights when it is saved, so loading needs
neither peft nor the base model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from cyclealign.aligner.prompt import CorrectorPrompt
from cyclealign.errors import SetupError


class Corrector:
    """``correct([(question, answer), ...])`` -> improved answers, greedy and batched."""

    def __init__(self, model: Any, tokenizer: Any, prompt: CorrectorPrompt | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.prompt = prompt or CorrectorPrompt()
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ load / save
    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", dtype: str = "auto") -> Corrector:
        """The corrector saved in ``path`` (by ``cyclealign aligner train`` or :meth:`save`)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from cyclealign.whitebox.loading import pick_device, resolve_dtype

        path = Path(path)
        prompt = CorrectorPrompt.load(path)  # first: a clear error for a directory that holds no corrector
        torch_device = pick_device(device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, torch_device))
        except (OSError, ValueError) as e:
            raise SetupError(f"{path}: the corrector's model cannot be loaded ({e})") from None
        return cls(model.to(torch_device).eval(), tokenizer, prompt)

    @staticmethod
    def check(path: str | Path) -> None:
        """A cheap look at a corrector directory (no weights loaded), so a wrong one fails before any work.

        ``aligner correct`` calls this before the upstream answers (which an API upstream is paid for).
        """
        path = Path(path)
        if not path.is_dir():
            what = "does not exist" if not path.exists() else "is a file, expected a corrector directory"
            raise SetupError(f"--corrector: {path} {what}")
        try:
            CorrectorPrompt.load(path)
        except SetupError as e:
            raise SetupError(f"--corrector: {e}") from None
        if not (path / "config.json").is_file():
            raise SetupError(f"--corrector: {path} holds no config.json, so no model to load")
        if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
            raise SetupError(f"--corrector: {path} holds no tokenizer (tokenizer.json or tokenizer_config.json)")

    @classmethod
    def from_whitebox(cls, whitebox: Any, prompt: CorrectorPrompt) -> Corrector:
        """The trained white-box model as a corrector; a LoRA adapter is merged into its weights (in place)."""
        model = whitebox.model
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
            whitebox.model = model
        return cls(model, whitebox.tokenizer, prompt)

    def save(self, directory: str | Path, run_dir: str | Path | None = None) -> None:
        """Weights, tokenizer, prompt and model card (from ``run_dir``'s records), swapped in atomically."""
        from cyclealign.infra.store import atomic_replace_dir
        from cyclealign.whitebox.model_card import write_model_card

        def fill(tmp: Path) -> None:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            self.prompt.save(tmp)
            write_model_card(tmp, Path(run_dir) if run_dir is not None else Path(directory).parent, kind="corrector")

        atomic_replace_dir(Path(directory), fill)

    # ------------------------------------------------------------------ inference
    def encode(self, question: str, answer: str) -> list[int]:
        """The token ids the corrector reads for one pair (the training prompt, exactly)."""
        from cyclealign.whitebox import encode_prompt

        ids, _ = encode_prompt(self.tokenizer, self.prompt.prompt(question, answer), self.prompt.max_prompt_tokens)
        return ids

    @torch.no_grad()
    def correct(
        self,
        pairs: Sequence[tuple[str, str]],
        max_new_tokens: int = 256,
        *,
        batch_size: int = 8,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Greedy corrections of ``(question, answer)`` pairs, ``batch_size`` at a time, in input order.

        ``on_batch(n)`` is called after each batch with its size (for a progress bar).
        """
        tok = self.tokenizer
        was_training = self.model.training
        self.model.eval()
        out: list[str] = []
        try:
            for start in range(0, len(pairs), batch_size):
                chunk = [self.encode(q, a) for q, a in pairs[start : start + batch_size]]
                width = max(len(ids) for ids in chunk)
                input_ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
                attention = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, ids in enumerate(chunk):  # left padding: every row's next token is in the last column
                    input_ids[row, width - len(ids) :] = torch.tensor(ids)
                    attention[row, width - len(ids) :] = 1
                generated = self.model.generate(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention.to(self.device),
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                )
                out.extend(tok.decode(row[width:], skip_special_tokens=True).strip() for row in generated)
                if on_batch is not None:
                    on_batch(len(chunk))
        finally:
            self.model.train(was_training)
        return out
