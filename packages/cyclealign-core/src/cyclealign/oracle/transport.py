"""One chat call made robust: cache, budget reservation, pacing, bounded retries with backoff.

Transport retries cover what a later attempt can fix (429 with ``Retry-After``,
5xx, timeouts, dropped connections); a non-retryable :class:`ChatError` ends the
request at once.  A fatal one (bad key, unknown model, exhausted quota) also halts
the transport for the rest of the batch: calls not yet sent are not sent.  When
the provider rejects the structured-output field, the backend weakens it and the
call is sent again at once.  Every failure that remains is a
:class:`TransportError` carrying the attempts made, the time waited and its kind.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from cyclealign.errors import TransportError
from cyclealign.oracle.backend import ChatBackend, ChatError, ChatReply, ChatRequest, FormatRejected
from cyclealign.oracle.cache import CachedAnswer, OracleCache, cache_key
from cyclealign.oracle.limits import RequestPacer, SpendGuard, backoff_delay
from cyclealign.oracle.prompts import messages_tokens
from cyclealign.oracle.secrets import redact
from cyclealign.usage import OracleStats, Usage

log = logging.getLogger("cyclealign.oracle")


def failure_kind(error: BaseException) -> str:
    """The summary's name for a failed attempt: the backend's own kind, else what the exception says."""
    if isinstance(error, ChatError):
        return error.kind
    if isinstance(error, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(error, ConnectionError | OSError):
        return "unreachable"
    return "provider_error"


@dataclass(frozen=True)
class Sent:
    """A reply and how it was obtained."""

    reply: ChatReply
    cached: bool = False
    attempts: int = 1
    waited_s: float = 0.0
    latency_s: float = 0.0


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    hard_timeout_s: float = 130.0  # bounds the whole call, whatever the backend's own timeouts do


class Transport:
    """Sends chats for one oracle; the pacer, budget and stats span every call of the run."""

    def __init__(
        self,
        backend: ChatBackend,
        stats: OracleStats,
        *,
        cache: OracleCache | None,
        pacer: RequestPacer,
        guard: SpendGuard,
        policy: RetryPolicy,
    ) -> None:
        self.backend = backend
        self.stats = stats
        self.cache = cache
        self.pacer = pacer
        self.guard = guard
        self.policy = policy
        self.paid = not backend.free
        self.ledger: Any = None  # the run's journal of calls in flight (oracle/ledger.py), set by the session
        self.halted: TransportError | None = None  # a fatal error: nothing more is sent in this batch

    def estimate_cost_usd(self, request: ChatRequest) -> float:
        """An upper bound of one call's price: the prompt estimate with a 30 % margin, a full completion."""
        prompt_tokens = int(messages_tokens(list(request.messages)) * 1.3) + 16
        try:
            return float(self.backend.price(prompt_tokens, request.max_tokens))
        except Exception:
            return 0.0

    async def _complete(self, request: ChatRequest) -> ChatReply:
        if inspect.iscoroutinefunction(self.backend.complete):
            call = self.backend.complete(request)
        else:
            call = asyncio.to_thread(self.backend.complete, request)
        return await asyncio.wait_for(call, timeout=self.policy.hard_timeout_s)

    async def send(self, request: ChatRequest, sem: asyncio.Semaphore) -> Sent:
        key = cache_key(self.backend.model, list(request.messages), request.cache_params())
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.stats.cache_hits += 1
            # A replay stands for the call it replays (same tokens, so a resumed run records the same), but is free.
            return Sent(ChatReply(hit.text, Usage(1, hit.usage.prompt_tokens, hit.usage.completion_tokens)), True)
        reserved, retries, waited = 0.0, 0, 0.0
        try:
            while True:
                retry_hint: float | None = None
                async with sem:
                    if self.halted is not None:
                        raise TransportError(f"not sent: {self.halted}", attempts=0, kind=self.halted.kind)
                    if self.paid and not reserved:  # reserve when sending: only calls in flight hold money
                        reserved = self.guard.reserve(self.estimate_cost_usd(request))
                    if pause := self.pacer.reserve():
                        waited += pause
                        self.stats.waited_s += pause
                        await asyncio.sleep(pause)
                    self.stats.http_calls += 1
                    if self.ledger is not None:
                        self.ledger.sent(key)
                    t0 = time.monotonic()
                    try:
                        reply = await self._complete(request)
                    except asyncio.CancelledError:
                        raise
                    except FormatRejected as e:
                        self.stats.format_downgrades += 1
                        log.warning("oracle %s: %s; sending again with a weaker format", self.backend.model, e)
                        retries += 1
                        continue
                    except Exception as e:
                        error, kind = self._describe(e), failure_kind(e)
                        if isinstance(e, ChatError) and not e.retryable:
                            failed = TransportError(error, attempts=retries + 1, waited_s=waited, kind=kind)
                            if failed.fatal:
                                self.halted = self.halted or failed
                            raise failed from None
                        retry_hint = e.retry_after_s if isinstance(e, ChatError) else None
                    else:
                        return self._answered(key, reply, time.monotonic() - t0, retries, waited)
                if retries >= self.policy.max_retries:
                    attempts = retries + 1
                    message = f"{error} (after {attempts} attempts)"
                    raise TransportError(message, attempts=attempts, waited_s=waited, kind=kind)
                delay = backoff_delay(retries, self.policy.backoff_base_s, self.policy.backoff_max_s)
                if retry_hint is not None:  # the server knows best, within our ceiling
                    delay = max(delay, min(retry_hint, self.policy.backoff_max_s))
                retries += 1
                self.stats.retries += 1
                self.stats.waited_s += delay
                waited += delay
                await asyncio.sleep(delay)
        finally:
            self.guard.release(reserved)
            if self.ledger is not None:
                self.ledger.ended(key)

    def _describe(self, error: BaseException) -> str:
        if isinstance(error, asyncio.TimeoutError | TimeoutError):
            return f"no complete answer within {self.policy.hard_timeout_s:g} s"
        if not isinstance(error, ChatError | OSError):  # not a known failure: keep the run alive, but say so loudly
            log.warning("oracle %s: unexpected %s, retried", self.backend.model, type(error).__name__, exc_info=error)
        return redact(str(error) if isinstance(error, ChatError) else f"{type(error).__name__}: {error}")

    def _answered(self, key: str, reply: ChatReply, latency_s: float, retries: int, waited: float) -> Sent:
        u = reply.usage  # a backend that reports no call count made exactly one; a free one costs nothing
        reply = replace(reply, usage=Usage(u.calls or 1, u.prompt_tokens, u.completion_tokens, u.cost_usd * self.paid))
        self.stats.usage = self.stats.usage + reply.usage
        if self.ledger is not None:
            self.ledger.paid(key, reply.usage)
        if self.cache is not None:
            self.cache.put(key, self.backend.model, CachedAnswer(reply.text, reply.usage))
        return Sent(reply, attempts=retries + 1, waited_s=waited, latency_s=latency_s)
