"""Prefix sharing is exact: the prompt encoded once gives the padded path's log-probs and gradients.

Real tiny models of every family in ``PROVEN_FAMILIES``, in float64 so that
only the layout (padding, masks, positions, the shared cache) can differ.
"""

from __future__ import annotations

import copy

import pytest
import torch

from cyclealign.config import TrainConfig, WhiteboxConfig
from cyclealign.errors import ConfigError
from cyclealign.protocols import Candidate, LossBatch, Prompt
from cyclealign.whitebox import build_trainer, encode_candidates, load_whitebox, sequence_logps
from cyclealign.whitebox.prefix import (
    PROVEN_FAMILIES,
    choose_prefix_sharing,
    encode_shared,
    prefix_sharing_family,
    shared_sequence_logps,
)
from cyclealign_losses import DpoLoss, ProLoss
from tests.support.tiny_models import tiny_family_dir

PROMPTS = [
    Prompt.from_text("a", "How do I bake bread at home? Tell me every step, from the flour to the oven."),
    Prompt.from_text("b", "Is the sky blue?"),
]
TEXTS = [
    ["Mix flour, water, salt and yeast.", "No.", "Knead it, let it rise, then bake it until golden.", "Bake."],
    ["Yes, because air scatters short wavelengths of sunlight.", "Sure!", "I cannot help.", "The sky is blue."],
]


def candidates() -> list[list[Candidate]]:
    return [[Candidate(t) for t in texts] for texts in TEXTS]


@pytest.fixture(scope="module", params=[(f, side) for f in sorted(PROVEN_FAMILIES) for side in ("left", "right")])
def model64(request, tmp_path_factory):
    family, side = request.param
    path = tiny_family_dir(tmp_path_factory.mktemp(f"{family}-{side}"), family, side)
    wb = load_whitebox(WhiteboxConfig(model=str(path), lora_dropout=0.0), seed=0)
    with torch.no_grad():  # LoRA's B starts at zero: make the adapter matter
        for name, p in wb.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    wb.model = copy.deepcopy(wb.model).double().eval()
    assert prefix_sharing_family(wb.model) == family
    return wb


def both_paths(wb):
    tok = wb.tokenizer
    padded = encode_candidates(tok, PROMPTS, candidates(), max_length=512)
    shared = encode_shared(tok, PROMPTS, candidates(), max_length=512)
    return padded, shared


def test_shared_logps_equal_the_padded_path(model64) -> None:
    padded, shared = both_paths(model64)
    with torch.no_grad():
        ref, ref_len = sequence_logps(model64.model, padded)
        got, got_len = shared_sequence_logps(model64.model, shared)
    assert torch.equal(ref_len, got_len) and len(set(got_len.flatten().tolist())) > 2  # unequal candidates
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert shared.tokens < padded.input_ids.numel()  # the prompt ran once, not four times


@pytest.mark.parametrize("loss", [ProLoss(sft_weight=0.5), DpoLoss(sft_weight=0.5, beta=0.1)], ids=["pro", "dpo"])
def test_gradients_of_pro_and_dpo_equal_the_padded_path(model64, loss) -> None:
    padded, shared = both_paths(model64)
    params = [p for p in model64.model.parameters() if p.requires_grad]
    rewards = torch.tensor([[3.0, 2.0, 1.0, 0.0]] * 2, dtype=torch.float64)

    def grads(fn, enc):
        model64.model.zero_grad(set_to_none=True)
        logps, lengths = fn(model64.model, enc)
        ref = None
        if loss.needs_reference:
            with torch.no_grad(), model64.model.disable_adapter():
                ref = fn(model64.model, enc)[0]
        loss(logps, lengths, rewards, ref).total.backward()
        return [p.grad.clone() for p in params]

    want, got = grads(sequence_logps, padded), grads(shared_sequence_logps, shared)
    assert any(float(g.abs().sum()) > 0 for g in want)
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=0)


class _Unproven(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = type("Config", (), {"model_type": "opt"})()


def test_auto_shares_only_where_proven_and_says_why_it_cannot(model64) -> None:
    assert choose_prefix_sharing(model64.model, "auto") is True
    assert choose_prefix_sharing(model64.model, "auto", gradient_checkpointing=True) is False
    assert choose_prefix_sharing(model64.model, False) is False
    assert choose_prefix_sharing(_Unproven(), "auto") is False
    with pytest.warns(UserWarning, match="'opt'.*not among the families proven exact"):
        assert choose_prefix_sharing(_Unproven(), True) is True
    with pytest.raises(ConfigError, match=r"prefix_sharing=true cannot be combined with train\.gradient_checkpointing"):
        choose_prefix_sharing(model64.model, True, gradient_checkpointing=True)


@pytest.mark.parametrize("loss_name", ["pro", "dpo"])
def test_training_steps_end_at_the_same_weights_with_and_without_sharing(tmp_path, loss_name: str) -> None:
    path = tiny_family_dir(tmp_path / "m", "llama", "right")
    ends = []
    for sharing in (True, False):
        wb = load_whitebox(WhiteboxConfig(model=str(path), lora_dropout=0.0), seed=0)
        loss = ProLoss(sft_weight=0.5) if loss_name == "pro" else DpoLoss(sft_weight=0.5, beta=0.1)
        trainer = build_trainer(wb, loss, TrainConfig(lr=0.01, prefix_sharing=sharing))
        assert trainer.prefix_sharing is sharing
        batches = [LossBatch(p, tuple(c), (3.0, 2.0, 1.0, 0.0), 0) for p, c in zip(PROMPTS, candidates(), strict=True)]
        for _ in range(3):
            trainer.step(batches)
        ends.append(trainer.trainable_state())
    assert any(float(t.abs().sum()) > 0 for k, t in ends[0].items() if "lora_B" in k)
    for k in ends[0]:
        torch.testing.assert_close(ends[0][k], ends[1][k], atol=1e-5, rtol=1e-4)
