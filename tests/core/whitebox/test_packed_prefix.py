"""Packed prefix sharing is exact: one packed sequence gives the padded path's log-probs and gradients.

Float64 tiny models, so only the layout (packing, positions, the sharing mask,
the gathered head positions) can differ.  On the CPU the sharing mask reaches
the model as a dense 4D mask (FlexAttention has no CPU backward); the
FlexAttention ``BlockMask`` form is checked against it forward-only: at the
kernel in float64, and through a whole model in float32 (FlexAttention's CPU
kernel is compiled and takes no float64).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention

from cyclealign.config import TrainConfig, WhiteboxConfig
from cyclealign.protocols import Candidate, LossBatch, Prompt
from cyclealign.whitebox import PolicyTrainer, TorchBackend, encode_candidates, load_whitebox, sequence_logps
from cyclealign.whitebox.packed import (
    FLEX,
    attention_implementation,
    attention_mask_for,
    encode_packed,
    packed_candidate_logps,
    split_by_prompt,
)
from cyclealign_losses import DpoLoss, ProLoss
from tests.support.tiny_models import tiny_family_dir, tiny_tokenizer

PROMPTS = [
    Prompt.from_text("a", "How do I bake bread at home? Tell me every step, from the flour to the oven."),
    Prompt.from_text("b", "Is the sky blue?"),
    Prompt.from_text("c", "Give me three ideas for a weekend."),
]
TEXTS = [  # ragged lengths; prompt b lacks the oracle's answer (two candidates, not three)
    ["Mix flour, water, salt and yeast.", "No.", "Knead it, let it rise, then bake it until golden."],
    ["Yes, because air scatters short wavelengths of sunlight.", "Sure!"],
    ["A picnic, a museum and a bike ride.", "I cannot help.", "Sleep."],
]
REWARDS = [(3.0, 0.0, 1.0), (1.0, 0.0), (0.0, 2.0, 1.0)]


def candidates() -> list[list[Candidate]]:
    return [[Candidate(t) for t in texts] for texts in TEXTS]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    return {f: tiny_family_dir(tmp_path_factory.mktemp(f), f, "left") for f in ("llama", "qwen2")}


def load64(path: Path, finetune: str = "lora", attn: str | None = None):
    wb = load_whitebox(WhiteboxConfig(model=str(path), lora_dropout=0.0, finetune=finetune, attn_implementation=attn))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # LoRA's B starts at zero: make the adapter matter
        for name, p in sorted(wb.model.named_parameters()):
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    wb.model = copy.deepcopy(wb.model).double()
    return wb


def padded_per_prompt(wb) -> list[torch.Tensor]:
    """The padded path's log-probs, prompt by prompt (counts differ)."""
    out = []
    for prompt, cands in zip(PROMPTS, candidates(), strict=True):
        out.append(sequence_logps(wb.model, encode_candidates(wb.tokenizer, [prompt], [cands], 512))[0][0])
    return out


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logps_equal_the_padded_path(model_dirs, family: str, attn: str) -> None:
    wb = load64(model_dirs[family], attn=attn)
    wb.model.eval()
    pb = encode_packed(wb.tokenizer, PROMPTS, candidates(), 512)
    padded = load64(model_dirs[family], attn="sdpa")  # eager's padded rows hold NaN in float64; sdpa's do not
    with torch.no_grad():
        flat, lengths = packed_candidate_logps(wb.model, pb)
        want = padded_per_prompt(padded)
    assert pb.counts == (3, 2, 3) and len(set(lengths.tolist())) > 4  # ragged counts and lengths
    for got, ref in zip(split_by_prompt(flat, pb.counts), want, strict=True):
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    tokens = encode_candidates(wb.tokenizer, PROMPTS[:1], candidates()[:1], 512).input_ids.numel()
    assert pb.tokens < tokens + 20  # each prompt ran once (prompt a alone pads to more than all three packed)


class CapturingBackend(TorchBackend):
    """The gradients each step's backward leaves, before the update moves anything."""

    def __init__(self, model, gradient_checkpointing: bool) -> None:
        super().__init__(model, lr=0.01, max_grad_norm=None, gradient_checkpointing=gradient_checkpointing)
        self.seen: list[list[torch.Tensor]] = []
        self.optimizer.register_step_pre_hook(lambda *_: self.seen.append([p.grad.clone() for p in self._params]))


