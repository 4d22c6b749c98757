"""Sampling l responses with one batched ``generate``, scored by the model's own log-probs."""

from __future__ import annotations

from typing import Any

import torch

from cyclealign.config import WhiteboxConfig
from cyclealign.protocols import Candidate, Prompt
from cyclealign.whitebox.batching import token_logps
from cyclealign.whitebox.loading import WhiteBox, encode_prompt


class HFSampler:
    """The ``Sampler`` of a Hugging Face model.

    The n responses come from one ``generate`` call (``num_return_sequences``).
    ``generate``'s raw logits give each sampled token's temperature-1 log-prob, so
    self-ranking needs no second forward pass.  A response keeps its EOS token,
    so training also teaches the model where to stop.  Randomness comes from
    torch's global RNG, which the engine reseeds per interaction.
    """

    def __init__(self, whitebox: WhiteBox, cfg: WhiteboxConfig | None = None) -> None:
        self.wb = whitebox
        self.cfg = cfg or whitebox.config

    @torch.no_grad()
    def sample(self, prompt: Prompt, n: int) -> list[Candidate]:
        model, tok = self.wb.model, self.wb.tokenizer
        ids, _ = encode_prompt(tok, prompt, self.cfg.max_prompt_tokens)
        input_ids = torch.tensor([ids], device=self.wb.device)
        was_training = model.training
        model.eval()
        try:
            out = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=True,
                temperature=self.cfg.temperature,
                top_p=self.cfg.top_p,
                top_k=0,
                max_new_tokens=self.cfg.max_new_tokens,
                num_return_sequences=n,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        finally:
            model.train(was_training)
        generated = out.sequences[:, input_ids.shape[1] :]
        logps = token_logps(torch.stack(out.logits, dim=1), generated)
        return [self._candidate(generated[i], logps[i], tok) for i in range(n)]

    @staticmethod
    def _candidate(ids: torch.Tensor, logps: torch.Tensor, tok: Any) -> Candidate:
        ids_list = ids.tolist()
        eos = tok.eos_token_id
        end = ids_list.index(eos) + 1 if eos in ids_list else len(ids_list)
        kept = ids_list[:end]
        text = tok.decode(kept, skip_special_tokens=True).strip()
        return Candidate(text=text, token_ids=tuple(kept), sum_logp=float(logps[:end].sum()), source="whitebox")
