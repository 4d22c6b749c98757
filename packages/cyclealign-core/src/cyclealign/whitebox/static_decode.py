"""One bucketed wave shape decoded with a static key/value cache, each step optionally replayed from a CUDA graph.

A ``StaticDecoder`` owns every tensor a decoding step touches: the cache
(``rows × heads × length × dim`` per layer, allocated once), the current token,
positions, the step counter, the per-row seeds, the end flags and the output
buffers.  A step reads and writes only those, in place, with no host sync, so
on CUDA it is captured once and replayed; on the CPU the very same ``_step``
runs eagerly.  The host looks at the rows only every ``check_every`` steps
(has every row ended? has a row begun an invented turn?); steps run past the
last row's end only write padding, and the output is cut where the plain loop
would have stopped.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from cyclealign.whitebox.batching import token_logps
from cyclealign.whitebox.forward_kwargs import accepts, cache_kwarg, keep_last
from cyclealign.whitebox.keyed_noise import keyed_choice

WARMUP_STEPS = 2  # eager steps on a side stream before a capture (cuBLAS workspaces, lazy inits)


@dataclass(frozen=True)
class DecodeSettings:
    """What a wave shape's decoding depends on besides the weights: sampling, token ids, graph use."""

    max_new_tokens: int
    temperature: float
    top_p: float
    eos_id: int
    pad_id: int
    use_graph: bool


def static_cache(model: Any, length: int) -> Any:
    """A cache of one plain ``StaticLayer`` per decoder layer (position kept in a device tensor: graph-safe)."""
    from transformers.cache_utils import Cache, StaticLayer

    layers = model.config.get_text_config(decoder=True).num_hidden_layers
    return Cache(layers=[StaticLayer(max_cache_len=length) for _ in range(layers)])


