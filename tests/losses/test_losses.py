"""Every loss against a naive float64 reference written here, plus the known failure modes."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable

import pytest
import torch

from cyclealign.cycle.rewards import ranks_to_rewards
from cyclealign_losses import (
    DpoLoss,
    LossOutput,
    ProLoss,
    RrhfLoss,
    dpo_loss,
    pro_loss,
    rrhf_loss,
    sft_loss,
)

Rows = list[list[float]]

# ---------------------------------------------------------------- naive references (plain Python, ragged rows)


def ref_pro(lp: Rows, ln: Rows, rw: Rows) -> float:
    """ANCHORS.md: sort best first; ℓ_k over y_k and its (strictly worse) suffix; batch mean per k, summed over k."""
    per_k: dict[int, list[float]] = {}
    for lpr, lnr, rwr in zip(lp, ln, rw, strict=True):
        idx = sorted(range(len(rwr)), key=lambda i: -rwr[i])
        s = [lpr[i] / lnr[i] for i in idx]
        r = [rwr[i] for i in idx]
        for k in range(len(s) - 1):
            ws = [(j, r[k] - r[j]) for j in range(k + 1, len(s)) if r[k] - r[j] > 0]
            if not ws:
                per_k.setdefault(k, []).append(0.0)
                continue
            wkk = max(w for _, w in ws)
            terms = [s[k] * wkk] + [s[j] * w for j, w in ws]
            m = max(terms)
            lse = m + math.log(sum(math.exp(t - m) for t in terms))
            per_k.setdefault(k, []).append(lse - s[k] * wkk)
    # A row too short to have position k adds 0 to that position's batch mean.
    return sum(sum(v) / len(lp) for v in per_k.values())


def ref_rrhf(lp: Rows, ln: Rows, rw: Rows, alpha: float = 1.0) -> float:
    rows = []
    for lpr, lnr, rwr in zip(lp, ln, rw, strict=True):
        p = [lpr[i] / lnr[i] ** alpha for i in range(len(lpr))]
        total = 0.0
        for i in range(len(p)):
            for j in range(len(p)):
                if rwr[i] < rwr[j]:
                    total += max(0.0, p[i] - p[j])
        rows.append(total)
    return sum(rows) / len(rows)


def ref_dpo(lp: Rows, ln: Rows, rw: Rows, ref: Rows, beta: float = 0.1, best_worst: bool = False) -> float:
    rows = []
    for lpr, rwr, rfr in zip(lp, rw, ref, strict=True):
        pairs = []
        for w in range(len(lpr)):
            for l_ in range(len(lpr)):
                if rwr[w] > rwr[l_]:
                    if best_worst and not (rwr[w] == max(rwr) and rwr[l_] == min(rwr)):
                        continue
                    z = beta * ((lpr[w] - rfr[w]) - (lpr[l_] - rfr[l_]))
                    pairs.append(math.log1p(math.exp(-z)) if z > -30 else -z)
        rows.append(sum(pairs) / len(pairs) if pairs else 0.0)
    return sum(rows) / len(rows)


def ref_sft(lp: Rows, ln: Rows, rw: Rows) -> float:
    rows = []
    for lpr, lnr, rwr in zip(lp, ln, rw, strict=True):
        best = max(range(len(rwr)), key=lambda i: (rwr[i], -i))  # first of the tied best
        rows.append(-lpr[best] / lnr[best])
    return sum(rows) / len(rows)


def random_case(rng: random.Random, batch: int, n: int, ties: bool):
    """``batch`` rows of ``n`` candidates each, in random order."""
    ns = [n] * batch
    lengths = [[rng.randint(1, 40) for _ in range(k)] for k in ns]
    logps = [[-rng.uniform(0.05, 3.0) * length for length in row] for row in lengths]
    if ties:
        rewards = [[float(rng.randint(0, max(1, k // 2))) for _ in range(k)] for k in ns]
        for row in rewards:  # keep at least one strict pair per row
            if len(set(row)) == 1:
                row[0] += 1.0
    else:
        rewards = [rng.sample([float(x) for x in range(10)], k) for k in ns]  # shuffled, distinct
    ref = [[x + rng.uniform(-2, 2) for x in row] for row in logps]
    return logps, lengths, rewards, ref


def as_tensors(logps, lengths, rewards, ref):
    return (
        torch.tensor(logps, dtype=torch.float64),
        torch.tensor(lengths),
        torch.tensor(rewards, dtype=torch.float64),
        torch.tensor(ref, dtype=torch.float64),
    )


CASES = [(n, ties, seed) for n in range(2, 7) for ties in (False, True) for seed in range(4)]


@pytest.mark.parametrize(("n", "ties", "seed"), CASES)
def test_losses_match_naive_references(n: int, ties: bool, seed: int) -> None:
    rng = random.Random(1000 * n + 10 * seed + ties)
    raw = random_case(rng, batch=3, n=n, ties=ties)
    lp, ln, rw, ref = as_tensors(*raw)
    assert float(pro_loss(lp, ln, rw)) == pytest.approx(ref_pro(*raw[:3]), abs=1e-6)
    assert float(rrhf_loss(lp, ln, rw)) == pytest.approx(ref_rrhf(*raw[:3]), abs=1e-6)
    assert float(rrhf_loss(lp, ln, rw, length_penalty=0.5)) == pytest.approx(ref_rrhf(*raw[:3], alpha=0.5), abs=1e-6)
    assert float(dpo_loss(lp, ln, rw, ref, beta=0.3)) == pytest.approx(ref_dpo(*raw, beta=0.3), abs=1e-6)
    assert float(dpo_loss(lp, ln, rw, ref, pairs="best_worst")) == pytest.approx(
        ref_dpo(*raw, best_worst=True), abs=1e-6
    )
    assert float(sft_loss(lp, ln, rw)) == pytest.approx(ref_sft(*raw[:3]), abs=1e-6)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_candidate_order_does_not_matter(ties: bool, seed: int) -> None:
    lp, ln, rw, ref = as_tensors(*random_case(random.Random(seed), batch=3, n=5, ties=ties))
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(seed))
    fns: list[Callable[..., torch.Tensor]] = [
        pro_loss,
        rrhf_loss,
        lambda a, b, c, r: dpo_loss(a, b, c, r),
        lambda a, b, c, r: dpo_loss(a, b, c, r, pairs="best_worst"),
    ]
    if not ties:  # with a tie for the best, SFT's target is the first of them, which a shuffle may change
        fns.append(sft_loss)
    for fn in fns:
        base = float(fn(lp, ln, rw, ref))
        assert base == pytest.approx(float(fn(lp[:, perm], ln[:, perm], rw[:, perm], ref[:, perm])), abs=1e-12)


def _sub(t: torch.Tensor, idx: list[int]) -> torch.Tensor:
    return t[:, idx]


@pytest.mark.parametrize("seed", range(3))
def test_a_tied_pair_contributes_nothing(seed: int) -> None:
    """With candidates 0 and 1 tied above 2 and 3, each loss is exactly its value over the untied pairs."""
    rng = random.Random(seed)
    lp = torch.tensor([[-rng.uniform(1, 9) for _ in range(4)]], dtype=torch.float64)
    ln = torch.tensor([[rng.randint(1, 9) for _ in range(4)]])
    ref = torch.tensor([[-rng.uniform(1, 9) for _ in range(4)]], dtype=torch.float64)
    rw = torch.tensor([[2.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    a, b = [0, 2, 3], [1, 2, 3]  # the two tied candidates, each with the rest of the ranking
    lower = [2, 3]
    # PRO: each tied candidate gets its own term against the strictly worse ones; the lower part counts once.
    pro = float(pro_loss(lp, ln, rw))
    expected_pro = (
        float(pro_loss(_sub(lp, a), _sub(ln, a), _sub(rw, a)))
        + float(pro_loss(_sub(lp, b), _sub(ln, b), _sub(rw, b)))
        - float(pro_loss(_sub(lp, lower), _sub(ln, lower), _sub(rw, lower)))
    )
    assert pro == pytest.approx(expected_pro, abs=1e-12)
    # RRHF: a sum over pairs, so the pairs without the tie, lower pair counted once.
    rrhf = float(rrhf_loss(lp, ln, rw))
    expected_rrhf = sum(
        float(rrhf_loss(_sub(lp, s), _sub(ln, s), _sub(rw, s))) for s in ([0, 2], [0, 3], [1, 2], [1, 3], [2, 3])
    )
    assert rrhf == pytest.approx(expected_rrhf, abs=1e-12)
    # DPO: the mean over the 5 strictly ordered pairs; the tied pair is not one of them.
    pairs = ([0, 2], [0, 3], [1, 2], [1, 3], [2, 3])
    dpo = float(dpo_loss(lp, ln, rw, ref, beta=0.5))
    expected_dpo = sum(float(dpo_loss(_sub(lp, s), _sub(ln, s), _sub(rw, s), _sub(ref, s), beta=0.5)) for s in pairs)
    assert dpo == pytest.approx(expected_dpo / len(pairs), abs=1e-12)


def test_all_tied_gives_zero_and_no_gradient() -> None:
    lp = torch.tensor([[-5.0, -1.0, -9.0]], dtype=torch.float64, requires_grad=True)
    ln = torch.tensor([[5, 2, 3]])
    rw = torch.full((1, 3), 2.0, dtype=torch.float64)
    for fn in (pro_loss, rrhf_loss, lambda a, b, c: dpo_loss(a, b, c, torch.zeros_like(a))):
        out = fn(lp, ln, rw)
        (grad,) = torch.autograd.grad(out, lp)
        assert float(out.detach()) == 0.0 and bool((grad == 0).all())


def test_rrhf_uses_each_responses_true_length() -> None:
    # Same per-token quality, very different lengths: normalised scores are equal, so no penalty,
    # whereas dividing by a shared (padded) length would penalise the longer, better-ranked one.
    lp = torch.tensor([[-10.0, -2.0]], dtype=torch.float64)
    ln = torch.tensor([[10, 2]])
    rw = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert float(rrhf_loss(lp, ln, rw)) == 0.0
    padded_lengths = torch.tensor([[10, 10]])
    assert float(rrhf_loss(lp, padded_lengths, rw)) == pytest.approx(0.8)
    # And the hinge fires exactly when the better-ranked one is worse per token.
    assert float(rrhf_loss(torch.tensor([[-12.0, -2.0]]), ln, rw)) == pytest.approx(0.2)


def test_pro_has_a_gradient_when_rewards_are_distinct() -> None:
    lp = torch.tensor([[-3.0, -3.0, -3.0]], requires_grad=True)
    ln = torch.tensor([[3, 3, 3]])
    pro_loss(lp, ln, torch.tensor([[2.0, 1.0, 0.0]])).backward()
    assert lp.grad is not None and bool((lp.grad.abs() > 0).all())
    assert float(lp.grad[0, 0]) < 0 < float(lp.grad[0, 2])  # push the best up, the worst down


@pytest.mark.parametrize("scheme", ["linear", "exponential", "reciprocal"])
def test_pro_has_a_gradient_under_every_reward_scheme(scheme: str) -> None:
    lp = torch.tensor([[-4.0, -4.0, -4.0, -4.0]], requires_grad=True)
    rw = torch.tensor([ranks_to_rewards([2, 0, 3, 1], scheme)])
    pro_loss(lp, torch.full((1, 4), 4), rw).backward()
    assert lp.grad is not None and float(lp.grad[0, 2]) < 0 < float(lp.grad[0, 1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["pro", "rrhf", "dpo", "dpo_bw", "sft"])
def test_finite_at_extreme_log_probs(name: str, dtype: torch.dtype) -> None:
    lp = torch.tensor([[-1e4, -1.0, -5e3, -1e4, -1e4]], dtype=dtype, requires_grad=True)
    ln = torch.tensor([[1, 1, 1, 2, 1]])
    rw = torch.tensor([ranks_to_rewards([0, 1, 2, 3, 4], "exponential")], dtype=dtype)  # large reward gaps
    ref = torch.tensor([[-1.0, -1e4, -1.0, -1e4, -1.0]], dtype=dtype)
    fn = {
        "pro": pro_loss,
        "rrhf": rrhf_loss,
        "sft": sft_loss,
        "dpo": lambda a, b, c: dpo_loss(a, b, c, ref),
        "dpo_bw": lambda a, b, c: dpo_loss(a, b, c, ref, beta=1.0, pairs="best_worst"),
    }[name]
    out = fn(lp, ln, rw)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(lp.grad).all()
    assert float(lp.grad.abs().sum()) > 0  # still learning, not saturated into a zero gradient


def test_rank_losses_combine_rank_and_lambda_sft() -> None:
    from cyclealign.protocols import LossOutput as CoreLossOutput
    from cyclealign.protocols import RankLoss

    # The engine's RankLoss is structural: the package's own LossOutput has exactly the engine's fields.
    assert [f.name for f in dataclasses.fields(LossOutput)] == [f.name for f in dataclasses.fields(CoreLossOutput)]

    lp, ln, rw, ref = as_tensors(*random_case(random.Random(5), batch=2, n=4, ties=False))
    for loss, rank in [
        (ProLoss(sft_weight=4.0), lambda: pro_loss(lp, ln, rw)),
        (RrhfLoss(sft_weight=4.0, length_penalty=0.7), lambda: rrhf_loss(lp, ln, rw, length_penalty=0.7)),
        (DpoLoss(sft_weight=4.0, beta=0.2), lambda: dpo_loss(lp, ln, rw, ref, beta=0.2)),
    ]:
        assert isinstance(loss, RankLoss)
        out = loss(lp, ln, rw, ref)
        assert isinstance(out, LossOutput) and out.total.dim() == 0
        sft = float(sft_loss(lp, ln, rw))
        assert float(out.total) == pytest.approx(float(rank()) + 4.0 * sft)
        assert out.parts == pytest.approx({"rank": float(rank()), "sft": sft, "total": float(out.total)})
    assert DpoLoss.needs_reference and not ProLoss.needs_reference and not RrhfLoss.needs_reference
    with pytest.raises(ValueError, match="reference"):
        DpoLoss()(lp, ln, rw)


def test_lambda_defaults_to_l_minus_one_squared_and_can_be_overridden() -> None:
    from cyclealign.config import LossConfig

    assert ProLoss.from_config(LossConfig()).sft_weight == 4.0  # l = 3 when not told
    assert ProLoss.from_config(LossConfig(), num_samples=None).sft_weight == 4.0
    assert ProLoss.from_config(LossConfig(), num_samples=5).sft_weight == 16.0
    assert ProLoss.from_config(LossConfig(sft_weight=0.5), num_samples=5).sft_weight == 0.5
    assert RrhfLoss.from_config(LossConfig(), num_samples=5, sft_weight=2.0).sft_weight == 2.0
    assert RrhfLoss.from_config(LossConfig(sft_weight=1.0, options={"length_penalty": 0.5})).hyper == {
        "length_penalty": 0.5
    }
    dpo = DpoLoss.from_config(LossConfig(options={"beta": 0.3, "pairs": "best_worst"}), num_samples=4)
    assert (dpo.sft_weight, dpo.hyper) == (9.0, {"beta": 0.3, "pairs": "best_worst"})


def test_bad_hyperparameters_are_named() -> None:
    with pytest.raises(ValueError, match=r"loss\.sft_weight"):
        ProLoss(sft_weight=-1.0)
    with pytest.raises(ValueError, match=r"loss\.sft_weight"):
        ProLoss(sft_weight="often")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"loss\.options\.pairs"):
        DpoLoss(pairs="some")
    with pytest.raises(ValueError, match=r"loss\.options\.beta"):
        DpoLoss(beta=0.0)
    with pytest.raises(ValueError, match=r"loss\.options\.length_penalty"):
        RrhfLoss(length_penalty=-0.5)


def test_bad_tensors_are_explained() -> None:
    ones = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="must match"):
        pro_loss(torch.zeros(2, 3), torch.ones(2, 2, dtype=torch.long), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="needs ref_logps"):
        dpo_loss(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.long), torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="at least 2 candidates"):
        rrhf_loss(torch.zeros(2, 1), torch.ones(2, 1, dtype=torch.long), torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"positive token count in `lengths` \(row\(s\) 1\)"):
        pro_loss(torch.zeros(2, 3), torch.tensor([[1, 1, 1], [1, 0, 1]]), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"rewards must be finite \(row\(s\) 0\)"):
        pro_loss(torch.zeros(2, 3), ones, torch.tensor([[0.0, float("nan"), 1.0], [0.0, 1.0, 2.0]]))
    assert float(sft_loss(torch.tensor([[-6.0]]), torch.tensor([[3]]), torch.zeros(1, 1))) == 2.0  # SFT alone: n=1
