"""Reward-model scores per HH-RLHF subset, the paper's Table 1 (mean 100·sigmoid(score)).

Two kinds of reward model, both from a local directory:

- ``classifier``: any ``AutoModelForSequenceClassification`` with one logit, fed the
  (question, answer) pair as two segments (OpenAssistant's DeBERTa reward models);
- ``oasst-pythia``: the paper's OpenAssistant Pythia reward model format, a GPT-NeoX
  trunk whose last token's hidden state goes through a linear head ``out_proj``; input
  ``<|prompter|>question<|endoftext|><|assistant|>answer<|endoftext|>``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

KINDS = ("classifier", "oasst-pythia")


@dataclass(frozen=True)
class ScoredAnswer:
    id: str
    subset: str
    question: str
    answer: str
    score: float

    @property
    def percent(self) -> float:
        return 100.0 / (1.0 + math.exp(-self.score))


class PythiaRewardModel(torch.nn.Module):
    """GPT-NeoX + a linear head on the last non-padding token (OpenAssistant's reward model layout)."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        from transformers import GPTNeoXModel

        self.config = config
        self.gpt_neox = GPTNeoXModel(config)
        self.out_proj = torch.nn.Linear(config.hidden_size, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.gpt_neox(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = attention_mask.sum(-1) - 1  # right padding: the last real token
        pooled = hidden[torch.arange(hidden.shape[0]), last]
        return self.out_proj(pooled).squeeze(-1)

    @classmethod
    def from_dir(cls, path: Path) -> PythiaRewardModel:
        from safetensors.torch import load_file
        from transformers import GPTNeoXConfig

        model = cls(GPTNeoXConfig.from_pretrained(path))
        weights = path / "model.safetensors"
        if not weights.exists():
            raise FileNotFoundError(f"{path}: no model.safetensors for the oasst-pythia reward model")
        missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{weights}: not an oasst-pythia reward model (missing {missing[:3]}, extra {unexpected[:3]})"
            )
        return model.eval()

    def save_dir(self, path: Path) -> None:
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(path)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path / "model.safetensors"))


class RewardScorer:
    """Scores (question, answer) pairs with a local reward model, in small batches."""

    def __init__(self, path: str | Path, kind: str = "classifier", batch_size: int = 8, device: str = "cpu") -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if kind not in KINDS:
            raise ValueError(f"--reward-kind: {kind!r} is not one of {', '.join(KINDS)}")
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"--reward-model: {self.path} is not a directory")
        self.kind = kind
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        if kind == "classifier":
            self.model = AutoModelForSequenceClassification.from_pretrained(self.path).eval()
        else:
            self.model = PythiaRewardModel.from_dir(self.path)
        self.model.to(self.device)

    def _oasst_text(self, question: str, answer: str) -> str:
        eos = self.tokenizer.eos_token or "<|endoftext|>"
        return f"<|prompter|>{question}{eos}<|assistant|>{answer}{eos}"

    @torch.no_grad()
    def score(self, questions: Sequence[str], answers: Sequence[str]) -> list[float]:
        scores: list[float] = []
        for i in range(0, len(questions), self.batch_size):
            q, a = list(questions[i : i + self.batch_size]), list(answers[i : i + self.batch_size])
            if self.kind == "classifier":
                enc = self.tokenizer(q, a, padding=True, truncation=True, max_length=512, return_tensors="pt")
                logits = self.model(**enc.to(self.device)).logits
                scores += logits[:, 0].float().tolist()
            else:
                texts = [self._oasst_text(x, y) for x, y in zip(q, a, strict=True)]
                enc = self.tokenizer(
                    texts, padding=True, truncation=True, max_length=512, return_tensors="pt", add_special_tokens=False
                )
                scores += self.model(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)).tolist()
        return scores


def table1(scored: Sequence[ScoredAnswer]) -> tuple[list[str], list[list[object]]]:
    """The paper's Table 1 layout: one row, mean 100·sigmoid(score) per subset and over all answers."""
    subsets = sorted({s.subset for s in scored})
    header = ["system", *subsets, "total"]
    values = []
    for subset in subsets:
        xs = [s.percent for s in scored if s.subset == subset]
        values.append(round(sum(xs) / len(xs), 2))
    total = round(sum(s.percent for s in scored) / len(scored), 2) if scored else float("nan")
    return header, [[*values, total]]


def question_text(prompt: Any) -> str:
    """The dialogue as the reward models see the question (HH-RLHF style turns)."""
    return (
        prompt.text
        if len(prompt.messages) == 1
        else "\n".join(f"{'Human' if m.role == 'user' else 'Assistant'}: {m.content}" for m in prompt.messages)
    )
