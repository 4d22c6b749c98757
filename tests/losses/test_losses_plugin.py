"""The losses reach the engine through the plugin registry, first-party and third-party alike."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator

import pluggy
import pytest
import torch

from cyclealign import plugins
from cyclealign.config import LossConfig, load_config
from cyclealign.protocols import LossOutput, RankLoss
from cyclealign.run.assembly import build_loss
from cyclealign_losses import DpoLoss, ProLoss, RrhfLoss, pro_loss, sft_loss
from tests.support.paths import REPO

DOCS = REPO / "docs" / "plugins.md"
FIRST_PARTY = {"pro": ProLoss, "rrhf": RrhfLoss, "dpo": DpoLoss}

hookimpl = pluggy.HookimplMarker("cyclealign")


class ScaledProPlugin:
    """A test plugin: PRO with its rank term doubled, to tell it apart from the built-in."""

    __name__ = "test-scaled-pro"

    @hookimpl
    def register_losses(self, register):  # type: ignore[no-untyped-def]
        register("scaled-pro", lambda config, num_samples=3: _ScaledPro(), "PRO times two")


class _ScaledPro:
    name = "scaled-pro"
    needs_reference = False

    def __call__(self, logps, lengths, rewards, ref_logps=None):  # type: ignore[no-untyped-def]
        total = 2 * pro_loss(logps, lengths, rewards)
        return LossOutput(total=total, parts={"rank": total.item(), "total": total.item()})


@pytest.fixture
def registered(request) -> Iterator[object]:
    plugin = request.param
    plugins.register_plugin(plugin)
    try:
        yield plugin
    finally:
        plugins.unregister_plugin(plugin)


def _tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    logps = torch.tensor([[-6.0, -2.0, -9.0], [-1.0, -4.0, -3.0]], requires_grad=True)
    lengths = torch.tensor([[3, 2, 4], [1, 2, 3]])
    rewards = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 2.0]])
    return logps, lengths, rewards, logps.detach() + 0.5


@pytest.mark.parametrize("registered", [ScaledProPlugin()], indirect=True)
def test_a_test_plugins_loss_sits_beside_the_first_party_ones(registered: object) -> None:
    losses = {item.name: item for item in plugins.get_registry().items("loss")}
    for name in FIRST_PARTY:
        assert losses[name].distribution == "cyclealign-losses", losses[name]
    assert losses["scaled-pro"].distribution == "test-scaled-pro"
    loss = plugins.get_registry().get("loss", "scaled-pro").factory(LossConfig(name="scaled-pro"))
    logps, lengths, rewards, _ = _tensors()
    assert loss(logps, lengths, rewards).total.item() == pytest.approx(2 * pro_loss(logps, lengths, rewards).item())


def test_the_test_plugin_is_gone_after_unregistering() -> None:
    plugin = ScaledProPlugin()
    plugins.register_plugin(plugin)
    plugins.unregister_plugin(plugin)
    assert "scaled-pro" not in {item.name for item in plugins.get_registry().items("loss")}


@pytest.mark.parametrize("name", sorted(FIRST_PARTY))
def test_engine_builds_each_first_party_loss_with_lambda_from_l(name: str) -> None:
    config = load_config(overrides=[f"loss.name={name}", "cycle.num_samples=4"])
    loss = build_loss(config)  # the engine's own path: factory(config.loss, num_samples=l)
    assert type(loss) is FIRST_PARTY[name] and isinstance(loss, RankLoss)
    assert loss.sft_weight == 9.0  # (l-1)^2 with l = 4
    logps, lengths, rewards, ref = _tensors()
    out = loss(logps, lengths, rewards, ref)
    out.total.backward()
    assert logps.grad is not None and torch.isfinite(logps.grad).all() and float(logps.grad.abs().sum()) > 0
    assert set(out.parts) == {"rank", "sft", "total"}
    assert (
        plugins.get_registry().get("loss", name).factory(config.loss).sft_weight == 4.0
    )  # no l given: the factory assumes l = 3


def _documented_loss_module() -> types.ModuleType:
    """The code block of docs/plugins.md's "Adding a loss", as a module."""
    text = DOCS.read_text()
    section = text.split("## Adding a loss", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "docs/plugins.md: no python block under 'Adding a loss'"
    module = types.ModuleType("documented_margin_loss")
    sys.modules[module.__name__] = module  # as an imported plugin module is (dataclasses look it up)
    exec(compile(code.group(1), str(DOCS), "exec"), module.__dict__)
    return module


def test_the_documented_loss_plugin_works_as_written() -> None:
    module = _documented_loss_module()
    plugins.register_plugin(module)
    try:
        names = {item.name: item.distribution for item in plugins.get_registry().items("loss")}
        assert names["margin"] == "documented_margin_loss" and names["pro"] == "cyclealign-losses"
        config = load_config(overrides=["loss.name=margin", "loss.options={margin: 0.5}", "cycle.num_samples=5"])
        loss = build_loss(config)
        assert isinstance(loss, RankLoss) and (loss.sft_weight, loss.margin) == (16.0, 0.5)
        logps, lengths, rewards, _ = _tensors()
        out = loss(logps, lengths, rewards)
        assert out.parts["sft"] == pytest.approx(sft_loss(logps, lengths, rewards).item())
        out.total.backward()
        assert logps.grad is not None and float(logps.grad.abs().sum()) > 0
    finally:
        plugins.unregister_plugin(module)
