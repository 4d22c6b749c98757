"""The black-box oracle through litellm: any model string, robust to everything an API does.

Two layers of retry, both bounded:

- transport: 429 (honouring ``Retry-After``), 5xx, timeouts, dropped connections,
  retried with exponential backoff and jitter; errors no retry can fix (bad key,
  unknown model, exhausted quota) end the request at once;
- content: an answer that is not a valid ranking is re-asked, with the exact
  error fed back to the oracle.

When both are spent the verdict is a recorded failure (``order=None`` and the
reason in ``error``), never an exception and never an invented ranking.  Calls
for many prompts run concurrently on an asyncio loop in a background thread (so
sync callers and notebooks alike can call ``rank_many``) under a
semaphore of ``oracle.concurrency`` and a requests-per-minute pacer.

Budget: before each paid call the oracle reserves the call's worst-case cost; if
that would take the run past ``oracle.budget_usd`` it raises ``BudgetExceeded``
from ``rank_many`` once the calls already in flight have finished (their answers
are in the cache, so a resumed run gets them for free).  ``budget_exceeded`` tells
the engine afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price list from the network
os.environ.setdefault("LITELLM_TELEMETRY", "False")

from cyclealign.config import OracleConfig
from cyclealign.prompts import (
    AnswerError,
    feedback_message,
    messages_tokens,
    parse_answer,
    ranking_schema,
    render_messages,
)
from cyclealign.protocols import BudgetExceeded, OracleRequest, OracleVerdict
from cyclealign_oracles.cache import CachedAnswer, OracleCache, cache_key
from cyclealign_oracles.limits import RequestPacer, SpendGuard, backoff_delay, retry_after_s
from cyclealign_oracles.loop import shared_loop
from cyclealign_oracles.providers import (
    DOWNGRADE,
    FormatMode,
    OracleSetupError,
    alias_for,
    check_reachable,
    choose_format,
    discover_model,
    local_model_name,
    openai_ranking_schema,
    read_api_key,
    rejects_format,
    response_format,
)

__all__ = ["LiteLLMOracle", "OracleSetupError", "OracleStats", "TransportError", "read_api_key", "redact"]

log = logging.getLogger("cyclealign.oracle")


class TransportError(RuntimeError):
    """A call failed after every transport retry, or with an error that no retry can fix."""

    def __init__(self, message: str, *, attempts: int = 1, waited_s: float = 0.0) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.waited_s = waited_s


# ---------------------------------------------------------------- secrets
_SECRETS: set[str] = set()


def redact(text: str, secret: str | None = None) -> str:
    """``text`` with the given secret and every API key an oracle of this process holds replaced by ``***``."""
    for s in {secret, *_SECRETS}:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


class _RedactingFilter(logging.Filter):
    """Scrubs API keys from records of litellm's and the HTTP clients' loggers, whatever their level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            message = record.getMessage()
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, None
        return True


_FILTER = _RedactingFilter()


def _litellm() -> Any:
    try:
        import litellm
    except ImportError:
        raise OracleSetupError('the litellm oracles need litellm: pip install "cyclealign-core[openai]"') from None
    litellm.suppress_debug_info = True
    litellm.telemetry = False
    litellm.set_verbose = False
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm", "httpx", "httpcore", "openai"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    return litellm