def step_grads(path: Path, sharing: str, finetune: str, checkpointing: bool, loss) -> tuple[dict, list]:
    wb = load64(path, finetune)
    backend = CapturingBackend(wb.model, checkpointing)
    trainer = PolicyTrainer(wb, loss, backend, prefix_sharing=sharing)
    batches = [LossBatch(p, tuple(c), r, 0) for p, c, r in zip(PROMPTS, candidates(), REWARDS, strict=True)]
    parts = trainer.step(batches)
    return parts, backend.seen[0]


@pytest.mark.parametrize(
    ("family", "finetune", "checkpointing", "loss_name"),
    [
        ("llama", "lora", False, "dpo"),
        ("llama", "lora", True, "dpo"),
        ("llama", "full", False, "pro"),
        ("llama", "full", True, "dpo"),
        ("llama", "lora", True, "pro"),
        ("qwen2", "lora", True, "dpo"),
        ("qwen2", "full", False, "pro"),
    ],
)
def test_packed_step_gradients_equal_the_padded_step(model_dirs, family, finetune, checkpointing, loss_name) -> None:
    def loss():
        return ProLoss(sft_weight=0.5) if loss_name == "pro" else DpoLoss(sft_weight=0.5, beta=0.1)

    path = model_dirs[family]
    want_parts, want = step_grads(path, "padded", finetune, checkpointing, loss())
    got_parts, got = step_grads(path, "packed", finetune, checkpointing, loss())
    assert got_parts["total"] == pytest.approx(want_parts["total"], abs=1e-8)
    assert got_parts["train_tokens"] == want_parts["train_tokens"]
    assert sum(float(g.abs().sum()) > 0 for g in want) >= len(want) // 2
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=0)


def test_packed_step_is_one_forward_even_with_mixed_counts(model_dirs) -> None:
    wb = load64(model_dirs["llama"])
    trainer = PolicyTrainer(wb, DpoLoss(beta=0.1), TorchBackend(wb.model, lr=0.01), prefix_sharing="packed")
    batches = [LossBatch(p, tuple(c), r, 0) for p, c, r in zip(PROMPTS, candidates(), REWARDS, strict=True)]
    trainer.step(batches)
    assert trainer.forward_passes == 2  # one policy pass over both groups, one reference pass


def test_checkpointing_really_recomputes_on_the_packed_path(model_dirs) -> None:
    wb = load64(model_dirs["llama"])
    backend = TorchBackend.from_config(wb.model, TrainConfig(gradient_checkpointing=True))
    mlp, calls = wb.model.get_base_model().model.layers[0].mlp, []
    forward = mlp.forward
    mlp.forward = lambda *a, **k: (calls.append(1), forward(*a, **k))[1]
    trainer = PolicyTrainer(wb, ProLoss(), backend, prefix_sharing="packed")
    trainer.step([LossBatch(PROMPTS[0], tuple(candidates()[0]), REWARDS[0], 0)])
    assert len(calls) == 2  # forward, then the recomputation in backward


def test_block_mask_attention_equals_the_dense_mask_at_the_kernel() -> None:
    """The two forms of the sharing rule select the same keys (float64, FlexAttention's eager CPU kernel)."""
    pb = encode_packed(tiny_tokenizer(), PROMPTS, candidates(), 512)
    block, dense = attention_mask_for(pb, FLEX, torch.float64), attention_mask_for(pb, "sdpa", torch.float64)
    assert dense.dtype == torch.bool and dense.shape == (1, 1, pb.tokens, pb.tokens)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, pb.tokens, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    got = flex_attention(q, k[:, :2], v[:, :2], block_mask=block, enable_gqa=True)
    want = torch.nn.functional.scaled_dot_product_attention(q, k[:, :2], v[:, :2], attn_mask=dense, enable_gqa=True)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_flex_attention_through_the_model_equals_the_padded_path(model_dirs) -> None:
    """Forward only, float32: transformers' FlexAttention path compiles the CPU kernel, which has no float64."""
    wb = load_whitebox(WhiteboxConfig(model=str(model_dirs["llama"]), lora_dropout=0.0))
    wb.model.eval()
    pb = encode_packed(wb.tokenizer, PROMPTS, candidates(), 512)
    with torch.no_grad():
        want = padded_per_prompt(wb)
        with attention_implementation(wb.model, FLEX):
            assert wb.model.get_base_model().config._attn_implementation == FLEX
            flat, _ = packed_candidate_logps(wb.model, pb)
    assert wb.model.get_base_model().config._attn_implementation == "sdpa"  # restored after
    for got, ref in zip(split_by_prompt(flat, pb.counts), want, strict=True):
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-5)
