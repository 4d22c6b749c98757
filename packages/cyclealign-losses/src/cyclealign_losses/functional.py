"""The ranking objectives as pure tensor functions (torch only, no framework imports).

One calling convention for all of them:

- ``logps``   float ``[B, n]``: the SUM of each candidate's response-token log-probs;
- ``lengths`` int ``[B, n]``: each response's true token count (never the padded length);
- ``rewards`` float ``[B, n]``: higher is better, candidates in any order (the losses sort);
- ``ref_logps`` ``[B, n]`` or ``None``: the frozen reference's summed log-probs (DPO).

Each returns a scalar averaged over the batch, differentiable w.r.t. ``logps``.
Ties: a pair of candidates with equal rewards contributes nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _check(logps: Tensor, lengths: Tensor, rewards: Tensor) -> None:
    if logps.dim() != 2:
        raise ValueError(f"logps must be [B, n], got shape {tuple(logps.shape)}")
    if lengths.shape != logps.shape or rewards.shape != logps.shape:
        raise ValueError(
            f"logps {tuple(logps.shape)}, lengths {tuple(lengths.shape)} and rewards {tuple(rewards.shape)} must match"
        )
    if logps.shape[1] < 2:
        raise ValueError("a ranking loss needs at least 2 candidates per prompt")
    if bool((lengths <= 0).any()):
        raise ValueError("every candidate needs a positive token count in `lengths`")


def mean_logps(logps: Tensor, lengths: Tensor) -> Tensor:
    """Per-token average log-prob, the length-fair score PRO and SFT use."""
    return logps / lengths.to(logps.dtype)


def pro_loss(logps: Tensor, lengths: Tensor, rewards: Tensor, ref_logps: Tensor | None = None) -> Tensor:
    """Preference Ranking Optimisation: a listwise softmax over each suffix of the ranking.

    With candidates sorted best first, scores ``s = logps / lengths`` and, for the
    k-th position, temperatures ``w_kj = r_k − r_j`` (j > k) and ``w_kk = max_j w_kj``:
    ``ℓ_k = logsumexp({s_k·w_kk} ∪ {s_j·w_kj}) − s_k·w_kk``; the loss sums the batch
    means of ``ℓ_k`` over k.  Candidates tied with y_k (w_kj = 0) are left out of
    y_k's suffix, so a tie contributes nothing; a position whose whole suffix is tied
    contributes zero.
    """
    _check(logps, lengths, rewards)
    order = torch.argsort(rewards, dim=1, descending=True, stable=True)
    s = torch.gather(mean_logps(logps, lengths), 1, order)
    r = torch.gather(rewards.to(s.dtype), 1, order)
    n = s.shape[1]
    total = s.new_zeros(())
    for k in range(n - 1):
        w = r[:, k : k + 1] - r[:, k + 1 :]  # [B, n-k-1], >= 0
        strict = w > 0
        w_kk = w.max(dim=1).values  # [B]
        head = s[:, k] * w_kk
        tail = torch.where(strict, s[:, k + 1 :] * w, torch.full_like(w, float("-inf")))
        lse = torch.logsumexp(torch.cat([head[:, None], tail], dim=1), dim=1)
        ell = torch.where(strict.any(dim=1), lse - head, torch.zeros_like(head))
        total = total + ell.mean()
    return total


def rrhf_loss(
    logps: Tensor,
    lengths: Tensor,
    rewards: Tensor,
    ref_logps: Tensor | None = None,
    *,
    length_penalty: float = 1.0,
) -> Tensor:
    """RRHF's ranking term: Σ over pairs with r_i < r_j of max(0, p_i − p_j), p = logps / len^α.

    ``length_penalty`` is α (1 normalises by each response's TRUE length).
    """
    _check(logps, lengths, rewards)
    p = logps / lengths.to(logps.dtype).pow(length_penalty)
    worse = rewards[:, :, None] < rewards[:, None, :]  # [B, i, j]: candidate i ranked below j
    diff = p[:, :, None] - p[:, None, :]
    return torch.where(worse, F.relu(diff), torch.zeros_like(diff)).sum(dim=(1, 2)).mean()


def dpo_loss(
    logps: Tensor,
    lengths: Tensor,
    rewards: Tensor,
    ref_logps: Tensor | None = None,
    *,
    beta: float = 0.1,
    pairs: str = "all",
) -> Tensor:
    """DPO's sigmoid loss over the ordered pairs of the ranking, normalised by the pair count.

    ``pairs="all"``: every (winner, loser) pair with distinct rewards;
    ``pairs="best_worst"``: only the top-rewarded against the bottom-rewarded candidate.
    """
    _check(logps, lengths, rewards)
    if ref_logps is None:
        raise ValueError("dpo_loss needs ref_logps (the frozen reference's summed log-probs)")
    if ref_logps.shape != logps.shape:
        raise ValueError(f"ref_logps {tuple(ref_logps.shape)} must match logps {tuple(logps.shape)}")
    h = logps - ref_logps.to(logps.dtype)
    margin = beta * (h[:, :, None] - h[:, None, :])  # [B, w, l]
    better = rewards[:, :, None] > rewards[:, None, :]
    if pairs == "best_worst":
        top = rewards == rewards.max(dim=1, keepdim=True).values
        bottom = rewards == rewards.min(dim=1, keepdim=True).values
        better = better & top[:, :, None] & bottom[:, None, :]
    elif pairs != "all":
        raise ValueError(f"pairs must be 'all' or 'best_worst', got {pairs!r}")
    per_pair = torch.where(better, -F.logsigmoid(margin), torch.zeros_like(margin))
    count = better.sum(dim=(1, 2)).clamp(min=1).to(logps.dtype)
    return (per_pair.sum(dim=(1, 2)) / count).mean()


def sft_loss(logps: Tensor, lengths: Tensor, rewards: Tensor, ref_logps: Tensor | None = None) -> Tensor:
    """Negative mean token log-prob of the best candidate (the paper's −(1/|y¹|) Σ log π(y¹))."""
    _check(logps, lengths, rewards)
    best = rewards.argmax(dim=1, keepdim=True)
    return -torch.gather(mean_logps(logps, lengths), 1, best).squeeze(1).mean()
