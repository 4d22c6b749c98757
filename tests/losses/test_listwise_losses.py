"""LiPO-λ and DPO-PL against plain float64 references written here, DPO-PL = DPO at l = 2, and their plugins."""

from __future__ import annotations

import math
import random

import pytest
import torch
from typer.testing import CliRunner

from cyclealign.cli.main import app
from cyclealign.config import load_config
from cyclealign.errors import ConfigError
from cyclealign.run.assembly import build_loss
from cyclealign_losses import DpoLoss, DpoPlLoss, LipoLoss, dpo_loss, dpo_pl_loss, lipo_lambda_loss, sft_loss

Rows = list[list[float]]


# ---------------------------------------------------------------- references: plain Python loops, one row at a time
def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def ref_lipo(lp: Rows, rw: Rows, ref: Rows, beta: float) -> float:
    """The paper's formula term by term: ranks under s, DCG gains and discounts, summed over ordered pairs."""
    total = 0.0
    for logps, psi, ref_row in zip(lp, rw, ref, strict=True):
        n = len(logps)
        s = [beta * (logps[i] - ref_row[i]) for i in range(n)]
        by_score = sorted(range(n), key=lambda i: (-s[i], i))  # highest s first, equal s in index order
        tau = [0] * n
        for position, i in enumerate(by_score):
            tau[i] = position + 1
        row = 0.0
        for i in range(n):
            for j in range(n):
                if psi[i] > psi[j]:
                    gain = abs((2.0 ** psi[i] - 1) - (2.0 ** psi[j] - 1))
                    discount = abs(1 / math.log(1 + tau[i]) - 1 / math.log(1 + tau[j]))
                    row += -gain * discount * _log_sigmoid(s[i] - s[j])
        total += row
    return total / len(lp)


def ref_dpo_pl(lp: Rows, rw: Rows, ref: Rows, beta: float) -> float:
    """Plackett-Luce over the list in preference order; a candidate's tied peers are left out of its denominator."""
    total = 0.0
    for logps, psi, ref_row in zip(lp, rw, ref, strict=True):
        n = len(logps)
        s = [beta * (logps[i] - ref_row[i]) for i in range(n)]
        order = sorted(range(n), key=lambda i: -psi[i])
        row = 0.0
        for k in range(n):
            top = order[k]
            rest = [order[m] for m in range(k + 1, n) if psi[order[m]] < psi[top]]
            if rest:
                row -= math.log(math.exp(s[top]) / (math.exp(s[top]) + sum(math.exp(s[j]) for j in rest)))
        total += row
    return total / len(lp)


