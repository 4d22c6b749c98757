"""The black-box oracle through litellm: any model string, robust to everything an API does.

Two layers of retry, both bounded: transport (429 honouring ``Retry-After``, 5xx,
timeouts, dropped connections; exponential backoff with jitter) and content (an
answer that is not a valid ranking is re-asked with the error fed back).  When
both are spent the verdict is a recorded failure, never an exception and never
an invented ranking.  Calls for many prompts run concurrently under a semaphore
and an optional requests-per-minute limit.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from cyclealign.config import OracleConfig
from cyclealign.prompts import AnswerError, feedback_message, parse_answer, ranking_schema, render_messages
from cyclealign.protocols import BudgetExceeded, OracleRequest, OracleVerdict
from cyclealign_oracles.cache import CachedAnswer, OracleCache, cache_key


class OracleSetupError(RuntimeError):
    """The oracle cannot be used as configured (missing key, unknown model, …)."""


class TransportError(RuntimeError):
    """A call failed after every transport retry (or with an error that no retry can fix)."""


def _litellm() -> Any:
    try:
        import litellm
    except ImportError:
        raise OracleSetupError('the litellm oracles need litellm: pip install "cyclealign-core[openai]"') from None
    litellm.suppress_debug_info = True
    litellm.telemetry = False
    litellm.drop_params = True
    return litellm


def redact(text: str, secret: str | None) -> str:
    """Remove a secret (and its longer fragments) from text that may reach logs or files."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


@dataclass
class OracleStats:
    """Per-run accounting, shown in the run summary."""

    calls: int = 0
    http_calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    parse_retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    waited_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Answer:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cached: bool = False
    waited_s: float = 0.0
    retries: int = 0
    latency_s: float = 0.0


@dataclass
class _RateLimiter:
    per_minute: float | None
    _next: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def wait(self) -> float:
        if not self.per_minute:
            return 0.0
        async with self._lock:
            now = time.monotonic()
            delay = max(0.0, self._next - now)
            self._next = max(now, self._next) + 60.0 / self.per_minute
        if delay:
            await asyncio.sleep(delay)
        return delay


