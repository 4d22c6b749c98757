"""How a training step is laid out and run: the path choice, a reference pass without autograd, train.compile."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cyclealign.config import TrainConfig, WhiteboxConfig, load_config
from cyclealign.errors import ConfigError
from cyclealign.protocols import Candidate, LossBatch, Prompt
from cyclealign.whitebox import build_trainer, load_whitebox
from cyclealign.whitebox.prefix import choose_sharing_path
from cyclealign_losses import DpoLoss, ProLoss
from tests.support.tiny_models import tiny_llama_dir

PROMPTS = [Prompt.from_text("a", "How do I bake bread?"), Prompt.from_text("b", "Why is the sky blue at noon?")]
BATCHES = [
    LossBatch(PROMPTS[0], (Candidate("Knead the dough and bake."), Candidate("No."), Candidate("Bake.")), (2, 0, 1), 0),
    LossBatch(PROMPTS[1], (Candidate("Air scatters blue light."), Candidate("I do not know")), (1.0, 0.0), 0),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("tiny-paths"))


class _Opt(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = type("Config", (), {"model_type": "opt"})()


def test_the_sharing_path_each_setting_picks(model_dir: Path) -> None:
    model = load_whitebox(WhiteboxConfig(model=str(model_dir)), seed=0).model
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert choose_sharing_path(model, False) == "padded"
    assert choose_sharing_path(model, "auto", device=cpu) == "cache"  # measured faster on the CPU
    assert choose_sharing_path(model, "auto", gradient_checkpointing=True, device=cpu) == "packed"
    assert choose_sharing_path(model, "auto", device=gpu) == "packed"
    assert choose_sharing_path(model, True, device=cpu) == "cache"
    assert choose_sharing_path(model, True, gradient_checkpointing=True) == "packed"
    assert choose_sharing_path(model, "packed", device=cpu) == "packed"
    assert choose_sharing_path(model, "cache") == "cache"
    with pytest.raises(ConfigError, match=r"cannot be combined with train\.gradient_checkpointing.*packed"):
        choose_sharing_path(model, "cache", gradient_checkpointing=True)
    assert choose_sharing_path(_Opt(), "auto", device=gpu) == "padded"  # not proven: padded rows
    with pytest.warns(UserWarning, match="'opt'.*not among the families proven exact"):
        assert choose_sharing_path(_Opt(), "packed") == "packed"
    assert load_config(None, ["train.prefix_sharing=packed", "train.compile=true"]).train.compile is True
    assert TrainConfig().compile is False and TrainConfig().prefix_sharing == "auto"
    with pytest.raises(ConfigError, match=r"train\.prefix_sharing"):
        load_config(None, ["train.prefix_sharing=sometimes"])


@pytest.mark.parametrize("sharing", ["padded", "cache", "packed"])
@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_the_dpo_reference_pass_builds_no_autograd_graph(model_dir: Path, sharing: str, finetune: str) -> None:
    wb = load_whitebox(WhiteboxConfig(model=str(model_dir), finetune=finetune), seed=0)
    trainer = build_trainer(
        wb, DpoLoss(beta=0.1), TrainConfig(lr=0.01, prefix_sharing={"padded": False}.get(sharing, sharing))
    )
    assert trainer.sharing_path == sharing
    enc = trainer.encode([BATCHES[0].prompt], [BATCHES[0].candidates])
    saved: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(1) or t, lambda t: t):
        policy = trainer.logps(wb.model, enc)[0]
    policy_saves = len(saved)
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(1) or t, lambda t: t):
        ref = trainer.reference_logps(enc)
    assert not ref.requires_grad and ref.grad_fn is None and saved == []
    assert policy.requires_grad and policy_saves > 0  # the counter does count a pass that builds a graph


def _losses_and_grads(model_dir: Path, compile_setting: bool, loss=None, steps: int = 2) -> tuple[list, list]:
    wb = load_whitebox(WhiteboxConfig(model=str(model_dir), lora_dropout=0.0), seed=0)
    train = TrainConfig(lr=0.01, prefix_sharing="packed", compile=compile_setting)
    trainer = build_trainer(wb, loss or DpoLoss(beta=0.1), train)
    grads: list[torch.Tensor] = []
    trainer.backend.optimizer.register_step_pre_hook(
        lambda *_: grads.extend(p.grad.clone() for p in trainer.backend.trainable_parameters)
    )
    losses = [trainer.step(BATCHES)["total"] for _ in range(steps)]
    return losses, grads


def test_compile_traces_the_packed_body_and_gives_the_same_step(model_dir: Path, monkeypatch) -> None:
    """Dynamo + AOT autograd (the ``aot_eager`` backend): the graph capture, without the minutes of code generation."""
    compiled: list[object] = []
    real = torch.compile

    def spy(module, **kwargs):
        compiled.append(module)
        return real(module, backend="aot_eager", **kwargs)

    want = _losses_and_grads(model_dir, False)
    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", spy)
    got = _losses_and_grads(model_dir, True)
    assert [type(m).__name__ for m in compiled] == ["LlamaModel"], "the body, compiled once"
    assert got[0] == pytest.approx(want[0], abs=1e-5)
    for g, w in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_compile_with_inductor_gives_the_same_step(model_dir: Path) -> None:
    """The real thing: inductor generates CPU kernels; one step, no reference pass, to keep it to one compilation."""
    torch._dynamo.reset()
    want = _losses_and_grads(model_dir, False, ProLoss(), steps=1)
    got = _losses_and_grads(model_dir, True, ProLoss(), steps=1)
    assert got[0] == pytest.approx(want[0], abs=1e-4)
    for g, w in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-3)


def test_packed_with_an_attention_that_takes_no_mask_is_refused_naming_the_key(model_dir: Path) -> None:
    from cyclealign.whitebox import PolicyTrainer, TorchBackend

    wb = load_whitebox(WhiteboxConfig(model=str(model_dir)), seed=0)
    wb.model.get_base_model().config._attn_implementation_internal = "flash_attention_2"  # as loaded on a GPU
    with pytest.raises(ConfigError, match=r"prefix_sharing=packed: whitebox\.attn_implementation=flash_attention_2"):
        PolicyTrainer(wb, DpoLoss(beta=0.1), TorchBackend(wb.model, lr=0.01), prefix_sharing="packed")