def random_lists(rng: random.Random, batch: int, n: int, ties: bool) -> tuple[Rows, Rows, Rows, Rows]:
    """``batch`` prompts of ``n`` candidates in random order; relevance ψ small integers (tied or distinct)."""
    lengths = [[float(rng.randint(1, 30)) for _ in range(n)] for _ in range(batch)]
    logps = [[-rng.uniform(0.1, 2.0) * length for length in row] for row in lengths]
    ref = [[x + rng.uniform(-3, 3) for x in row] for row in logps]
    if ties:
        rewards = [[float(rng.randint(0, max(1, n // 2))) for _ in range(n)] for _ in range(batch)]
        for row in rewards:
            if len(set(row)) == 1:
                row[0] += 1.0
    else:
        rewards = [rng.sample([float(x) for x in range(n + 2)], n) for _ in range(batch)]
    return logps, lengths, rewards, ref


def tensors(*rows: Rows) -> list[torch.Tensor]:
    return [torch.tensor(r, dtype=torch.float64) for r in rows]


CASES = [(n, ties, seed) for n in range(2, 7) for ties in (False, True) for seed in range(3)]


@pytest.mark.parametrize(("n", "ties", "seed"), CASES)
def test_both_equal_their_float64_references(n: int, ties: bool, seed: int) -> None:
    rng = random.Random(1000 * n + 10 * seed + ties)
    batch = rng.randint(2, 5)
    raw = random_lists(rng, batch, n, ties)
    lp, ln, rw, ref = tensors(*raw)
    ln = ln.long()
    for beta in (0.1, 0.7):
        lipo = float(lipo_lambda_loss(lp, ln, rw, ref, beta=beta))
        pl = float(dpo_pl_loss(lp, ln, rw, ref, beta=beta))
        assert lipo == pytest.approx(ref_lipo(raw[0], raw[2], raw[3], beta), rel=1e-12, abs=1e-12)
        assert pl == pytest.approx(ref_dpo_pl(raw[0], raw[2], raw[3], beta), rel=1e-12, abs=1e-12)
        assert lipo > 0 and pl > 0


def test_prompts_grouped_by_list_length_average_over_prompts() -> None:
    """What the trainer does with lists of unequal length: one call per length, then each weighted by its prompts."""
    rng = random.Random(7)
    groups = [random_lists(rng, b, n, ties=True) for b, n in ((3, 4), (2, 3), (1, 2))]
    for fn, ref_fn in ((lipo_lambda_loss, ref_lipo), (dpo_pl_loss, ref_dpo_pl)):
        weighted = sum(float(fn(*tensors(lp, ln, rw, ref), beta=0.3)) * len(lp) for lp, ln, rw, ref in groups) / sum(
            len(g[0]) for g in groups
        )
        flat = [[row for g in groups for row in g[i]] for i in range(4)]  # the ragged batch, row by row
        assert weighted == pytest.approx(ref_fn(flat[0], flat[2], flat[3], 0.3), rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_dpo_pl_is_dpo_for_two_candidates(seed: int) -> None:
    rng = random.Random(seed)
    lp, ln, rw, ref = tensors(*random_lists(rng, 4, 2, ties=False))
    for beta in (0.05, 0.1, 1.5):
        for pairs in ("all", "best_worst"):
            expected = dpo_loss(lp, ln.long(), rw, ref, beta=beta, pairs=pairs)
            assert float(dpo_pl_loss(lp, ln.long(), rw, ref, beta=beta)) == pytest.approx(float(expected), rel=1e-14)
    plugin_pl, plugin_dpo = DpoPlLoss(sft_weight=1.0, beta=0.2), DpoLoss(sft_weight=1.0, beta=0.2)
    assert plugin_pl(lp, ln.long(), rw, ref).parts == pytest.approx(plugin_dpo(lp, ln.long(), rw, ref).parts)


@pytest.mark.parametrize("fn", [lipo_lambda_loss, dpo_pl_loss], ids=["lipo", "dpo_pl"])
def test_candidate_order_ties_and_gradients(fn) -> None:  # type: ignore[no-untyped-def]
    lp, ln, rw, ref = tensors(*random_lists(random.Random(3), 3, 5, ties=True))
    ln = ln.long()
    perm = [3, 0, 4, 2, 1]
    assert float(fn(lp[:, perm], ln[:, perm], rw[:, perm], ref[:, perm])) == pytest.approx(float(fn(lp, ln, rw, ref)))
    tied = lp.clone().requires_grad_(True)
    out = fn(tied, ln, torch.full_like(rw, 2.0), ref)
    out.backward()
    assert float(out.detach()) == 0.0 and float(tied.grad.abs().sum()) == 0.0  # all tied: no pair, nothing to learn
    x = lp.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: fn(t, ln, rw, ref, beta=0.4), (x,))
    # The better candidate's log-prob is pushed up, the worst one's down.
    g = torch.autograd.grad(fn(x, ln, rw, ref), x)[0]
    best, worst = rw.argmax(dim=1), rw.argmin(dim=1)
    rows = torch.arange(3)
    assert (g[rows, best] < 0).all() and (g[rows, worst] > 0).all()
    with pytest.raises(ValueError, match="needs ref_logps"):
        fn(lp, ln, rw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fn", [lipo_lambda_loss, dpo_pl_loss], ids=["lipo", "dpo_pl"])
def test_finite_at_extreme_log_probs(fn, dtype: torch.dtype) -> None:  # type: ignore[no-untyped-def]
    lp = torch.tensor([[-1e4, -1.0, -5e3, -1e4, -1e4]], dtype=dtype, requires_grad=True)
    ref = torch.tensor([[-1.0, -1e4, -1.0, -1e4, -1.0]], dtype=dtype)
    out = fn(lp, torch.ones(1, 5, dtype=torch.long), torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]], dtype=dtype), ref)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(lp.grad).all() and float(lp.grad.abs().sum()) > 0


# ---------------------------------------------------------------- the plugins
PLUGINS = [("lipo", LipoLoss, lipo_lambda_loss), ("dpo-pl", DpoPlLoss, dpo_pl_loss)]


@pytest.mark.parametrize(("name", "cls", "fn"), PLUGINS)
def test_the_plugins_are_rank_plus_lambda_sft_with_their_own_beta(name: str, cls: type, fn) -> None:  # type: ignore[no-untyped-def]
    loss = build_loss(load_config(overrides=[f"loss.name={name}", "loss.options.beta=0.25", "cycle.num_samples=4"]))
    assert type(loss) is cls and loss.needs_reference and loss.hyper == {"beta": 0.25} and loss.sft_weight == 9.0
    lp, ln, rw, ref = tensors(*random_lists(random.Random(11), 3, 4, ties=False))
    out = loss(lp, ln.long(), rw, ref)
    expected = fn(lp, ln.long(), rw, ref, beta=0.25) + 9.0 * sft_loss(lp, ln.long(), rw)
    assert float(out.total) == pytest.approx(float(expected), rel=1e-12) and set(out.parts) == {"rank", "sft", "total"}
    with pytest.raises(ConfigError, match=r"loss\.options\.beta"):
        build_loss(load_config(overrides=[f"loss.name={name}", "loss.options.beta=0"]))
    with pytest.raises(ConfigError, match=r"loss\.options\.pairs"):
        build_loss(load_config(overrides=[f"loss.name={name}", "loss.options.pairs=all"]))


def test_cyclealign_plugins_lists_them_with_their_options() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["plugins"], terminal_width=200)
    rows = {tuple(c.strip() for c in line.split("│")[1:4]) for line in result.output.splitlines() if "│" in line}
    assert {("loss", "lipo", "cyclealign-losses"), ("loss", "dpo-pl", "cyclealign-losses")} <= rows, rows
    for name in ("lipo", "dpo-pl"):
        result = runner.invoke(app, ["plugins", "--options", name], terminal_width=200)
        assert result.exit_code == 0 and "beta" in result.output and "0.1" in result.output, result.output
