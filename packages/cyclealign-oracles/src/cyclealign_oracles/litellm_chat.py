"""A chat backend over ``litellm.acompletion``: any model string litellm knows, and any local server.

It does one thing: send a chat and report the reply, its usage and its cost.
It knows what differs between providers (the strongest structured output each
accepts, weakened at run time when refused; which errors a retry can fix; where
prices come from) and, for ``local`` with no ``api_base``, starts and stops a
managed llama.cpp server.  Retries, cache, budget, parsing and re-asking are the
framework's (``cyclealign.oracle``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price list from the network
os.environ.setdefault("LITELLM_TELEMETRY", "False")

from cyclealign.config import OracleConfig
from cyclealign.errors import OracleSetupError
from cyclealign.oracle import ChatBackend, ChatError, ChatReply, ChatRequest, FormatRejected, Usage
from cyclealign.oracle.secrets import guard_loggers, read_api_key, redact, remember
from cyclealign.plugin_options import validate_options
from cyclealign_oracles.options import LiteLLMOptions
from cyclealign_oracles.providers import (
    DOWNGRADE,
    FormatMode,
    alias_for,
    check_reachable,
    choose_format,
    discover_model,
    fatal_kind,
    local_model_name,
    network_kind,
    rejects_format,
    response_format,
)

log = logging.getLogger("cyclealign.oracle")

_LITELLM_PREFIX = re.compile(r"^litellm\.\w+: (\w+: )?")  # "litellm.AuthenticationError: AuthenticationError: "
_REJECTED_NAMES = ("UnprocessableEntityError",)  # a request the provider will never accept: not retried
_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm", "httpx", "httpcore", "openai")


def _litellm() -> Any:
    try:
        import litellm
    except ImportError:
        raise OracleSetupError('the litellm oracles need litellm: pip install "cyclealign-core[openai]"') from None
    litellm.suppress_debug_info = True
    litellm.telemetry = False
    litellm.set_verbose = False
    guard_loggers(*_LOGGERS)
    return litellm


def retry_after_s(error: BaseException) -> float | None:
    """Seconds the server asked us to wait (``Retry-After`` or ``retry-after-ms``), if the error carries it."""
    for carrier in (getattr(error, "response", None), getattr(error, "litellm_response_headers", None)):
        headers = getattr(carrier, "headers", carrier)
        if headers is None or not hasattr(headers, "get"):
            continue
        try:
            ms = headers.get("retry-after-ms")
            value = headers.get("retry-after") or headers.get("Retry-After")
        except Exception:
            continue
        if ms is not None:
            try:
                return max(0.0, float(ms) / 1000.0)
            except ValueError:
                pass
        if value is None:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    return None


class LiteLLMChat(ChatBackend):
    """``config.name`` picks the alias (``chatgpt``, ``gpt-4``, ``local``, ``litellm``; see
    ``providers.ALIASES``), ``config.model`` overrides its model; ``options`` are this backend's own
    (``config.options`` checked when not given); ``api_key`` overrides the key lookup."""

    def __init__(
        self, config: OracleConfig, *, options: LiteLLMOptions | None = None, api_key: str | None = None
    ) -> None:
        self.config = config
        opts = (
            options if options is not None else validate_options("oracle", config.name, LiteLLMOptions, config.options)
        )
        self.options: LiteLLMOptions = opts
        self.alias = alias_for(config.name)
        self.free = self.alias.local
        self._litellm = _litellm()
        self.server: Any = None  # the ManagedLlamaServer we started, if any
        self.api_base = opts.api_base
        self._api_key = api_key or read_api_key(opts.api_key_file, opts.api_key_env, self.alias.key_env)
        if self.alias.key_required and not self._api_key and opts.api_base is None:
            env = opts.api_key_env or self.alias.key_env
            raise OracleSetupError(
                f"oracle {config.name!r} needs an API key: set the environment variable {env} "
                "(or point oracle.options.api_key_env / oracle.options.api_key_file elsewhere)"
            )
        if self.alias.local:
            self._api_key = self._api_key or "not-needed"  # OpenAI clients insist on some key
        remember(self._api_key)
        self.model = self._resolve_model()
        try:
            if self.alias.local and opts.api_base is None:
                self._start_server()
            self.format_mode: FormatMode = (
                choose_format(self.model, local=self.alias.local, litellm=self._litellm) if opts.json_schema else "none"
            )
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ setup
    def _resolve_model(self) -> str:
        cfg, opts = self.config, self.options
        if not self.alias.local:
            model = cfg.model or self.alias.default_model
            if not model:
                raise OracleSetupError(
                    f"oracle {cfg.name!r} needs oracle.model, a litellm model string like 'anthropic/claude-…'"
                )
            return model
        if cfg.model:
            return local_model_name(cfg.model, self._litellm)
        if opts.api_base is not None:
            return local_model_name(discover_model(opts.api_base), self._litellm)
        if not opts.serve_gguf:
            raise OracleSetupError(
                "oracle 'local' needs oracle.options.api_base, or oracle.options.serve_gguf to serve a GGUF itself"
            )
        from cyclealign_oracles.local_server import resolve_gguf

        return f"openai/{resolve_gguf(opts.serve_gguf).name}"

    def _start_server(self) -> None:
        from cyclealign_oracles.local_server import ManagedLlamaServer, resolve_gguf

        assert self.options.serve_gguf
        self.server = ManagedLlamaServer(resolve_gguf(self.options.serve_gguf), n_ctx=self.options.server_ctx).start()
        self.api_base = self.server.api_base
        self.context_tokens = self.options.server_ctx

    # ------------------------------------------------------------------ the ChatBackend interface
    def price(self, prompt_tokens: int, completion_tokens: int) -> float:
        if self.free:
            return 0.0
        try:
            p, c = self._litellm.cost_per_token(
                model=self.model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
            )
            return float(p) + float(c)
        except Exception:
            return 0.0

    def preflight(self) -> None:
        """Ask the provider once before the run: with the key where we know the address, else a 1-token chat.

        A rejected key, an unknown model or an empty quota stops here, before the run directory
        exists; anything a later attempt may fix (a timeout, a 5xx) is logged and the run starts.
        """
        if self.api_base is not None:
            check_reachable(self.api_base, api_key=self._api_key)
            return
        try:
            self._litellm.completion(
                model=self.model,
                messages=[{"role": "user", "content": "Reply with OK."}],
                api_key=self._api_key,
                max_tokens=1,
                timeout=min(self.config.timeout_s, 20.0),  # a question of seconds, not of a full answer
                num_retries=0,
                max_retries=0,
            )
        except Exception as e:
            error = self._chat_error(e)
            if isinstance(error, ChatError) and error.fatal:
                raise OracleSetupError(
                    f"oracle {self.config.name!r} (model {self.model!r}): {redact(str(error))}"
                ) from None
            log.warning("oracle %s: the preflight call failed (%s); starting anyway", self.model, redact(str(error)))

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def describe(self) -> str:
        return f"litellm(model={self.model!r}, api_base={self.api_base!r})"

    async def complete(self, request: ChatRequest) -> ChatReply:
        params: dict[str, Any] = {"temperature": request.temperature, "max_tokens": request.max_tokens}
        if request.wants_json and (fmt := response_format(self.format_mode, request.schema)) is not None:
            params["response_format"] = fmt
        try:
            response = await self._litellm.acompletion(
                model=self.model,
                messages=list(request.messages),
                api_base=self.api_base,
                api_key=self._api_key,
                timeout=request.timeout_s,
                num_retries=0,
                max_retries=0,
                drop_params=True,
                **params,
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise self._chat_error(e) from None
        return self._reply(response)

    # ------------------------------------------------------------------ helpers
    def _chat_error(self, error: Exception) -> Exception:
        """litellm's exception as the framework's: its kind, retryable or not, or a rejected format (weakened here)."""
        lit = self._litellm
        message = f"{type(error).__name__}: {_LITELLM_PREFIX.sub('', str(error))}"
        if isinstance(error, asyncio.TimeoutError | TimeoutError):
            return error
        if isinstance(error, lit.ContextWindowExceededError):
            return ChatError(message, retryable=False, kind="context_overflow")
        if isinstance(error, lit.BadRequestError) and rejects_format(error) and self.format_mode != "none":
            weaker = DOWNGRADE[self.format_mode]
            rejected, self.format_mode = self.format_mode, weaker
            return FormatRejected(f"{message} (response_format {rejected} rejected; now {weaker})")
        if kind := fatal_kind(error):
            return ChatError(message, kind=kind)  # stops the run: the same call would fail again
        if isinstance(error, lit.BadRequestError) or type(error).__name__ in _REJECTED_NAMES:
            return ChatError(message, retryable=False)
        hint = retry_after_s(error)
        if isinstance(error, lit.Timeout):
            return ChatError(message, retry_after_s=hint, kind="timeout")
        if isinstance(error, lit.RateLimitError):
            return ChatError(message, retry_after_s=hint, kind="rate_limited")
        network = "unreachable" if isinstance(error, lit.APIConnectionError | OSError) else network_kind(error)
        if network is not None:
            return ChatError(message, retry_after_s=hint, kind=network)
        status = getattr(error, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500 and status not in (408, 409, 429):
            return ChatError(message, retryable=False)  # the provider refuses this request as it is
        if hint is not None or isinstance(status, int) or isinstance(error, lit.APIError):
            return ChatError(message, retry_after_s=hint, kind="timeout" if status == 408 else "provider_error")
        return error  # not an API error class: the framework retries it and logs it loudly

    def _reply(self, response: Any) -> ChatReply:
        choices = getattr(response, "choices", None) or []
        choice = choices[0] if choices else None  # no choice at all reads as an empty reply: re-asked, not a crash
        message = getattr(choice, "message", None)
        text = getattr(message, "content", None) or getattr(message, "refusal", None) or ""
        usage = getattr(response, "usage", None)
        cost = 0.0
        if not self.free:
            try:
                cost = float(self._litellm.completion_cost(completion_response=response, model=self.model) or 0.0)
            except Exception:
                cost = 0.0
        return ChatReply(
            text if isinstance(text, str) else str(text),
            Usage(
                1, int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0), cost
            ),
            truncated=getattr(choice, "finish_reason", None) == "length",
        )