class StaticDecoder:
    """The buffers, the eager prefill and the (graphed) step of one bucketed wave shape ``rows × length``."""

    def __init__(self, model: Any, rows: int, length: int, settings: DecodeSettings, device: torch.device) -> None:
        self.model, self.rows, self.length, self.settings = model, rows, length, settings
        self.cache = static_cache(model, length)
        self.forward_kwargs = {cache_kwarg(model): self.cache, "use_cache": True, **keep_last(model)}
        self.float_mask = model.config._attn_implementation == "eager"  # eager adds the mask; sdpa takes booleans
        self.with_cache_position = accepts(model, "cache_position")
        long = {"dtype": torch.long, "device": device}
        self.token = torch.zeros(rows, **long)
        self.position = torch.zeros(rows, **long)  # each row's next position id (real tokens only)
        self.cur = torch.zeros(1, **long)  # the cache column the next token is written to
        self.step = torch.zeros((), **long)  # the index of the next token to choose
        self.seeds = torch.zeros(rows, **long)
        self.ended = torch.zeros(rows, dtype=torch.bool, device=device)
        self.ended_at = torch.zeros(rows, **long)  # the step a row ended at; max_new_tokens while running
        self.allowed = torch.ones(rows, length, dtype=torch.bool, device=device)  # False on left padding
        self.columns = torch.arange(length, **long)
        columns = settings.max_new_tokens + WARMUP_STEPS  # a capture's warm-up may write past the last step
        self.tokens = torch.zeros(rows, columns, **long)
        precision = torch.promote_types(model.dtype, torch.float32)  # float32 log-probs, float64 for a float64 model
        self.logps = torch.zeros(rows, columns, dtype=precision, device=device)
        self.graph: Any = None
        self.graph_failed = False

    # ------------------------------------------------------------------ one wave
    @torch.no_grad()
    def decode(
        self,
        input_ids: torch.Tensor,
        attention: torch.Tensor,
        seeds: torch.Tensor,
        stopped: Callable[[list[int]], bool] | None = None,
        check_every: int = 8,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, their temperature-1 log-probs) of ``input_ids``' rows, as ``sampler.decode`` would return them."""
        live = input_ids.shape[0]
        self._prefill(input_ids, attention, seeds)
        last = self.settings.max_new_tokens - 1
        for s in range(self.settings.max_new_tokens):  # s: the step whose token was just recorded
            if (s + 1) % check_every == 0 and stopped is not None:
                self._stop_rows(stopped, s, live)
            if s == last or ((s + 1) % check_every == 0 and bool(self.ended.all())):
                break
            self._advance()
        width = min(s + 1, int(self.ended_at.max()) + 1)  # where the plain loop stops: the last row's end
        return self.tokens[:live, :width].clone(), self.logps[:live, :width].clone()

    def _stop_rows(self, stopped: Callable[[list[int]], bool], s: int, live: int) -> None:
        """End the running rows whose tokens so far have begun an invented turn (asked at the plain loop's steps)."""
        rows = self.tokens[:live, : s + 1].tolist()
        done = [not e and stopped(row) for e, row in zip(self.ended[:live].tolist(), rows, strict=True)]
        if any(done):
            mask = torch.zeros_like(self.ended)
            mask[:live] = torch.tensor(done, device=mask.device)
            self.ended_at.copy_(torch.where(mask, s, self.ended_at))
            self.ended |= mask

    def _prefill(self, input_ids: torch.Tensor, attention: torch.Tensor, seeds: torch.Tensor) -> None:
        """Reset the buffers, run the prompt through the cache (eagerly: its width varies) and choose token 0.

        Rows beyond the wave's (the bucket's spare rows) repeat its last row and
        start ended, so they write padding and never hold the loop open.
        """
        live, width = input_ids.shape
        spare = self.rows - live
        ids = torch.cat([input_ids, input_ids[-1:].expand(spare, -1)])
        att = torch.cat([attention, attention[-1:].expand(spare, -1)]).bool()
        self.cache.reset()
        self.allowed.fill_(True)
        self.allowed[:, :width] = att
        self.seeds[:live] = seeds
        self.seeds[live:] = seeds[-1]
        self.ended.fill_(False)
        self.ended[live:] = True
        self.ended_at.fill_(self.settings.max_new_tokens)
        self.ended_at[live:] = -1
        self.step.zero_()
        self.cur.fill_(width)
        self.tokens.fill_(self.settings.pad_id)
        positions = (att.long().cumsum(-1) - 1).clamp(min=0)
        self.position.copy_(att.sum(-1))
        query = torch.arange(width, device=ids.device)[:, None]
        mask = ((self.columns <= query)[None] & self.allowed[:, None, :]) | (self.columns == query)[None]
        out = self.model(
            input_ids=ids, attention_mask=self._as_mask(mask[:, None]), position_ids=positions, **self._extra(width)
        )
        self._record(out.logits[:, -1])

    def _extra(self, width: int | None = None) -> dict[str, Any]:
        if not self.with_cache_position:
            return self.forward_kwargs
        cache_position = self.cur if width is None else torch.arange(width, device=self.cur.device)
        return {**self.forward_kwargs, "cache_position": cache_position}

    def _as_mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """The 4-D mask the attention implementation takes: booleans (sdpa) or 0 / dtype-min added (eager)."""
        if not self.float_mask:
            return allowed
        dtype = self.model.dtype
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )

    # ------------------------------------------------------------------ the step (graph-safe: device tensors only)
    def _record(self, logits: torch.Tensor) -> None:
        """Choose every row's next token from its logits, store it and its log-prob, advance the step counter."""
        s = self.settings
        chosen = keyed_choice(logits, self.seeds, self.step, s.temperature, s.top_p)
        token = torch.where(self.ended, s.pad_id, chosen)
        at = self.step.view(1)
        self.tokens.index_copy_(1, at, token[:, None])
        self.logps.index_copy_(1, at, token_logps(logits, token)[:, None])
        newly = (token == s.eos_id) & ~self.ended
        self.ended_at.copy_(torch.where(newly, self.step, self.ended_at))
        self.ended |= newly
        self.token.copy_(token)
        self.step += 1

    def _step(self) -> None:
        """Feed every row's current token at column ``cur``, then choose the next one."""
        mask = self.allowed & (self.columns[None, :] <= self.cur)
        out = self.model(
            input_ids=self.token[:, None],
            attention_mask=self._as_mask(mask[:, None, None, :]),
            position_ids=self.position[:, None],
            **self._extra(),
        )
        self.position += 1
        self.cur += 1
        self._record(out.logits[:, -1])

    def _advance(self) -> None:
        """One step: replayed from the graph (captured on first use), or run eagerly."""
        if self.settings.use_graph and self.graph is None and not self.graph_failed:
            try:
                self.graph = self._capture()
            except Exception as e:  # the warm-up's state is back; the wave goes on without a graph
                self.graph_failed = True
                warnings.warn(
                    f"whitebox.cuda_graph: capturing the decoding step failed ({type(e).__name__}: {e}); "
                    f"waves of {self.rows} rows × {self.length} tokens decode without a graph "
                    "(whitebox.cuda_graph: false avoids the attempt)",
                    stacklevel=2,
                )
        if self.graph is not None:
            self.graph.replay()
        else:
            self._step()

    # ------------------------------------------------------------------ CUDA graph
    def _state(self) -> list[torch.Tensor]:
        """Every tensor a step changes besides the cache's key/value columns it overwrites before reading."""
        counters = [getattr(layer, "cumulative_length", None) for layer in self.cache.layers]
        own = [self.token, self.position, self.cur, self.step, self.ended, self.ended_at, self.tokens, self.logps]
        return own + [t for t in counters if isinstance(t, torch.Tensor)]

    def _warm_up(self, steps: int) -> None:
        """Run ``steps`` steps, then put back every tensor they changed: the wave goes on as if they never ran."""
        state = self._state()
        saved = [t.clone() for t in state]
        for _ in range(steps):
            self._step()
        for t, v in zip(state, saved, strict=True):
            t.copy_(v)

    def _capture(self) -> Any:
        """Warm the step up on a side stream (as CUDA graphs require), then capture one step into a graph."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._warm_up(WARMUP_STEPS)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step()
        return graph
