"""Every loss against a naive float64 reference written here, plus the known failure modes."""

from __future__ import annotations

import math
import random

import pytest
import torch

from cyclealign_losses import (
    DpoLoss,
    ProLoss,
    RrhfLoss,
    dpo_loss,
    pro_loss,
    ranks_to_rewards,
    rrhf_loss,
    sft_loss,
)

# ---------------------------------------------------------------- naive references (plain Python)


def ref_pro(lp, ln, rw):
    """Per row: sort best first; for each k, log(Σ exp) over y_k and its strictly worse suffix."""
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
    return sum(sum(v) / len(v) for v in per_k.values())


def ref_rrhf(lp, ln, rw, alpha=1.0):
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


def ref_dpo(lp, ln, rw, ref, beta=0.1, best_worst=False):
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


def ref_sft(lp, ln, rw):
    rows = []
    for lpr, lnr, rwr in zip(lp, ln, rw, strict=True):
        best = max(range(len(rwr)), key=lambda i: (rwr[i], -i))
        rows.append(-lpr[best] / lnr[best])
    return sum(rows) / len(rows)


def random_case(rng: random.Random, batch: int, n: int, ties: bool):
    lengths = [[rng.randint(1, 40) for _ in range(n)] for _ in range(batch)]
    logps = [[-rng.uniform(0.1, 3.0) * lengths[b][i] for i in range(n)] for b in range(batch)]
    if ties:
        rewards = [[float(rng.randint(0, max(1, n // 2))) for _ in range(n)] for _ in range(batch)]
        for row in rewards:  # keep at least one strict pair per row
            if len(set(row)) == 1:
                row[0] += 1.0
    else:
        rewards = [rng.sample([float(x) for x in range(10)], n) for _ in range(batch)]  # shuffled, distinct
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
    if not ties:
        assert float(sft_loss(lp, ln, rw)) == pytest.approx(ref_sft(*raw[:3]), abs=1e-6)


@pytest.mark.parametrize("loss", [pro_loss, rrhf_loss, sft_loss])
def test_candidate_order_does_not_matter(loss) -> None:
    lp, ln, rw, _ = as_tensors(*random_case(random.Random(3), batch=2, n=5, ties=False))
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(0))
    assert float(loss(lp, ln, rw)) == pytest.approx(float(loss(lp[:, perm], ln[:, perm], rw[:, perm])), abs=1e-12)


def test_tied_pairs_contribute_nothing() -> None:
    lp = torch.tensor([[-5.0, -1.0, -9.0]], dtype=torch.float64, requires_grad=True)
    ln = torch.tensor([[5, 2, 3]])
    rw = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)  # candidates 0 and 1 tie
    ref = torch.zeros_like(lp)
    # Moving the tied pair's relative scores changes nothing that compares them with each other.
    for fn in (rrhf_loss, lambda *a: dpo_loss(*a, ref)):
        base = float(fn(lp, ln, rw))
        only_tie = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
        all_tie = torch.tensor([[2.0, 2.0, 2.0]], dtype=torch.float64)
        assert float(fn(lp, ln, all_tie)) == 0.0
        assert base == pytest.approx(float(fn(lp, ln, only_tie)))
    assert float(pro_loss(lp, ln, torch.tensor([[2.0, 2.0, 2.0]], dtype=torch.float64))) == 0.0
    # RRHF: candidate 1 scores above its tied partner 0: no penalty from that pair.
    assert float(rrhf_loss(lp, ln, rw)) == 0.0


def test_rrhf_uses_each_responses_true_length() -> None:
    # Same per-token quality, very different lengths: normalised scores are equal, so no penalty,
    # whereas dividing by a shared (padded) length would penalise the longer, better-ranked one.
    lp = torch.tensor([[-10.0, -2.0]], dtype=torch.float64)
    ln = torch.tensor([[10, 2]])
    rw = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert float(rrhf_loss(lp, ln, rw)) == 0.0
    padded = torch.tensor([[10, 10]])
    assert float(rrhf_loss(lp, padded, rw)) > 0.0


def test_pro_has_a_gradient_when_rewards_are_distinct() -> None:
    lp = torch.tensor([[-3.0, -3.0, -3.0]], requires_grad=True)
    ln = torch.tensor([[3, 3, 3]])
    pro_loss(lp, ln, torch.tensor([[2.0, 1.0, 0.0]])).backward()
    assert lp.grad is not None and bool((lp.grad.abs() > 0).all())
    assert float(lp.grad[0, 0]) < 0 < float(lp.grad[0, 2])  # push the best up, the worst down


@pytest.mark.parametrize("name", ["pro", "rrhf", "dpo", "sft"])
def test_finite_at_extreme_log_probs(name: str) -> None:
    lp = torch.tensor([[-1e4, -1.0, -5e3, -1e4]], requires_grad=True)
    ln = torch.tensor([[1, 1, 1, 1]])
    rw = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    ref = torch.tensor([[-1.0, -1e4, -1.0, -1e4]])
    fn = {"pro": pro_loss, "rrhf": rrhf_loss, "sft": sft_loss, "dpo": lambda a, b, c: dpo_loss(a, b, c, ref)}[name]
    out = fn(lp, ln, rw)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(lp.grad).all()


def test_rank_losses_combine_rank_and_lambda_sft() -> None:
    lp, ln, rw, ref = as_tensors(*random_case(random.Random(5), batch=2, n=4, ties=False))
    for cls, rank in [
        (ProLoss, lambda: pro_loss(lp, ln, rw)),
        (RrhfLoss, lambda: rrhf_loss(lp, ln, rw)),
        (DpoLoss, lambda: dpo_loss(lp, ln, rw, ref)),
    ]:
        out = cls(sft_weight=4.0)(lp, ln, rw, ref)
        assert float(out.total) == pytest.approx(float(rank()) + 4.0 * float(sft_loss(lp, ln, rw)))
        assert set(out.parts) == {"rank", "sft", "total"}
    assert DpoLoss.needs_reference and not ProLoss.needs_reference


def test_lambda_defaults_to_l_minus_one_squared() -> None:
    from cyclealign.config import LossConfig

    assert ProLoss.from_config(LossConfig(), num_samples=3).sft_weight == 4.0
    assert ProLoss.from_config(LossConfig(), num_samples=5).sft_weight == 16.0
    assert RrhfLoss.from_config(LossConfig(sft_weight=1.0, length_penalty=0.5)).hyper == {"length_penalty": 0.5}


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        ("linear", [1.0, 3.0, 0.0, 2.0]),
        ("exponential", [2.0, 8.0, 1.0, 4.0]),
        ("reciprocal", [1 / 3, 1.0, 1 / 4, 1 / 2]),
    ],
)
def test_ranks_to_rewards(scheme: str, expected: list[float]) -> None:
    assert ranks_to_rewards([1, 3, 0, 2], scheme) == pytest.approx(expected)


def test_ranks_to_rewards_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="not a permutation"):
        ranks_to_rewards([0, 0, 1])
    with pytest.raises(ValueError, match="unknown reward scheme"):
        ranks_to_rewards([0, 1], "cubic")


def test_shape_errors_are_explained() -> None:
    with pytest.raises(ValueError, match="must match"):
        pro_loss(torch.zeros(2, 3), torch.ones(2, 2, dtype=torch.long), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="needs ref_logps"):
        dpo_loss(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.long), torch.tensor([[1.0, 0.0]]))
