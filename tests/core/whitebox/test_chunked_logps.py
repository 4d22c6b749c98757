"""Chunked response log-probs equal one head call over every token: values and gradients, in float64."""

from __future__ import annotations

import pytest
import torch

from cyclealign.whitebox.batching import token_logps
from cyclealign.whitebox.chunked_logps import chunked_token_logps

VOCAB, HIDDEN, TOKENS = 37, 8, 23


def _setup(bias: bool = False, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(HIDDEN, VOCAB, bias=bias).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(VOCAB, HIDDEN, generator=gen, dtype=torch.float64))
        if bias:
            head.bias.copy_(torch.randn(VOCAB, generator=gen, dtype=torch.float64))
    hidden = torch.randn(TOKENS, HIDDEN, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, VOCAB, (TOKENS,), generator=gen)
    weights = torch.randn(TOKENS, generator=gen, dtype=torch.float64)  # a loss that weighs tokens differently
    return head, hidden, targets, weights


def _values_and_grads(fn, head, hidden, targets, weights):
    head.zero_grad(set_to_none=True)
    hidden.grad = None
    lp = fn(head, hidden, targets)
    (lp * weights).sum().backward()
    grads = [hidden.grad.clone(), *(p.grad.clone() for p in head.parameters())]
    return lp.detach(), grads


@pytest.mark.parametrize("chunk", [1, 4, 7, TOKENS, 1000])
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_equals_the_full_head_call(chunk: int, bias: bool) -> None:
    head, hidden, targets, weights = _setup(bias)
    want, want_grads = _values_and_grads(lambda h, x, t: token_logps(h(x), t), head, hidden, targets, weights)
    got, got_grads = _values_and_grads(
        lambda h, x, t: chunked_token_logps(h, x, t, chunk_tokens=chunk), head, hidden, targets, weights
    )
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert all(float(g.abs().sum()) > 0 for g in want_grads)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=0)


def test_no_call_of_the_head_sees_more_than_a_chunk_in_forward_or_backward() -> None:
    head, hidden, targets, weights = _setup()
    rows: list[tuple[int, bool]] = []
    head.register_forward_hook(lambda _m, args, _out: rows.append((args[0].shape[0], torch.is_grad_enabled())))
    lp = chunked_token_logps(head, hidden, targets, chunk_tokens=5)
    forward_calls = len(rows)
    (lp * weights).sum().backward()
    assert forward_calls == 5  # ceil(23 / 5)
    assert len(rows) == 10, "backward recomputes each chunk's logits instead of keeping them"
    assert max(n for n, _ in rows) <= 5


def test_without_gradients_nothing_is_recomputed_and_half_precision_gives_float32() -> None:
    head, hidden, targets, _ = _setup()
    with torch.no_grad():
        lp = chunked_token_logps(head, hidden, targets, chunk_tokens=4)
    assert not lp.requires_grad and lp.shape == (TOKENS,)
    half = torch.nn.Linear(HIDDEN, VOCAB).to(torch.bfloat16)
    out = chunked_token_logps(half, hidden.detach().to(torch.bfloat16), targets, chunk_tokens=4)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    with pytest.raises(ValueError, match=r"hidden \[T, H\] and targets \[T\]"):
        chunked_token_logps(head, hidden[None], targets)
