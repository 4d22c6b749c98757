"""The ranking protocol, owned once: the ``Oracle`` every chat backend gets for free.

For each request: render the prompt with the demonstrations that fit the context,
ask for the ranking schema, parse strictly, re-ask with the exact error fed back
(bounded by ``oracle.max_parse_retries``), and record a failure (``order=None`` and
the reason) when nothing valid came back — never an exception, never an invented
ranking.  Calls for many prompts overlap on one background event loop (so sync
callers and notebooks alike can call ``rank_many``) under ``oracle.concurrency``.

Budget: each paid call reserves its worst-case cost when sent; once one would take
the run past ``oracle.budget_usd``, ``rank_many`` raises ``BudgetExceeded`` after
the calls in flight have finished (their answers are cached, so a resumed run
gets them for free).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from cyclealign.config import OracleConfig
from cyclealign.errors import BudgetExceeded, OracleSetupError, TransportError
from cyclealign.oracle.backend import ChatBackend, ChatRequest
from cyclealign.oracle.cache import OracleCache
from cyclealign.oracle.demos import fit_demonstrations
from cyclealign.oracle.limits import RequestPacer, SpendGuard
from cyclealign.oracle.loop import shared_loop
from cyclealign.oracle.prompts import (
    AnswerError,
    feedback_message,
    load_instruction,
    messages_tokens,
    parse_answer,
    ranking_schema,
    render_messages,
)
from cyclealign.oracle.secrets import redact
from cyclealign.oracle.transport import RetryPolicy, Sent, Transport
from cyclealign.protocols import TRUNCATED, OracleRequest, OracleVerdict
from cyclealign.usage import OracleStats, Usage

T = TypeVar("T")


class _Tally:
    """What one request has cost so far, over all its calls."""

    def __init__(self) -> None:
        self.attempts, self.waited_s, self.latency_s = 0, 0.0, 0.0
        self.usage = Usage()
        self.answers = 0
        self.all_cached = True

    def add(self, sent: Sent) -> None:
        self.attempts += sent.attempts
        self.waited_s += sent.waited_s
        self.latency_s += sent.latency_s
        self.usage = self.usage + sent.reply.usage
        self.answers += 1
        self.all_cached = self.all_cached and sent.cached

    def failed_transport(self, error: TransportError) -> None:
        self.attempts += error.attempts
        self.waited_s += error.waited_s

    def verdict(self, **fields: Any) -> OracleVerdict:
        return OracleVerdict(
            attempts=self.attempts,
            cached=self.answers > 0 and self.all_cached,
            usage=self.usage,
            latency_s=self.latency_s,
            waited_s=self.waited_s,
            **fields,
        )


class ChatOracle:
    """The ``Oracle`` protocol over any :class:`ChatBackend`.

    ``spent`` is what earlier parts of this run already paid (a resumed run), so
    ``oracle.budget_usd`` spans the whole run.
    """

    def __init__(
        self, backend: ChatBackend, config: OracleConfig, *, spent: Usage | None = None, name: str | None = None
    ) -> None:
        self.backend = backend
        self.config = config
        self.name = name or config.name
        try:
            self.instruction = load_instruction(config.instruction_file)
        except Exception:
            backend.close()
            raise
        self.stats = OracleStats(usage=spent or Usage())
        paid = not backend.free
        if config.budget_usd is not None and paid and not backend.price(1000, 1000) > 0:
            backend.close()
            raise OracleSetupError(
                f"oracle.budget_usd is set but there is no price for model {backend.model!r}, so the budget "
                "could not be enforced; unset the budget or use a model with a known price"
            )
        self.context_limit = min(config.context_tokens, backend.context_tokens or config.context_tokens)
        self.transport = Transport(
            backend,
            self.stats,
            cache=OracleCache(config.cache_path) if config.cache and config.cache_path else None,
            pacer=RequestPacer(config.requests_per_minute),
            guard=SpendGuard(config.budget_usd if paid else None, lambda: self.stats.usage.cost_usd),
            # the backend's timeout bounds each network phase; this bounds the whole call, with room for a
            # library's lazy set-up on the first call of a process
            policy=RetryPolicy(
                config.max_retries, config.backoff_base_s, config.backoff_max_s, 2 * config.timeout_s + 10
            ),
        )
        self._busy = threading.Lock()  # one batch at a time: stats and the semaphore belong to it
        self._loop = shared_loop()

    # ------------------------------------------------------------------ the Oracle protocol
    @property
    def model(self) -> str:
        return self.backend.model

    @property
    def cache(self) -> OracleCache | None:
        return self.transport.cache

    def rank_many(self, requests: Sequence[OracleRequest]) -> list[OracleVerdict]:
        """Rank every request, overlapping the calls; order preserved; failures recorded in the verdicts."""
        return self._batch([lambda sem, r=r: self._rank_one(r, sem) for r in requests])

    def rank(self, request: OracleRequest) -> OracleVerdict:
        return self.rank_many([request])[0]

    def complete_many(
        self, conversations: Sequence[list[dict[str, str]]], response_format: dict[str, Any] | None = None
    ) -> list[tuple[str | None, str | None]]:
        """Free-form chats with the same retries, cache, limits and accounting: ``(text, error)`` each.

        ``response_format`` may carry a ``schema`` the reply should follow (the evaluation judge uses this).
        """
        schema = (response_format or {}).get("schema")
        return self._batch(
            [lambda sem, m=m: self._complete_one(m, schema, response_format, sem) for m in conversations]
        )

    def estimate_cost_usd(self, messages: list[dict[str, str]]) -> float:
        """An upper bound of one call's price (what the budget reserves for it)."""
        return self.transport.estimate_cost_usd(self._request(messages, None))

    def preflight(self) -> None:
        self.backend.preflight()

    def close(self) -> None:
        if self.transport.cache is not None:
            self.transport.cache.close()
            self.transport.cache = None
        self.backend.close()

    def __enter__(self) -> ChatOracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, backend={self.backend.describe()})"

    # ------------------------------------------------------------------ batches
    def _batch(self, jobs: list[Any]) -> list[Any]:
        if not jobs:
            return []

        async def all_of() -> list[Any]:
            sem = asyncio.Semaphore(self.config.concurrency)
            results = await asyncio.gather(*(_budget_as_value(job(sem)) for job in jobs))
            for r in results:  # the calls in flight have finished (and are cached): now stop
                if isinstance(r, BudgetExceeded):
                    raise r
            return results

        with self._busy:
            self.transport.halted = None  # a fatal error halts the batch it happened in; the caller decides
            return self._loop.run(all_of)

    def _request(self, messages: list[dict[str, str]], schema: dict[str, Any] | None, wants_json: bool = True):
        c = self.config
        return ChatRequest(tuple(messages), c.temperature, c.max_tokens, c.timeout_s, schema, wants_json)

    # ------------------------------------------------------------------ one request
    def _fit(self, request: OracleRequest) -> list[dict[str, str]] | None:
        """The messages, with demonstrations left out (dynamic first) until prompt + answer fit the context."""
        messages = render_messages(request, instruction=self.instruction)
        room = self.context_limit - self.config.max_tokens
        if messages_tokens(messages) <= room:
            return messages
        bare = render_messages(replace(request, demonstrations=()), instruction=self.instruction)
        if messages_tokens(bare) > room:
            return None
        demo_room = room - messages_tokens(bare)
        while True:  # the estimate per demonstration is approximate: check the rendering, tighten if needed
            kept = fit_demonstrations(request.demonstrations, room=demo_room)
            messages = render_messages(replace(request, demonstrations=kept), instruction=self.instruction)
            over = messages_tokens(messages) - room
            if over <= 0:
                break
            demo_room -= over
        self.stats.demos_dropped += len(request.demonstrations) - len(kept)
        return messages

    async def _rank_one(self, request: OracleRequest, sem: asyncio.Semaphore) -> OracleVerdict:
        self.stats.calls += 1
        n = len(request.responses)
        tally = _Tally()
        messages = self._fit(request)
        if messages is None:
            self.stats.failures += 1
            need = messages_tokens(render_messages(replace(request, demonstrations=()), instruction=self.instruction))
            return tally.verdict(
                order=None,
                response=None,
                error=f"the prompt (about {need} tokens) plus oracle.max_tokens={self.config.max_tokens} does "
                f"not fit oracle.context_tokens={self.context_limit}",
                failure="context_overflow",
            )
        shown = (request.prompt, *request.responses)
        shown += tuple(t for d in request.demonstrations for t in (d.prompt, *d.responses))
        last_text: str | None = None
        error, failure = "no answer", "invalid_answer"
        for parse_try in range(self.config.max_parse_retries + 1):
            if parse_try:
                self.stats.parse_retries += 1
            try:
                sent = await self.transport.send(self._request(messages, ranking_schema(n)), sem)
            except TransportError as e:
                tally.failed_transport(e)
                error, failure = f"transport: {e}", e.kind
                break
            tally.add(sent)
            last_text = sent.reply.text
            try:
                order, response = parse_answer(last_text, n, untrusted=shown)
            except AnswerError as e:
                error = f"invalid answer: {e}"
                if sent.reply.truncated:
                    error += f" (the reply was cut off at oracle.max_tokens={self.config.max_tokens})"
                messages = [*messages, {"role": "assistant", "content": last_text}, feedback_message(error, n)]
                continue
            return tally.verdict(order=order, response=response, raw=last_text)
        self.stats.failures += 1
        return tally.verdict(order=None, response=None, raw=last_text, error=redact(error), failure=failure)

    async def _complete_one(
        self, messages: list[dict[str, str]], schema: Any, response_format: Any, sem: asyncio.Semaphore
    ) -> tuple[str | None, str | None]:
        self.stats.calls += 1
        try:
            sent = await self.transport.send(self._request(messages, schema, response_format is not None), sem)
        except TransportError as e:
            self.stats.failures += 1
            return None, redact(f"transport: {e}")
        if sent.reply.truncated:
            return sent.reply.text, f"{TRUNCATED}: the reply stopped at max_tokens={self.config.max_tokens}"
        return sent.reply.text, None


async def _budget_as_value(job: Awaitable[T]) -> T | BudgetExceeded:
    """``BudgetExceeded`` as a value, so that the other calls in flight can finish and be cached."""
    try:
        return await job
    except BudgetExceeded as e:
        return e
