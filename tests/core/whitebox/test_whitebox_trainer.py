"""The white-box training step on a tiny real llama: what moves, the DPO reference, grouping, saving."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from cyclealign.config import TrainConfig, WhiteboxConfig
from cyclealign.protocols import Candidate, LossBatch, LossOutput, Prompt
from cyclealign.whitebox import (
    PolicyTrainer,
    TorchBackend,
    TrainingBackend,
    build_trainer,
    encode_candidates,
    load_whitebox,
    save_trainable,
    sequence_logps,
)
from tests.support.tiny_models import tiny_llama_dir

PROMPTS = [Prompt.from_text("a", "How do I bake bread?"), Prompt.from_text("b", "Why is the sky blue?")]
TEXTS = ("Knead the dough and bake.", "No.", "I do not know")


class HingeLoss:
    """A tiny inline ranking loss: a soft hinge preferring the highest-reward candidate to the lowest."""

    name = "hinge"

    def __init__(self, needs_reference: bool = False) -> None:
        self.needs_reference = needs_reference
        self.seen_ref: torch.Tensor | None = None
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, logps, lengths, rewards, ref_logps=None) -> LossOutput:
        self.seen_ref = ref_logps
        self.shapes.append(tuple(logps.shape))
        assert lengths.shape == rewards.shape == logps.shape
        best, worst = rewards.argmax(1), rewards.argmin(1)
        margin = logps.gather(1, best[:, None]) - logps.gather(1, worst[:, None])
        if ref_logps is not None:
            margin = margin - (ref_logps.gather(1, best[:, None]) - ref_logps.gather(1, worst[:, None]))
        total = torch.nn.functional.softplus(-margin).mean()
        return LossOutput(total=total, parts={"total": float(total.detach())})


def _batch(prompt: Prompt, n: int = 3) -> LossBatch:
    return LossBatch(
        prompt=prompt,
        candidates=tuple(Candidate(t) for t in TEXTS[:n]),
        rewards=tuple(float(n - 1 - i) for i in range(n)),
        sft_index=0,
    )


def _logps(wb, batch: LossBatch) -> torch.Tensor:
    enc = encode_candidates(wb.tokenizer, [batch.prompt], [batch.candidates], 512)
    with torch.no_grad():
        return sequence_logps(wb.model, enc)[0]


def _live_llamas() -> int:
    gc.collect()
    return sum(isinstance(o, LlamaForCausalLM) for o in gc.get_objects())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("tiny-train"))


def test_torch_backend_is_a_training_backend(model_dir: Path) -> None:
    wb = load_whitebox(WhiteboxConfig(model=str(model_dir)), seed=0)
    backend = TorchBackend(wb.model, lr=0.01)
    assert isinstance(backend, TrainingBackend)
    names = {id(p): n for n, p in wb.model.named_parameters()}
    assert backend.trainable_parameters and all("lora_" in names[id(p)] for p in backend.trainable_parameters)


def test_an_unknown_backend_is_refused_naming_train_backend() -> None:
    from types import SimpleNamespace

    from cyclealign.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train\.backend: unknown backend 'jax' \(known: torch, deepspeed\)"):
        build_trainer(None, HingeLoss(), SimpleNamespace(backend="jax"))  # type: ignore[arg-type]


def test_training_step_moves_only_the_lora_weights(model_dir: Path) -> None:
    wb = load_whitebox(WhiteboxConfig(model=str(model_dir)), seed=0)
    before = {n: p.detach().clone() for n, p in wb.model.named_parameters()}
    loss = HingeLoss()
    trainer = build_trainer(wb, loss, TrainConfig(lr=0.05))
    margin_before = _logps(wb, _batch(PROMPTS[0]))[0]
    parts = trainer.step([_batch(PROMPTS[0]), _batch(PROMPTS[1])])
    assert loss.shapes == [(2, 3)] and trainer.forward_passes == 1, "one forward over all B·n candidates"
    assert parts["train_tokens"] > 0 and parts["step_s"] > 0 and "total" in parts
    changed = {n for n, p in wb.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)
    margin_after = _logps(wb, _batch(PROMPTS[0]))[0]
    assert margin_after[0] - margin_after[2] > margin_before[0] - margin_before[2], "the step widened the margin"


def test_mixed_candidate_counts_are_grouped_one_pass_per_count(model_dir: Path) -> None:
    wb = load_whitebox(WhiteboxConfig(model=str(model_dir)), seed=0)
    loss = HingeLoss()
    trainer = build_trainer(wb, loss, TrainConfig(lr=0.05))
    three, two = _batch(PROMPTS[0], 3), _batch(PROMPTS[1], 2)
    # Expected: the prompt-weighted mean of the per-group losses, computed before the step moves anything.
    expected = []
    for b in (three, two):
        enc = encode_candidates(wb.tokenizer, [b.prompt], [b.candidates], 512)
        with torch.no_grad():
            logps, lengths = sequence_logps(wb.model, enc)
        expected.append(float(HingeLoss()(logps, lengths, torch.tensor([b.rewards])).total))
    parts = trainer.step([three, two, three])
    assert sorted(loss.shapes) == [(1, 2), (2, 3)] and trainer.forward_passes == 2
    assert parts["total"] == pytest.approx((2 * expected[0] + expected[1]) / 3, rel=1e-5)


def test_dpo_reference_is_the_same_model_with_the_adapter_disabled(model_dir: Path) -> None:
    wb = load_whitebox(WhiteboxConfig(model=str(model_dir)), seed=0)
    live = _live_llamas()
    loss = HingeLoss(needs_reference=True)
    trainer = build_trainer(wb, loss, TrainConfig(lr=0.05))
    for _ in range(3):
        trainer.step([_batch(PROMPTS[0])])
    assert trainer.forward_passes == 6, "one policy pass and one reference pass per step"
    assert _live_llamas() == live, "LoRA needs no second model copy for the reference"
    # The reference the loss saw equals a freshly loaded, adapter-free base model's log-probs...
    base = load_whitebox(WhiteboxConfig(model=str(model_dir), finetune="full"), seed=0)
    expected = _logps(base, _batch(PROMPTS[0]))
    assert loss.seen_ref is not None and not loss.seen_ref.requires_grad
    assert torch.allclose(loss.seen_ref, expected, atol=1e-5)
    # ...while the policy itself has moved away from it, and is still in train mode.
    assert not torch.allclose(_logps(wb, _batch(PROMPTS[0])), expected, atol=1e-4)
    assert wb.model.training


def test_full_finetuning_trains_every_weight_and_freezes_a_reference_only_when_asked(model_dir: Path) -> None:
    wb = load_whitebox(WhiteboxConfig(model=str(model_dir), finetune="full"), seed=0)
    before = {n: p.detach().clone() for n, p in wb.model.named_parameters()}
    live = _live_llamas()
    build_trainer(wb, HingeLoss(), TrainConfig(lr=0.05)).step([_batch(PROMPTS[0])])
    assert _live_llamas() == live, "no reference, no copy"
    changed = [n for n, p in wb.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) > len(before) // 2

    wb = load_whitebox(WhiteboxConfig(model=str(model_dir), finetune="full"), seed=0)
    original = _logps(wb, _batch(PROMPTS[0]))
    loss = HingeLoss(needs_reference=True)
    trainer = build_trainer(wb, loss, TrainConfig(lr=0.05))
    for _ in range(2):
        trainer.step([_batch(PROMPTS[0])])
    assert isinstance(trainer._frozen_reference, LlamaForCausalLM)
    assert loss.seen_ref is not None and torch.allclose(loss.seen_ref, original, atol=1e-5)


def test_checkpoint_state_roundtrip(model_dir: Path, tmp_path: Path) -> None:
    wb = load_whitebox(WhiteboxConfig(model=str(model_dir)), seed=0)
    trainer = build_trainer(wb, HingeLoss(), TrainConfig(lr=0.05))
    trainer.step([_batch(PROMPTS[0])])
    trainer.save_state(tmp_path / "state")
    trainer.step([_batch(PROMPTS[1])])
    after_two = trainer.trainable_state()

    wb2 = load_whitebox(WhiteboxConfig(model=str(model_dir)), seed=1)  # other LoRA init: the checkpoint must win
    trainer2 = build_trainer(wb2, HingeLoss(), TrainConfig(lr=0.05))
    trainer2.load_state(tmp_path / "state")
    trainer2.step([_batch(PROMPTS[1])])
    for name, tensor in trainer2.trainable_state().items():
        assert torch.equal(tensor, after_two[name]), name


def test_saved_adapter_reloads_onto_the_base_model(model_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    wb = load_whitebox(WhiteboxConfig(model=str(model_dir)), seed=0)
    build_trainer(wb, HingeLoss(), TrainConfig(lr=0.05)).step([_batch(PROMPTS[0])])
    save_trainable(wb, tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= files
    assert not any(name.endswith((".bin", ".pt")) for name in files)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), tmp_path / "adapter")
    wb_reloaded = type(wb)(model=reloaded, tokenizer=wb.tokenizer, device=wb.device, config=wb.config)
    assert torch.allclose(_logps(wb_reloaded, _batch(PROMPTS[0])), _logps(wb, _batch(PROMPTS[0])), atol=1e-5)


def test_saved_full_model_reloads_with_load_whitebox(model_dir: Path, tmp_path: Path) -> None:
    wb = load_whitebox(WhiteboxConfig(model=str(model_dir), finetune="full"), seed=0)
    build_trainer(wb, HingeLoss(), TrainConfig(lr=0.05)).step([_batch(PROMPTS[0])])
    save_trainable(wb, tmp_path / "full")
    again = load_whitebox(WhiteboxConfig(model=str(tmp_path / "full"), finetune="full"), seed=0)
    assert torch.allclose(_logps(again, _batch(PROMPTS[0])), _logps(wb, _batch(PROMPTS[0])), atol=1e-5)


def test_bad_batches_are_rejected(model_dir: Path) -> None:
    wb = load_whitebox(WhiteboxConfig(model=str(model_dir)), seed=0)
    trainer = PolicyTrainer(wb, HingeLoss(), TorchBackend(wb.model, lr=0.01))
    with pytest.raises(ValueError, match="at least one"):
        trainer.step([])
    bad = LossBatch(PROMPTS[0], (Candidate("a"), Candidate("b")), rewards=(1.0,), sft_index=0)
    with pytest.raises(ValueError, match="prompt a: 2 candidates but 1 rewards"):
        trainer.step([bad])
