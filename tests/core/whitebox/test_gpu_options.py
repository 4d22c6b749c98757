"""GPU-readiness options, checked on the CPU with a tiny real llama: dtype, attention, checkpointing, schedule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from cyclealign.config import TrainConfig, WhiteboxConfig, load_config
from cyclealign.errors import ConfigError, WhiteboxError
from cyclealign.protocols import Candidate, LossBatch, LossOutput, Prompt
from cyclealign.whitebox import PolicyTrainer, TorchBackend, encode_candidates, load_whitebox, loading, sequence_logps
from cyclealign.whitebox.batching import token_logps
from cyclealign.whitebox.torch_backend import lr_factor
from tests.support.tiny_models import tiny_llama_dir

PROMPTS = [Prompt.from_text("a", "How do I bake bread?"), Prompt.from_text("b", "Why is the sky blue at noon?")]
TEXTS = ("Knead the dough and bake.", "No.", "I do not know")


class SoftRankLoss:
    """A small ranking loss: length-normalised log-probs weighted by softmax(rewards), mean over prompts."""

    name = "softrank"
    needs_reference = False

    def __call__(self, logps, lengths, rewards, ref_logps=None) -> LossOutput:
        total = -(torch.softmax(rewards, dim=1) * logps / lengths).sum(1).mean()
        return LossOutput(total=total, parts={"total": float(total.detach())})


def _batch(prompt: Prompt) -> LossBatch:
    return LossBatch(prompt=prompt, candidates=tuple(Candidate(t) for t in TEXTS), rewards=(2.0, 0.0, 1.0), sft_index=0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("tiny-gpu-options"))


def _load(model_dir: Path, **kw):
    """A tiny llama on the CPU; LoRA B made non-zero (seeded) so every adapter weight gets a gradient."""
    wb = load_whitebox(WhiteboxConfig(model=str(model_dir), device="cpu", **kw), seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in sorted(wb.model.named_parameters()):
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return wb


def _encode(wb, batches) -> object:
    return encode_candidates(wb.tokenizer, [b.prompt for b in batches], [b.candidates for b in batches], 512)


def _grads(wb, batches) -> dict[str, torch.Tensor]:
    wb.model.zero_grad(set_to_none=True)
    logps, lengths = sequence_logps(wb.model, _encode(wb, batches))
    rewards = torch.tensor([list(b.rewards) for b in batches], dtype=logps.dtype)
    SoftRankLoss()(logps, lengths, rewards).total.backward()
    return {n: p.grad.detach().clone() for n, p in wb.model.named_parameters() if p.requires_grad}


def _capture_updates(backend: TorchBackend) -> list[list[torch.Tensor]]:
    """Records the (clipped) gradients each optimizer update sees."""
    seen: list[list[torch.Tensor]] = []
    backend.optimizer.register_step_pre_hook(
        lambda *_: seen.append([p.grad.detach().clone() for p in backend.trainable_parameters])
    )
    return seen


# ------------------------------------------------------------------ dtype


def test_dtype_defaults_and_auto_resolution() -> None:
    assert WhiteboxConfig().dtype == "auto" and WhiteboxConfig().attn_implementation is None
    assert loading.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert loading.resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert loading.resolve_dtype("float16", torch.device("cpu")) == torch.float16
    with pytest.raises(ConfigError, match=r"whitebox\.dtype"):
        load_config(None, ["whitebox.dtype=float64"])
    assert load_config(None, ["whitebox.attn_implementation=sdpa"]).whitebox.attn_implementation == "sdpa"


def test_half_precision_logits_give_float32_logps() -> None:
    logits = torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    for dtype in (torch.bfloat16, torch.float16):
        lp = token_logps(logits.to(dtype), targets)
        assert lp.dtype == torch.float32
        ref = torch.log_softmax(logits.to(dtype).float(), -1).gather(-1, targets[..., None]).squeeze(-1)
        torch.testing.assert_close(lp, ref, atol=1e-5, rtol=1e-5)


def test_bfloat16_weights_give_float32_logps_and_a_finite_loss_and_gradient(model_dir: Path) -> None:
    wb = _load(model_dir, dtype="bfloat16")
    names = dict(wb.model.named_parameters())
    assert any(p.dtype == torch.bfloat16 for n, p in names.items() if "lora_" not in n)
    assert all(p.dtype == torch.float32 for n, p in names.items() if p.requires_grad)  # peft keeps adapters fp32
    batches = [_batch(PROMPTS[0]), _batch(PROMPTS[1])]
    logps, lengths = sequence_logps(wb.model, _encode(wb, batches))
    assert logps.dtype == torch.float32 and bool(torch.isfinite(logps).all())
    rewards = torch.tensor([list(b.rewards) for b in batches], dtype=logps.dtype)
    loss = SoftRankLoss()(logps, lengths, rewards).total
    assert loss.dtype == torch.float32 and math.isfinite(float(loss.detach()))
    loss.backward()
    grads = [p.grad for p in names.values() if p.requires_grad]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    # The trainer's own step runs end to end in bfloat16 (rewards take the float32 of the log-probs).
    trainer = PolicyTrainer(wb, SoftRankLoss(), TorchBackend(wb.model, lr=0.01))
    assert math.isfinite(trainer.step(batches)["total"])


def test_float16_full_fine_tuning_is_refused_naming_the_key(model_dir: Path) -> None:
    wb = load_whitebox(WhiteboxConfig(model=str(model_dir), device="cpu", dtype="float16", finetune="full"), seed=0)
    with pytest.raises(ConfigError, match=r"whitebox\.dtype=float16"):
        TorchBackend(wb.model, lr=0.01)


# ------------------------------------------------------------------ attention


def test_eager_and_sdpa_attention_give_equal_logps(model_dir: Path) -> None:
    batches = [_batch(PROMPTS[0]), _batch(PROMPTS[1])]  # different prompt lengths: padded rows
    out = {}
    for impl in ("eager", "sdpa"):
        wb = _load(model_dir, dtype="float32", attn_implementation=impl)
        assert wb.model.config._attn_implementation == impl
        with torch.no_grad():
            out[impl] = sequence_logps(wb.model, _encode(wb, batches))[0]
    torch.testing.assert_close(out["eager"], out["sdpa"], atol=1e-5, rtol=1e-5)


def test_flash_attention_2_is_refused_with_the_key_and_the_install_command(model_dir: Path, monkeypatch) -> None:
    cfg = WhiteboxConfig(model=str(model_dir), device="cpu", attn_implementation="flash_attention_2")
    monkeypatch.setattr(loading, "_has_package", lambda name: name != "flash_attn")
    with pytest.raises(WhiteboxError, match=r"whitebox\.attn_implementation=flash_attention_2.*pip install flash-attn"):
        load_whitebox(cfg)
    monkeypatch.setattr(loading, "_has_package", lambda name: True)  # installed, but no GPU / float32
    with pytest.raises(WhiteboxError, match=r"whitebox\.attn_implementation=flash_attention_2 runs on CUDA only"):
        load_whitebox(cfg)
    with pytest.raises(WhiteboxError, match=r"whitebox\.dtype"):
        loading.check_attn_implementation("flash_attention_2", torch.device("cuda"), torch.float32)
    loading.check_attn_implementation("flash_attention_2", torch.device("cuda"), torch.bfloat16)


def test_flash_attention_2_is_refused_when_really_missing(model_dir: Path) -> None:
    if loading._has_package("flash_attn"):
        pytest.skip("flash-attn is installed here")
    cfg = WhiteboxConfig(model=str(model_dir), device="cpu", attn_implementation="flash_attention_2")
    with pytest.raises(WhiteboxError, match=r"attn_implementation.*pip install flash-attn"):
        load_whitebox(cfg)


# ------------------------------------------------------------------ gradient checkpointing


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_gradient_checkpointing_gives_the_same_gradients(model_dir: Path, finetune: str) -> None:
    batches = [_batch(PROMPTS[0]), _batch(PROMPTS[1])]
    plain = _load(model_dir, dtype="float32", finetune=finetune)
    expected = _grads(plain, batches)
    wb = _load(model_dir, dtype="float32", finetune=finetune)
    TorchBackend.from_config(wb.model, TrainConfig(gradient_checkpointing=True))
    base = wb.model.get_base_model() if finetune == "lora" else wb.model
    mlp, calls = base.model.layers[0].mlp, []
    forward = mlp.forward

    def counted(*args, **kwargs):  # inside the checkpointed layer (module hooks do not rerun on recompute)
        calls.append(1)
        return forward(*args, **kwargs)

    mlp.forward = counted
    got = _grads(wb, batches)
    assert len(calls) == 2  # forward, then the recomputation in backward: checkpointing is really on
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        assert float(grad.abs().sum()) > 0, name  # every weight, LoRA A included, gets a gradient
        torch.testing.assert_close(got[name], grad, atol=1e-5, rtol=1e-5, msg=name)


# ------------------------------------------------------------------ gradient accumulation


def test_grad_accum_two_half_batches_equal_one_full_batch(model_dir: Path) -> None:
    full_wb = _load(model_dir, dtype="float32")
    full = TorchBackend.from_config(full_wb.model, TrainConfig(lr=0.01))
    full_seen = _capture_updates(full)
    PolicyTrainer(full_wb, SoftRankLoss(), full).step([_batch(PROMPTS[0]), _batch(PROMPTS[1])])

    wb = _load(model_dir, dtype="float32")
    backend = TorchBackend.from_config(wb.model, TrainConfig(lr=0.01, grad_accum=2))
    seen = _capture_updates(backend)
    trainer = PolicyTrainer(wb, SoftRankLoss(), backend)
    before = [p.detach().clone() for p in backend.trainable_parameters]
    trainer.step([_batch(PROMPTS[0])])
    assert backend.accum_count == 1 and not seen
    assert all(torch.equal(a, p) for a, p in zip(before, backend.trainable_parameters, strict=True))
    trainer.step([_batch(PROMPTS[1])])
    assert backend.accum_count == 0 and len(seen) == 1 and len(full_seen) == 1
    assert not any(torch.equal(a, p) for a, p in zip(before, backend.trainable_parameters, strict=True))
    for got, want in zip(seen[0], full_seen[0], strict=True):  # clipped at the update, from the same mean
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert all(p.grad is None for p in backend.trainable_parameters)


def test_flush_applies_a_partial_accumulation_as_its_mean(model_dir: Path) -> None:
    full_wb = _load(model_dir, dtype="float32")
    full = TorchBackend(full_wb.model, lr=0.01, max_grad_norm=None)
    full_seen = _capture_updates(full)
    PolicyTrainer(full_wb, SoftRankLoss(), full).step([_batch(PROMPTS[0]), _batch(PROMPTS[1])])
    wb = _load(model_dir, dtype="float32")
    backend = TorchBackend(wb.model, lr=0.01, max_grad_norm=None, grad_accum=3)
    seen = _capture_updates(backend)
    trainer = PolicyTrainer(wb, SoftRankLoss(), backend)
    assert backend.flush() is False
    trainer.step([_batch(PROMPTS[0])])
    trainer.step([_batch(PROMPTS[1])])
    assert not seen and backend.flush() is True and backend.accum_count == 0
    for got, want in zip(seen[0], full_seen[0], strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------ LR schedule


def _drive(backend: TorchBackend, model: torch.nn.Module, calls: int) -> list[float]:
    """The LR before each of ``calls`` backend steps on a toy loss."""
    lrs = []
    for _ in range(calls):
        lrs.append(backend.lr)
        backend.step(model(torch.ones(1, 2)).sum())
    return lrs


@pytest.mark.parametrize(
    ("kind", "reference"), [("linear", get_linear_schedule_with_warmup), ("cosine", get_cosine_schedule_with_warmup)]
)
def test_lr_schedules_with_warmup_match_transformers(kind: str, reference) -> None:
    model = torch.nn.Linear(2, 1)
    backend = TorchBackend(model, lr=0.1, lr_scheduler=kind, warmup_steps=2, total_steps=10)
    lrs = _drive(backend, model, 13)
    ref_opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    ref = reference(ref_opt, num_warmup_steps=2, num_training_steps=10)
    want = []
    for _ in range(11):
        want.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert lrs[:11] == pytest.approx(want, abs=1e-12)
    assert lrs[:3] == pytest.approx([0.0, 0.05, 0.1])  # warm-up from 0, then the full LR
    assert lrs[10:] == pytest.approx([0.0, 0.0, 0.0])  # past total_steps the LR stays at 0
    if kind == "linear":
        assert lrs[6] == pytest.approx(0.05)  # halfway through the 8 decay updates
    else:
        assert lrs[6] == pytest.approx(0.05) and lrs[4] == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)) / 2)


def test_schedule_advances_per_update_not_per_call() -> None:
    model = torch.nn.Linear(2, 1)
    backend = TorchBackend(model, lr=0.1, lr_scheduler="linear", warmup_steps=0, total_steps=4, grad_accum=2)
    assert _drive(backend, model, 6) == pytest.approx([0.1, 0.1, 0.075, 0.075, 0.05, 0.05])
    constant = TorchBackend(torch.nn.Linear(2, 1), lr=0.1, warmup_steps=4)
    assert [lr_factor("constant", s, 4) for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert constant.lr == 0.0


def test_a_decaying_schedule_without_total_steps_is_a_config_error_naming_the_key() -> None:
    for kind in ("linear", "cosine"):
        with pytest.raises(ConfigError, match=r"train\.total_steps"):
            load_config(None, [f"train.lr_scheduler={kind}"])
        with pytest.raises(ConfigError, match=r"train\.total_steps"):
            TorchBackend(torch.nn.Linear(2, 1), lr=0.1, lr_scheduler=kind)
    with pytest.raises(ConfigError, match=r"train\.warmup_steps"):
        load_config(None, ["train.lr_scheduler=linear", "train.total_steps=3", "train.warmup_steps=5"])
    with pytest.raises(ConfigError, match=r"train\.grad_accum"):
        load_config(None, ["train.grad_accum=0"])
    cfg = load_config(None, ["train.lr_scheduler=cosine", "train.total_steps=100", "train.warmup_steps=10"]).train
    assert (cfg.lr_scheduler, cfg.total_steps, cfg.warmup_steps, cfg.grad_accum) == ("cosine", 100, 10, 1)
    assert TrainConfig().gradient_checkpointing is False and TrainConfig().lr_scheduler == "constant"


# ------------------------------------------------------------------ exact resume


def test_state_round_trip_mid_accumulation_resumes_exactly(model_dir: Path, tmp_path: Path) -> None:
    train = TrainConfig(lr=0.01, grad_accum=2, lr_scheduler="cosine", warmup_steps=1, total_steps=5)
    batches = [[_batch(PROMPTS[i % 2])] for i in range(5)]  # updates after 2 and 4, the 5th pending

    def trainer_for() -> PolicyTrainer:
        wb = _load(model_dir, dtype="float32")
        return PolicyTrainer(wb, SoftRankLoss(), TorchBackend.from_config(wb.model, train))

    straight = trainer_for()
    for b in batches:
        straight.step(b)

    first = trainer_for()
    for b in batches[:3]:  # one update done, one step's gradient pending
        first.step(b)
    assert first.backend.accum_count == 1
    first.save_state(tmp_path / "ckpt")  # torch.save, read back with weights_only=True
    resumed = trainer_for()
    resumed.load_state(tmp_path / "ckpt")
    assert resumed.backend.accum_count == 1 and resumed.backend.lr == first.backend.lr
    assert resumed.backend.scheduler.last_epoch == first.backend.scheduler.last_epoch == 1
    for b in batches[3:]:
        resumed.step(b)
    assert resumed.backend.lr == straight.backend.lr
    assert resumed.backend.state_dict()["scheduler"] == straight.backend.state_dict()["scheduler"]
    want, got = straight.trainable_state(), resumed.trainable_state()
    assert all(torch.equal(got[n], want[n]) for n in want)
    pending = resumed.backend.state_dict()["accum_grads"], straight.backend.state_dict()["accum_grads"]
    assert all(torch.equal(g, w) for g, w in zip(*pending, strict=True))


def test_a_checkpoint_further_into_accumulation_than_grad_accum_is_refused() -> None:
    model = torch.nn.Linear(2, 1)
    backend = TorchBackend(model, lr=0.1, grad_accum=3)
    _drive(backend, model, 2)
    with pytest.raises(ConfigError, match=r"train\.grad_accum"):
        TorchBackend(torch.nn.Linear(2, 1), lr=0.1, grad_accum=2).load_state_dict(backend.state_dict())


def test_an_optimizer_only_checkpoint_still_loads() -> None:
    model = torch.nn.Linear(2, 1)
    old = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 2)).sum().backward()
    old.step()
    backend = TorchBackend(model, lr=0.1)
    backend.load_state_dict(old.state_dict())
    assert backend.accum_count == 0 and backend.optimizer.state_dict()["state"].keys() == {0, 1}
