"""The reward models of the paper's Table 1, and a scorer for (context, answer) pairs.

Two kinds of reward model, both from a local directory:

- ``classifier``: any ``AutoModelForSequenceClassification`` with one logit, fed the
  (question, answer) pair as two segments (OpenAssistant's DeBERTa reward models);
- ``oasst-pythia``: the format of the reward model the paper used
  (OpenAssistant/oasst-rm-2-pythia-6.9b-epoch-1): a GPT-NeoX trunk whose hidden state
  at the last real token goes through a linear head ``out_proj``.  Its checkpoint
  (``model_type: gpt_neox_reward_model``, sharded ``.bin`` or ``.safetensors``) loads
  without running the repository's custom code.  Input: each turn as
  ``<|prompter|>…<|endoftext|>`` / ``<|assistant|>…<|endoftext|>``, ending with the
  scored answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from transformers import GPTNeoXConfig, GPTNeoXModel
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXPreTrainedModel

from cyclealign.data.hh_rlhf import dialogue_text
from cyclealign.errors import SetupError
from cyclealign.protocols import Prompt
from cyclealign.whitebox.loading import pick_device

KINDS = ("classifier", "oasst-pythia")


class RewardModelError(SetupError, ValueError):
    """The directory does not hold a usable reward model of the requested kind."""


class PythiaRewardModel(GPTNeoXPreTrainedModel):
    """GPT-NeoX + a linear head on the last real token: OpenAssistant's Pythia reward model layout.

    ``pooling: mean`` in the checkpoint's config (OpenAssistant's other setting) averages
    the hidden states over real tokens instead.
    """

    config_class = GPTNeoXConfig

    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__(config)
        self.gpt_neox = GPTNeoXModel(config)
        self.out_proj = torch.nn.Linear(config.hidden_size, 1)
        self.pooling = getattr(config, "pooling", "last")
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.gpt_neox(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        else:
            last = attention_mask.cumsum(-1).argmax(-1)  # the last real token, whichever side is padded
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.out_proj(pooled).squeeze(-1)


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def oasst_text(context: Prompt | str, answer: str, eos: str = "<|endoftext|>") -> str:
    """The OpenAssistant reward-model input: every turn tagged and closed by ``eos``, the answer last."""
    messages = context.messages if isinstance(context, Prompt) else (Prompt.from_text("", context).messages)
    tags = {"user": "<|prompter|>", "assistant": "<|assistant|>", "system": "<|system|>"}
    turns = "".join(f"{tags.get(m.role, '<|prompter|>')}{m.content}{eos}" for m in messages)
    return f"{turns}<|assistant|>{answer}{eos}"


class RewardScorer:
    """Scores (context, answer) pairs with a local reward model, in batches, without gradients."""

    def __init__(
        self,
        path: str | Path,
        kind: str = "classifier",
        *,
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "auto",
        max_length: int = 1024,
        keys: tuple[str, str] = ("--reward-model", "--reward-kind"),
    ) -> None:
        """``keys`` name the model's and the kind's settings in errors (a CLI option, or a config key)."""
        from transformers import AutoTokenizer

        where, kind_key = keys
        if kind not in KINDS:
            raise RewardModelError(f"{kind_key}: {kind!r} is not one of {', '.join(KINDS)}")
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise RewardModelError(f"{where}: {self.path} is not a model directory (no config.json)")
        self.kind, self.batch_size = kind, batch_size
        self.device = pick_device(device)
        torch_dtype = _dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        # The answer sits at the end: when something must go, cut the oldest context instead.
        self.tokenizer.truncation_side = "left"
        model = self._load(torch_dtype, where)
        self.model = model.to(self.device).eval()
        # Never past what the tokenizer or the position embeddings allow (tokenizers often say "unlimited").
        limits = [max_length, getattr(model.config, "max_position_embeddings", None)]
        limits.append(getattr(self.tokenizer, "model_max_length", None))
        self.max_length = min(x for x in limits if isinstance(x, int) and 0 < x < 10**6)

    def _load(self, torch_dtype: torch.dtype, where: str) -> torch.nn.Module:
        """The model of ``self.kind``, refused when weights are missing or it has more than one logit."""
        kind = self.kind
        if kind == "classifier":
            from transformers import AutoModelForSequenceClassification

            model, info = AutoModelForSequenceClassification.from_pretrained(
                self.path, dtype=torch_dtype, output_loading_info=True
            )
        else:
            model, info = PythiaRewardModel.from_pretrained(self.path, dtype=torch_dtype, output_loading_info=True)
        missing = sorted(info.get("missing_keys") or [])
        if missing:
            raise RewardModelError(
                f"{where}: {self.path} is not a trained {kind} reward model: weights missing for "
                f"{', '.join(missing[:4])}{' …' if len(missing) > 4 else ''} (they would be random)"
            )
        if kind == "classifier" and model.config.num_labels != 1:
            raise RewardModelError(
                f"{where}: {self.path} has {model.config.num_labels} labels; a reward model has one logit"
            )
        if model.config.pad_token_id is None:  # a batch needs it to find each row's last real token
            model.config.pad_token_id = self.tokenizer.pad_token_id
        return model

    @torch.no_grad()
    def score(
        self,
        contexts: Sequence[Prompt | str],
        answers: Sequence[str],
        on_batch: Callable[[int], None] | None = None,
    ) -> list[float]:
        """One raw score (logit) per answer, in order; ``on_batch(n)`` after each batch of n (a progress bar)."""
        if len(contexts) != len(answers):
            raise ValueError(f"{len(contexts)} contexts but {len(answers)} answers")
        scores: list[float] = []
        for i in range(0, len(answers), self.batch_size):
            ctx, ans = list(contexts[i : i + self.batch_size]), list(answers[i : i + self.batch_size])
            if self.kind == "classifier":
                enc = self.tokenizer(
                    [dialogue_text(c) for c in ctx],
                    ans,
                    padding=True,
                    truncation="longest_first",
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                scores += self.model(**enc).logits[:, 0].float().tolist()
            else:
                eos = self.tokenizer.eos_token or "<|endoftext|>"
                enc = self.tokenizer(
                    [oasst_text(c, a, eos) for c, a in zip(ctx, ans, strict=True)],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                    add_special_tokens=False,
                ).to(self.device)
                scores += self.model(enc["input_ids"], enc["attention_mask"]).float().tolist()
            if on_batch is not None:
                on_batch(len(ans))
        return scores
