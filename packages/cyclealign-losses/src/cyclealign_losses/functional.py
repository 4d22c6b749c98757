"""The ranking objectives as pure tensor functions (torch only, no framework imports).

One calling convention for all of them:

- ``logps``   float ``[B, n]``: the SUM of each candidate's response-token log-probs;
- ``lengths`` int ``[B, n]``: each response's true token count (never the padded length);
- ``rewards`` float ``[B, n]``: higher is better, candidates in any order (nothing here
  depends on the order: every loss is written over pairs of candidates, not positions);
- ``ref_logps`` ``[B, n]`` or ``None``: the frozen reference's summed log-probs (DPO,
  DPO-PL and LiPO-λ; the others accept and ignore it so that callers can treat them alike).

Every row holds the same ``n`` real candidates: the engine groups prompts by how many
candidates they kept, so there are no padding slots to mask.

Each returns a scalar: the per-row loss averaged over the ``B`` rows (a row without a
strictly ordered pair adds 0 to that mean), differentiable w.r.t. ``logps``.

Ties: two candidates with equal rewards are never compared with each other, by any loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _prepare(logps: Tensor, lengths: Tensor, rewards: Tensor, min_n: int = 2) -> Tensor:
    """Validate shapes and values; return ``rewards`` in the dtype of ``logps``."""
    if logps.dim() != 2:
        raise ValueError(f"logps must be [B, n], got shape {tuple(logps.shape)}")
    if lengths.shape != logps.shape or rewards.shape != logps.shape:
        raise ValueError(
            f"logps {tuple(logps.shape)}, lengths {tuple(lengths.shape)} and rewards {tuple(rewards.shape)} must match"
        )
    if logps.shape[1] < min_n:
        raise ValueError(f"a ranking loss needs at least {min_n} candidates per prompt, got n={logps.shape[1]}")
    rewards = rewards.to(logps.dtype)
    bad_reward = ~torch.isfinite(rewards)
    if bool(bad_reward.any()):
        raise ValueError(f"rewards must be finite (row(s) {_rows(bad_reward)})")
    bad_length = lengths <= 0
    if bool(bad_length.any()):
        raise ValueError(f"every candidate needs a positive token count in `lengths` (row(s) {_rows(bad_length)})")
    return rewards


def _rows(bad: Tensor) -> str:
    return ", ".join(str(int(i)) for i in bad.any(dim=1).nonzero().flatten()[:5])


def _strictly_better(rewards: Tensor) -> Tensor:
    """``[B, i, j]``: candidate i has a strictly higher reward than candidate j."""
    return rewards[:, :, None] > rewards[:, None, :]


def mean_logps(logps: Tensor, lengths: Tensor) -> Tensor:
    """Per-token average log-prob, the length-fair score PRO and SFT use."""
    return logps / lengths.to(logps.dtype)


def pro_loss(
    logps: Tensor,
    lengths: Tensor,
    rewards: Tensor,
    ref_logps: Tensor | None = None,
) -> Tensor:
    """Preference Ranking Optimisation: a listwise softmax of each candidate against those ranked below it.

    Scores ``s = logps / lengths``.  For each candidate k and every j with ``r_j < r_k``,
    ``w_kj = r_k − r_j`` and ``w_kk = max_j w_kj``;
    ``ℓ_k = logsumexp({s_k·w_kk} ∪ {s_j·w_kj}) − s_k·w_kk``, and the loss is ``Σ_k ℓ_k``
    averaged over rows (with a full ranking this equals "batch mean of each ℓ_k, summed
    over positions k = 0 … n−2").

    Ties: candidates tied with y_k are left out of y_k's suffix (their ``w`` would be 0,
    which would make them a constant, gradient-free term), so the loss never compares
    two tied candidates; each member of a tie gets its own ``ℓ`` against the strictly worse
    ones.  A candidate with nothing strictly below it (the last one) adds 0.
    """
    rewards = _prepare(logps, lengths, rewards)
    s = mean_logps(logps, lengths)
    strict = _strictly_better(rewards)  # [B, k, j]
    w = torch.where(strict, rewards[:, :, None] - rewards[:, None, :], torch.zeros((), dtype=s.dtype))
    w_kk = w.max(dim=2).values  # [B, k]; 0 where k has nothing below it
    head = s * w_kk
    tail = torch.where(strict, s[:, None, :] * w, torch.full((), float("-inf"), dtype=s.dtype))
    lse = torch.logsumexp(torch.cat([head[:, :, None], tail], dim=2), dim=2)
    ell = torch.where(strict.any(dim=2), lse - head, torch.zeros_like(head))
    return ell.sum(dim=1).mean()


def rrhf_loss(
    logps: Tensor,
    lengths: Tensor,
    rewards: Tensor,
    ref_logps: Tensor | None = None,
    *,
    length_penalty: float = 1.0,
) -> Tensor:
    """RRHF's ranking term: Σ over pairs with r_i < r_j of max(0, p_i − p_j), ``p = logps / lengths^α``.

    ``length_penalty`` is α (default 1: each response divided by its OWN true length, the
    fix for the reference code, which divided every candidate by the padded length).
    """
    rewards = _prepare(logps, lengths, rewards)
    p = logps / lengths.to(logps.dtype).pow(length_penalty)
    worse = _strictly_better(rewards).transpose(1, 2)  # [B, i, j]: candidate i ranked below j
    diff = p[:, :, None] - p[:, None, :]
    return torch.where(worse, F.relu(diff), torch.zeros_like(diff)).sum(dim=(1, 2)).mean()


DPO_PAIRS = ("all", "best_worst")


def dpo_loss(
    logps: Tensor,
    lengths: Tensor,
    rewards: Tensor,
    ref_logps: Tensor | None = None,
    *,
    beta: float = 0.1,
    pairs: str = "all",
) -> Tensor:
    """DPO's sigmoid loss ``−log σ(β[(π_w − π_l) − (ref_w − ref_l)])`` over the ranking's pairs.

    Uses summed log-probs (``lengths`` only validates).  Per row the loss is the MEAN
    over the selected (winner, loser) pairs, then averaged over rows.
    ``pairs="all"``: every pair with ``r_w > r_l``;
    ``pairs="best_worst"``: only pairs of a top-rewarded with a bottom-rewarded candidate
    (one pair unless the top or the bottom is tied).
    """
    if pairs not in DPO_PAIRS:
        raise ValueError(f"pairs must be one of {', '.join(DPO_PAIRS)}, got {pairs!r}")
    h = _policy_minus_reference(logps, ref_logps, "dpo_loss")
    rewards = _prepare(logps, lengths, rewards)
    margin = beta * (h[:, :, None] - h[:, None, :])  # [B, w, l]
    better = _strictly_better(rewards)
    if pairs == "best_worst":
        top = rewards == rewards.max(dim=1, keepdim=True).values
        bottom = rewards == rewards.min(dim=1, keepdim=True).values
        better = better & top[:, :, None] & bottom[:, None, :]
    per_pair = torch.where(better, -F.logsigmoid(margin), torch.zeros_like(margin))
    count = better.sum(dim=(1, 2)).clamp(min=1).to(logps.dtype)
    return (per_pair.sum(dim=(1, 2)) / count).mean()


def _policy_minus_reference(logps: Tensor, ref_logps: Tensor | None, name: str) -> Tensor:
    """``log π − log π_ref`` per candidate, after checking that the reference is there and fits."""
    if ref_logps is None:
        raise ValueError(f"{name} needs ref_logps (the frozen reference's summed log-probs)")
    if ref_logps.shape != logps.shape:
        raise ValueError(f"ref_logps {tuple(ref_logps.shape)} must match logps {tuple(logps.shape)}")
    return logps - ref_logps.to(logps.dtype)


def lipo_lambda_loss(
    logps: Tensor,
    lengths: Tensor,
    rewards: Tensor,
    ref_logps: Tensor | None = None,
    *,
    beta: float = 0.1,
) -> Tensor:
    """LiPO-λ: DPO's pairwise term over every ordered pair, each weighted by how much swapping it costs in DCG.

    ``s = β·(log π − log π_ref)``; the rewards are the relevance ψ, ``G = 2^ψ − 1``;
    τ is each candidate's 1-based rank under ``s`` (highest first, equal scores in
    candidate order; it carries no gradient) and ``D(τ) = ln(1 + τ)``.  Per row,
    ``Σ_{ψ_i > ψ_j} |G_i − G_j|·|1/D(τ_i) − 1/D(τ_j)|·(−log σ(s_i − s_j))``: the SUM over
    pairs (not their mean, as in ``dpo_loss``), then averaged over rows.  Tied ψ make no
    pair.  The weights grow as 2^ψ, so ψ should stay small (the cycle's ``linear`` rewards).
    """
    h = _policy_minus_reference(logps, ref_logps, "lipo_lambda_loss")
    rewards = _prepare(logps, lengths, rewards)
    s = beta * h
    n = s.shape[1]
    order = torch.argsort(s.detach(), dim=1, descending=True, stable=True)
    positions = torch.arange(1, n + 1, device=s.device).expand_as(order)
    tau = torch.empty_like(order).scatter_(1, order, positions).to(s.dtype)
    inv_discount = 1.0 / torch.log1p(tau)
    gain = torch.exp2(rewards) - 1.0
    weight = (gain[:, :, None] - gain[:, None, :]).abs() * (inv_discount[:, :, None] - inv_discount[:, None, :]).abs()
    margin = s[:, :, None] - s[:, None, :]  # [B, i, j]
    per_pair = torch.where(_strictly_better(rewards), -weight * F.logsigmoid(margin), torch.zeros_like(margin))
    return per_pair.sum(dim=(1, 2)).mean()


def dpo_pl_loss(
    logps: Tensor,
    lengths: Tensor,
    rewards: Tensor,
    ref_logps: Tensor | None = None,
    *,
    beta: float = 0.1,
) -> Tensor:
    """DPO under the Plackett-Luce model: the whole ranked list's likelihood, not its pairs.

    ``s = β·(log π − log π_ref)``; with candidates in preference order the row's loss is
    ``Σ_k [logsumexp_{j ≥ k} s_j − s_k]``, summed over positions, then averaged over rows.
    With two candidates that is DPO's ``−log σ(s_w − s_l)``.  Ties: as in ``pro_loss``, a
    candidate's suffix holds only those ranked strictly below it, so each member of a tie
    is scored against the worse ones alone and two tied candidates are never compared.
    """
    h = _policy_minus_reference(logps, ref_logps, "dpo_pl_loss")
    rewards = _prepare(logps, lengths, rewards)
    s = beta * h
    strict = _strictly_better(rewards)  # [B, k, j]
    suffix = torch.where(strict, s[:, None, :], torch.full((), float("-inf"), dtype=s.dtype, device=s.device))
    lse = torch.logsumexp(torch.cat([s[:, :, None], suffix], dim=2), dim=2)
    ell = torch.where(strict.any(dim=2), lse - s, torch.zeros_like(s))
    return ell.sum(dim=1).mean()


SFT_REDUCTIONS = ("mean", "sum")


def sft_loss(
    logps: Tensor,
    lengths: Tensor,
    rewards: Tensor,
    ref_logps: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Negative token log-prob of the best candidate: its MEAN ``−(1/|y¹|) Σ_t log π(y¹_t)`` by default.

    ``mean`` is the paper's formula; ``sum`` (``−Σ_t log π(y¹_t)``) is what PRO's released
    code computes, which weighs the term by the answer's length (tens of tokens) and long
    answers more.  Among candidates tied for the best reward the first (lowest index) is the target.
    """
    if reduction not in SFT_REDUCTIONS:
        raise ValueError(f"loss.sft_reduction must be one of {', '.join(SFT_REDUCTIONS)}, got {reduction!r}")
    rewards = _prepare(logps, lengths, rewards, min_n=1)
    best = rewards.argmax(dim=1, keepdim=True)
    per_candidate = mean_logps(logps, lengths) if reduction == "mean" else logps
    return -torch.gather(per_candidate, 1, best).squeeze(1).mean()