# ---------------------------------------------------------------- accounting
@dataclass
class OracleStats:
    """Per-run accounting, shown in the run summary (cost and tokens are what was paid: cache hits are free)."""

    calls: int = 0  # ranking (or completion) requests
    http_calls: int = 0  # requests actually sent, retries included
    cache_hits: int = 0
    retries: int = 0  # transport retries
    parse_retries: int = 0  # re-asks after an invalid answer
    failures: int = 0  # requests that ended without a valid answer
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    waited_s: float = 0.0  # backoff and rate-limit sleeps
    demos_dropped: int = 0  # demonstrations left out to fit oracle.context_tokens
    format_downgrades: int = 0  # structured-output modes the provider rejected

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Answer:
    """One answered call (possibly after transport retries)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cached: bool = False
    waited_s: float = 0.0
    attempts: int = 1
    latency_s: float = 0.0
    truncated: bool = False


@dataclass
class _Tally:
    """What one request has cost so far, over all its calls."""

    attempts: int = 0
    waited_s: float = 0.0
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cached: bool = True
    answered: bool = False

    def add(self, a: _Answer) -> None:
        self.attempts += a.attempts
        self.waited_s += a.waited_s
        self.cost_usd += a.cost_usd
        self.prompt_tokens += a.prompt_tokens
        self.completion_tokens += a.completion_tokens
        self.latency_s += a.latency_s
        self.cached = self.cached and a.cached
        self.answered = True

    def verdict(self, **fields: Any) -> OracleVerdict:
        return OracleVerdict(
            attempts=self.attempts,
            cached=self.answered and self.cached,
            cost_usd=self.cost_usd,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            latency_s=self.latency_s,
            waited_s=self.waited_s,
            **fields,
        )


_FATAL_NAMES = ("AuthenticationError", "PermissionDeniedError", "NotFoundError", "UnprocessableEntityError")


class LiteLLMOracle:
    """The ``Oracle`` protocol over ``litellm.acompletion``.

    ``LiteLLMOracle(config)`` derives everything from the config: ``config.name``
    picks the alias (``chatgpt``, ``gpt-4``, ``local``, ``litellm``, see
    ``providers.ALIASES``), ``config.model`` overrides its model.  A ``local`` oracle
    with no ``api_base`` starts (and on ``close()`` stops) a managed llama.cpp
    server for ``config.serve_gguf``.  ``api_key`` overrides the key lookup.
    """

    def __init__(self, config: OracleConfig, *, api_key: str | None = None) -> None:
        self.config = config
        self.alias = alias_for(config.name)
        self.name = config.name
        self._litellm = _litellm()
        self.server: Any = None  # the ManagedLlamaServer we started, if any
        self.api_base = config.api_base
        self.free = self.alias.local
        self._api_key = api_key or read_api_key(config, self.alias.key_env)
        if self.alias.key_required and not self._api_key and config.api_base is None:
            env = config.api_key_env or self.alias.key_env
            raise OracleSetupError(
                f"oracle {config.name!r} needs an API key: set the environment variable {env} "
                "(or point oracle.api_key_env / oracle.api_key_file elsewhere)"
            )
        if self.alias.local:
            self._api_key = self._api_key or "not-needed"  # OpenAI clients insist on some key
        if self._api_key:
            _SECRETS.add(self._api_key)
        self.model = self._resolve_model()
        try:
            self.context_limit = config.context_tokens
            if self.alias.local and self.server is None and config.api_base is None:
                self._start_server()
            if self.server is not None:
                self.context_limit = min(config.context_tokens, config.server_ctx)
            self.format_mode: FormatMode = (
                choose_format(self.model, local=self.alias.local, litellm=self._litellm)
                if config.json_schema
                else "none"
            )
            if config.budget_usd is not None and not self.free and not self._has_price():
                raise OracleSetupError(
                    f"oracle.budget_usd is set but litellm has no price for model {self.model!r}, so the budget "
                    "could not be enforced; unset the budget or use a model litellm prices"
                )
        except BaseException:
            self.close()
            raise
        self.stats = OracleStats()
        self.cache = OracleCache(config.cache_path) if config.cache and config.cache_path else None
        self.pacer = RequestPacer(config.requests_per_minute)
        self.guard = SpendGuard(None if self.free else config.budget_usd, lambda: self.stats.cost_usd)
        self._busy = threading.Lock()  # one rank_many at a time: stats and the semaphore belong to it
        self._loop = shared_loop()
        # litellm's timeout bounds each network phase (a server trickling bytes could outlast it); this one
        # bounds the whole call, with room for litellm's lazy set-up on the first call of a process.
        self._hard_timeout_s = 2 * config.timeout_s + 10.0

    # ------------------------------------------------------------------ setup
    def _resolve_model(self) -> str:
        cfg = self.config
        if not self.alias.local:
            model = cfg.model or self.alias.default_model
            if not model:
                raise OracleSetupError(
                    f"oracle {cfg.name!r} needs oracle.model, a litellm model string like 'anthropic/claude-…'"
                )
            return model
        if cfg.model:
            return local_model_name(cfg.model, self._litellm)
        if cfg.api_base is not None:
            return local_model_name(discover_model(cfg.api_base), self._litellm)
        if not cfg.serve_gguf:
            raise OracleSetupError("oracle 'local' needs oracle.api_base, or oracle.serve_gguf to serve a GGUF itself")
        from cyclealign_oracles.local_server import resolve_gguf

        return f"openai/{resolve_gguf(cfg.serve_gguf).name}"

    def _start_server(self) -> None:
        from cyclealign_oracles.local_server import ManagedLlamaServer, resolve_gguf

        assert self.config.serve_gguf
        self.server = ManagedLlamaServer(resolve_gguf(self.config.serve_gguf), n_ctx=self.config.server_ctx).start()
        self.api_base = self.server.api_base

    def _has_price(self) -> bool:
        try:
            p, c = self._litellm.cost_per_token(model=self.model, prompt_tokens=1000, completion_tokens=1000)
            return float(p) + float(c) > 0
        except Exception:
            return False

    # ------------------------------------------------------------------ public
    @property
    def budget_exceeded(self) -> bool:
        """True once a call was refused because it could take the run past ``oracle.budget_usd``."""
        return self.guard.exceeded

    @property
    def remaining_budget_usd(self) -> float | None:
        return self.guard.remaining_usd

    def rank_many(self, requests: Sequence[OracleRequest]) -> list[OracleVerdict]:
        """Rank every request, overlapping the calls; order preserved; failures recorded in the verdicts.

        Raises ``BudgetExceeded`` (after the calls in flight finish) when the budget would be exceeded.
        """
        if not requests:
            return []
        with self._busy:
            return self._loop.run(lambda: self.arank_many(requests))

    async def arank_many(self, requests: Sequence[OracleRequest]) -> list[OracleVerdict]:
        sem = asyncio.Semaphore(self.config.concurrency)
        results = await asyncio.gather(*(self._guarded(self._rank_one(r, sem)) for r in requests))
        return _raise_budget(results)

    def rank(self, request: OracleRequest) -> OracleVerdict:
        return self.rank_many([request])[0]

    def complete_many(
        self, conversations: Sequence[list[dict[str, str]]], response_format: dict[str, Any] | None = None
    ) -> list[tuple[str | None, str | None]]:
        """Free-form chat calls with the same retries, cache, limits and accounting: ``(text, error)`` each.

        Used by the evaluation commands (the LLM judge) so they inherit everything the oracle survives.
        ``response_format`` may carry a ``schema``; it is adapted to what the provider accepts.
        """
        schema = (response_format or {}).get("schema") if response_format else None

        async def one(messages: list[dict[str, str]], sem: asyncio.Semaphore) -> tuple[str | None, str | None]:
            self.stats.calls += 1
            wants_json = response_format is not None
            try:
                answer = await self._call(messages, sem, lambda: self._params(schema, None, wants_json))
            except TransportError as e:
                self.stats.failures += 1
                return None, redact(f"transport: {e}")
            return answer.text, None

        async def all_of() -> list[tuple[str | None, str | None]]:
            sem = asyncio.Semaphore(self.config.concurrency)
            return _raise_budget(await asyncio.gather(*(self._guarded(one(m, sem)) for m in conversations)))

        if not conversations:
            return []
        with self._busy:
            return self._loop.run(all_of)

    def preflight(self) -> None:
        """Fail fast on an unreachable endpoint (only where we know the address: local servers, proxies)."""
        if self.api_base is not None:
            check_reachable(self.api_base)

    def close(self) -> None:
        cache = getattr(self, "cache", None)
        if cache is not None:
            cache.close()
            self.cache = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> LiteLLMOracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LiteLLMOracle(name={self.name!r}, model={self.model!r}, api_base={self.api_base!r})"

    # ------------------------------------------------------------------ one request
    @staticmethod
    async def _guarded(coro: Any) -> Any:
        """Turn ``BudgetExceeded`` into a value, so the other calls in flight can finish and be cached."""
        try:
            return await coro
        except BudgetExceeded as e:
            return e

    def _fit(self, request: OracleRequest) -> list[dict[str, str]] | None:
        """The messages, with dynamic (then static) demonstrations dropped until prompt + answer fit the context."""
        demos = list(request.demonstrations)
        while True:
            messages = render_messages(OracleRequest(request.prompt, request.responses, tuple(demos)))
            if messages_tokens(messages) + self.config.max_tokens <= self.context_limit:
                return messages
            if not demos:
                return None
            dynamic = [i for i, d in enumerate(demos) if d.source != "static"]
            demos.pop(dynamic[-1] if dynamic else -1)
            self.stats.demos_dropped += 1

    async def _rank_one(self, request: OracleRequest, sem: asyncio.Semaphore) -> OracleVerdict:
        self.stats.calls += 1
        n = len(request.responses)
        tally = _Tally()
        messages = self._fit(request)
        if messages is None:
            self.stats.failures += 1
            need = messages_tokens(render_messages(OracleRequest(request.prompt, request.responses)))
            return tally.verdict(
                order=None,
                response=None,
                error=f"the prompt (about {need} tokens) plus oracle.max_tokens={self.config.max_tokens} does "
                f"not fit oracle.context_tokens={self.context_limit}",
            )
        shown = (request.prompt, *request.responses)
        shown += tuple(t for d in request.demonstrations for t in (d.prompt, *d.responses))
        last_text: str | None = None
        error = "no answer"
        for parse_try in range(self.config.max_parse_retries + 1):
            if parse_try:
                self.stats.parse_retries += 1
            try:
                answer = await self._call(messages, sem, lambda: self._params(ranking_schema(n), n, True))
            except TransportError as e:
                tally.attempts += e.attempts
                tally.waited_s += e.waited_s
                error = f"transport: {e}"
                break
            tally.add(answer)
            last_text = answer.text
            try:
                order, response = parse_answer(answer.text, n, untrusted=shown)
            except AnswerError as e:
                error = f"invalid answer: {e}"
                if answer.truncated:
                    error += f" (the reply was cut off at oracle.max_tokens={self.config.max_tokens})"
                messages = [*messages, {"role": "assistant", "content": answer.text}, feedback_message(error, n)]
                continue
            return tally.verdict(order=order, response=response, raw=answer.text)
        self.stats.failures += 1
        return tally.verdict(order=None, response=None, raw=last_text, error=redact(error))

    # ------------------------------------------------------------------ one call, with transport retries
    def _params(self, schema: dict[str, Any] | None, n: int | None, wants_json: bool) -> dict[str, Any]:
        """Sampling parameters, and the structured-output field for the provider's current format mode."""
        params: dict[str, Any] = {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens}
        if wants_json:
            strict = openai_ranking_schema(n) if n is not None else None
            fmt = response_format(self.format_mode, schema, strict_schema=strict)
            if fmt is not None:
                params["response_format"] = fmt
        return params

    def estimate_cost_usd(self, messages: list[dict[str, str]]) -> float:
        """An upper-bound guess of one call's price: the prompt estimate with a 30 % margin, a full completion."""
        prompt_tokens = int(messages_tokens(messages) * 1.3) + 16
        try:
            p, c = self._litellm.cost_per_token(
                model=self.model, prompt_tokens=prompt_tokens, completion_tokens=self.config.max_tokens
            )
            return float(p) + float(c)
        except Exception:
            return 0.0

    def _call_cost(self, response: Any) -> float:
        if self.free:
            return 0.0
        try:
            return float(self._litellm.completion_cost(completion_response=response, model=self.model) or 0.0)
        except Exception:
            return 0.0

    def _classify(self, error: BaseException) -> str:
        """``"retry"``, ``"format"`` (the provider rejects our response_format) or ``"fatal"``."""
        lit = self._litellm
        if isinstance(error, asyncio.TimeoutError | TimeoutError):
            return "retry"
        if isinstance(error, lit.ContextWindowExceededError):
            return "fatal"
        if isinstance(error, lit.BadRequestError):
            return "format" if rejects_format(error) and self.format_mode != "none" else "fatal"
        if type(error).__name__ in _FATAL_NAMES:
            return "fatal"
        if isinstance(error, lit.RateLimitError) and "quota" in str(error).lower():
            return "fatal"  # an exhausted quota does not come back within a retry
        if isinstance(error, lit.APIError | lit.APIConnectionError | lit.Timeout | OSError):
            return "retry"
        return "unknown"  # retried like a transport error, and logged

    async def _call(
        self,
        messages: list[dict[str, str]],
        sem: asyncio.Semaphore,
        make_params: Callable[[], dict[str, Any]],
    ) -> _Answer:
        lit = self._litellm
        params = make_params()
        key = cache_key(self.model, messages, params)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.cache_hits += 1
                # A replay counts as the one call it stands for, so a resumed run records what the first one did.
                return _Answer(hit.text, hit.prompt_tokens, hit.completion_tokens, 0.0, cached=True, attempts=1)
        reserved = 0.0
        retries, waited = 0, 0.0
        try:
            while True:
                async with sem:
                    if not self.free and not reserved:  # reserve when sending, so only calls in flight hold money
                        reserved = self.guard.reserve(self.estimate_cost_usd(messages))
                    pause = self.pacer.reserve()
                    if pause:
                        waited += pause
                        self.stats.waited_s += pause
                        await asyncio.sleep(pause)
                    self.stats.http_calls += 1
                    t0 = time.monotonic()
                    retry_hint: float | None = None
                    try:
                        response = await asyncio.wait_for(
                            lit.acompletion(
                                model=self.model,
                                messages=messages,
                                api_base=self.api_base,
                                api_key=self._api_key,
                                timeout=self.config.timeout_s,
                                num_retries=0,
                                max_retries=0,
                                drop_params=True,
                                **params,
                            ),
                            timeout=self._hard_timeout_s,
                        )
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:
                        kind = self._classify(e)
                        if kind == "unknown":  # not an API error class: keep the run alive, but say so loudly
                            log.warning("oracle %s: unexpected %s, retried", self.name, type(e).__name__, exc_info=e)
                        error = redact(
                            f"no complete answer within {self._hard_timeout_s:g} s"
                            if isinstance(e, asyncio.TimeoutError | TimeoutError)
                            else f"{type(e).__name__}: {e}"
                        )
                        if kind == "fatal":
                            raise TransportError(error, attempts=retries + 1, waited_s=waited) from None
                        if kind == "format":
                            self._downgrade_format(error)
                            params = make_params()
                            key = cache_key(self.model, messages, params)
                            retries += 1
                            continue
                        retry_hint = retry_after_s(e)
                    else:
                        return self._answered(response, key, time.monotonic() - t0, retries, waited)
                if retries >= self.config.max_retries:
                    attempts = retries + 1
                    raise TransportError(f"{error} (after {attempts} attempts)", attempts=attempts, waited_s=waited)
                delay = backoff_delay(retries, self.config.backoff_base_s, self.config.backoff_max_s)
                if retry_hint is not None:  # the server knows best, within our ceiling
                    delay = max(delay, min(retry_hint, self.config.backoff_max_s))
                retries += 1
                self.stats.retries += 1
                self.stats.waited_s += delay
                waited += delay
                await asyncio.sleep(delay)
        finally:
            self.guard.release(reserved)

    def _downgrade_format(self, error: str) -> None:
        weaker = DOWNGRADE[self.format_mode]
        log.warning("oracle %s rejected response_format %s (%s); using %s", self.name, self.format_mode, error, weaker)
        self.format_mode = weaker
        self.stats.format_downgrades += 1

    def _answered(self, response: Any, key: str, latency_s: float, retries: int, waited: float) -> _Answer:
        choices = getattr(response, "choices", None) or []
        choice = choices[0] if choices else None  # no choice at all reads as an empty reply: re-asked, not a crash
        message = getattr(choice, "message", None)
        text = getattr(message, "content", None) or getattr(message, "refusal", None) or ""
        if not isinstance(text, str):
            text = str(text)
        usage = getattr(response, "usage", None)
        answer = _Answer(
            text=text,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            cost_usd=self._call_cost(response),
            waited_s=waited,
            attempts=retries + 1,
            latency_s=latency_s,
            truncated=getattr(choice, "finish_reason", None) == "length",
        )
        self.stats.prompt_tokens += answer.prompt_tokens
        self.stats.completion_tokens += answer.completion_tokens
        self.stats.cost_usd += answer.cost_usd
        if self.cache is not None:
            cached = CachedAnswer(text, answer.prompt_tokens, answer.completion_tokens, answer.cost_usd)
            self.cache.put(key, self.model, cached)
        return answer


def _raise_budget(results: list[Any]) -> list[Any]:
    for r in results:
        if isinstance(r, BudgetExceeded):
            raise r
    return results