class LiteLLMOracle:
    """The ``Oracle`` protocol over ``litellm.acompletion``."""

    def __init__(
        self,
        config: OracleConfig,
        *,
        name: str,
        model: str,
        api_key: str | None,
        api_base: str | None = None,
        response_format: dict[str, Any] | None = None,
        free: bool = False,
        on_close: Any = None,
    ) -> None:
        self.config = config
        self.name = name
        self.model = model
        self._api_key = api_key
        self.api_base = api_base
        self.response_format = response_format if config.json_schema else None
        self.free = free
        self._on_close = on_close
        self.stats = OracleStats()
        self.cache = OracleCache(config.cache_path) if config.cache and config.cache_path else None
        self._litellm = _litellm()

    # ------------------------------------------------------------------ public
    def rank_many(self, requests: Sequence[OracleRequest]) -> list[OracleVerdict]:
        """Rank every request, overlapping the calls; order preserved; failures recorded in the verdicts."""
        if not requests:
            return []
        return _run_sync(lambda: self.arank_many(requests))

    async def arank_many(self, requests: Sequence[OracleRequest]) -> list[OracleVerdict]:
        sem = asyncio.Semaphore(self.config.concurrency)
        limiter = _RateLimiter(self.config.requests_per_minute)
        return list(await asyncio.gather(*(self._rank_one(r, sem, limiter) for r in requests)))

    def complete_many(
        self, conversations: Sequence[list[dict[str, str]]], response_format: dict[str, Any] | None = None
    ) -> list[tuple[str | None, str | None]]:
        """Free-form chat calls with the same retries, cache, limits and accounting: ``(text, error)`` each.

        Used by the evaluation commands (the LLM judge) so they inherit everything the oracle survives.
        """
        params: dict[str, Any] = {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens}
        if response_format is not None and self.config.json_schema:
            params["response_format"] = response_format

        async def one(messages, sem, limiter) -> tuple[str | None, str | None]:
            self.stats.calls += 1
            try:
                answer = await self._call(messages, sem, limiter, params)
            except TransportError as e:
                self.stats.failures += 1
                return None, redact(f"transport: {e}", self._api_key)
            return answer.text, None

        async def all_of() -> list[tuple[str | None, str | None]]:
            sem = asyncio.Semaphore(self.config.concurrency)
            limiter = _RateLimiter(self.config.requests_per_minute)
            return list(await asyncio.gather(*(one(m, sem, limiter) for m in conversations)))

        return _run_sync(all_of)

    def preflight(self) -> None:
        """Fail fast on an unreachable endpoint (only where we know the address: local servers)."""
        if self.api_base is not None:
            check_reachable(self.api_base)

    def rank(self, request: OracleRequest) -> OracleVerdict:
        return self.rank_many([request])[0]

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
            self.cache = None
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    # ------------------------------------------------------------------ one request
    async def _rank_one(self, request: OracleRequest, sem: asyncio.Semaphore, limiter: _RateLimiter) -> OracleVerdict:
        self.stats.calls += 1
        n = len(request.responses)
        messages = render_messages(request)
        attempts, waited, cost, p_tok, c_tok, latency = 0, 0.0, 0.0, 0, 0, 0.0
        cached_all = True
        last_text: str | None = None
        error = "no answer"
        for parse_try in range(self.config.max_parse_retries + 1):
            if parse_try:
                self.stats.parse_retries += 1
            try:
                answer = await self._call(messages, sem, limiter, self._params(n))
            except TransportError as e:
                error = f"transport: {e}"
                break
            attempts += 1 + answer.retries
            waited += answer.waited_s
            cost += answer.cost_usd
            p_tok += answer.prompt_tokens
            c_tok += answer.completion_tokens
            latency += answer.latency_s
            cached_all = cached_all and answer.cached
            last_text = answer.text
            try:
                order, response = parse_answer(answer.text, n)
            except AnswerError as e:
                error = f"invalid answer: {e}"
                messages = [*messages, {"role": "assistant", "content": answer.text}, feedback_message(str(e), n)]
                continue
            return OracleVerdict(
                order=order,
                response=response,
                raw=answer.text,
                attempts=attempts,
                cached=cached_all,
                cost_usd=cost,
                prompt_tokens=p_tok,
                completion_tokens=c_tok,
                latency_s=latency,
                waited_s=waited,
            )
        self.stats.failures += 1
        return OracleVerdict(
            order=None,
            response=None,
            raw=last_text,
            error=redact(error, self._api_key),
            attempts=max(attempts, 1),
            cached=cached_all and last_text is not None,
            cost_usd=cost,
            prompt_tokens=p_tok,
            completion_tokens=c_tok,
            latency_s=latency,
            waited_s=waited,
        )

    # ------------------------------------------------------------------ one call, with transport retries
    def _params(self, n: int) -> dict[str, Any]:
        params: dict[str, Any] = {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens}
        if self.response_format is not None:
            fmt = dict(self.response_format)
            if "schema" in fmt:
                fmt["schema"] = ranking_schema(n)  # exact for this request's number of answers
            params["response_format"] = fmt
        return params

    def _check_budget(self, messages: list[dict[str, str]]) -> None:
        budget = self.config.budget_usd
        if budget is None or self.free:
            return
        estimate = self._estimate_cost(messages)
        if self.stats.cost_usd + estimate > budget:
            raise BudgetExceeded(
                f"spent ${self.stats.cost_usd:.4f} of oracle.budget_usd=${budget:.4f}; "
                f"the next call (about ${estimate:.4f}) would exceed it"
            )

    def _estimate_cost(self, messages: list[dict[str, str]]) -> float:
        prompt_tokens = sum(len(m["content"]) for m in messages) // 4 + 8
        try:
            p, c = self._litellm.cost_per_token(
                model=self.model, prompt_tokens=prompt_tokens, completion_tokens=self.config.max_tokens
            )
            return float(p + c)
        except Exception:
            return 0.0

    def _call_cost(self, response: Any) -> float:
        if self.free:
            return 0.0
        try:
            return float(self._litellm.completion_cost(completion_response=response, model=self.model) or 0.0)
        except Exception:
            return 0.0

    async def _call(
        self, messages: list[dict[str, str]], sem: asyncio.Semaphore, limiter: _RateLimiter, params: dict[str, Any]
    ) -> _Answer:
        key = cache_key(self.model, messages, params)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.cache_hits += 1
                return _Answer(hit.text, hit.prompt_tokens, hit.completion_tokens, 0.0, cached=True)
        self._check_budget(messages)
        lit = self._litellm
        retries, waited = 0, 0.0
        while True:
            waited += await limiter.wait()
            retry_after: float | None = None
            async with sem:
                self.stats.http_calls += 1
                t0 = time.monotonic()
                try:
                    response = await lit.acompletion(
                        model=self.model,
                        messages=messages,
                        api_base=self.api_base,
                        api_key=self._api_key,
                        timeout=self.config.timeout_s,
                        num_retries=0,
                        max_retries=0,
                        **params,
                    )
                    latency = time.monotonic() - t0
                except (lit.AuthenticationError, lit.PermissionDeniedError, lit.NotFoundError) as e:
                    raise TransportError(redact(f"{type(e).__name__}: {e}", self._api_key)) from None
                except (lit.BadRequestError, lit.UnprocessableEntityError) as e:
                    if isinstance(e, lit.ContextWindowExceededError):
                        raise TransportError("the prompt exceeds the oracle's context window") from None
                    raise TransportError(redact(f"{type(e).__name__}: {e}", self._api_key)) from None
                except Exception as e:  # 429, 5xx, timeouts, connection errors: retryable
                    error = redact(f"{type(e).__name__}: {e}", self._api_key)
                    retry_after = _retry_after(e)
                else:
                    text = response.choices[0].message.content or ""
                    usage = getattr(response, "usage", None)
                    answer = _Answer(
                        text=text,
                        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                        cost_usd=self._call_cost(response),
                        waited_s=waited,
                        retries=retries,
                        latency_s=latency,
                    )
                    self.stats.prompt_tokens += answer.prompt_tokens
                    self.stats.completion_tokens += answer.completion_tokens
                    self.stats.cost_usd += answer.cost_usd
                    if self.cache is not None:
                        self.cache.put(
                            key,
                            self.model,
                            CachedAnswer(text, answer.prompt_tokens, answer.completion_tokens, answer.cost_usd),
                        )
                    return answer
            if retries >= self.config.max_retries:
                raise TransportError(f"{error} (after {retries + 1} attempts)")
            delay = min(self.config.backoff_max_s, self.config.backoff_base_s * 2**retries)
            delay *= 0.5 + random.random()  # jitter, so concurrent callers do not retry in lockstep
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.config.backoff_max_s))
            retries += 1
            self.stats.retries += 1
            self.stats.waited_s += delay
            waited += delay
            await asyncio.sleep(delay)


def _run_sync(make_coro: Any) -> Any:
    """Run a coroutine to completion from sync code, also when called inside a running loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["out"] = asyncio.run(make_coro())
        except BaseException as e:  # re-raised in the caller's thread
            box["err"] = e

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["out"]


def _retry_after(error: Exception) -> float | None:
    """Seconds from a ``Retry-After`` header carried by a litellm/openai/httpx error, if any."""
    candidates = [getattr(error, "response", None), getattr(error, "litellm_response_headers", None)]
    for c in candidates:
        headers = getattr(c, "headers", c)
        if headers is None:
            continue
        try:
            value = headers.get("retry-after") or headers.get("Retry-After")
        except AttributeError:
            continue
        if value is None:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            from email.utils import parsedate_to_datetime

            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    return None


def read_api_key(config: OracleConfig, default_env: str | None) -> str | None:
    """The API key from ``oracle.api_key_file`` or the environment; never from the config file itself."""
    if config.api_key_file is not None:
        path = Path(config.api_key_file).expanduser()
        if not path.is_file():
            raise OracleSetupError(f"oracle.api_key_file: {path} does not exist")
        key = path.read_text().strip().splitlines()[0].strip() if path.read_text().strip() else ""
        if not key:
            raise OracleSetupError(f"oracle.api_key_file: {path} is empty")
        return key
    env = config.api_key_env or default_env
    return os.environ.get(env) if env else None


def check_reachable(api_base: str, timeout_s: float = 5.0) -> None:
    """One cheap GET before any expensive work, so a wrong ``oracle.api_base`` fails in seconds, clearly."""
    import urllib.error
    import urllib.request

    url = api_base.rstrip("/") + "/models"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return
    except urllib.error.HTTPError:
        return  # it answered: reachable (some servers protect /models)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise OracleSetupError(f"oracle.api_base: {api_base} is unreachable ({reason})") from None
