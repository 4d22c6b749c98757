"""The oracle seam: a chat completion.  A backend plugin implements ``complete`` and nothing else.

Everything around the call belongs to the framework (``cyclealign.oracle.ranker``):
rendering the ranking prompt with demonstrations inside the context, the schema,
strict parsing, re-asking with the error fed back, the answer cache, transport
retries with backoff, the requests-per-minute pacer, budget reservation and usage
accounting.  So a backend written in a few lines gets all of them for free.

A backend tells the framework what went wrong by raising :class:`ChatError`
(``retryable`` or not, with the server's ``Retry-After``, and the ``kind`` of
failure the summary counts it under) or :class:`FormatRejected` (after weakening
its own structured-output mode); any other exception is retried like a transport
error and logged.  ``ChatError(..., fatal=True)`` (or a fatal ``kind``: ``auth``,
``model_not_found``, ``quota``) stops the run: no later call is sent, the run is
marked ``failed`` with the message, and ``--resume`` continues once it is fixed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from cyclealign.errors import FAILURE_KINDS, FATAL_KINDS, CycleAlignError
from cyclealign.usage import Usage


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make.

    ``schema`` is the JSON schema the reply should follow (``None``: free text); a
    backend passes it on in whatever form its provider accepts, or not at all (the
    framework parses prose-wrapped JSON too).
    """

    messages: tuple[dict[str, str], ...]
    temperature: float = 0.0
    max_tokens: int = 256
    timeout_s: float = 60.0
    schema: dict[str, Any] | None = None
    wants_json: bool = False  # JSON is expected even when no schema is given

    def cache_params(self) -> dict[str, Any]:
        """What, besides model and messages, determines the answer (the cache key)."""
        return {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "schema": self.schema,
            "json": self.wants_json,
        }


@dataclass(frozen=True)
class ChatReply:
    """The reply's text and what it cost; ``truncated`` when it stopped at ``max_tokens``."""

    text: str
    usage: Usage = field(default_factory=Usage)
    truncated: bool = False


class ChatError(CycleAlignError):
    """A failed call.  ``retryable=False`` ends the request at once; ``fatal=True`` ends the run.

    ``kind`` names the failure in the summary (one of ``cyclealign.errors.FAILURE_KINDS``:
    ``timeout``, ``unreachable``, ``rate_limited``, ``provider_error``, ``context_overflow``,
    or a fatal one: ``auth``, ``model_not_found``, ``quota``); unset, it is ``provider_error``,
    or ``fatal`` with ``fatal=True``.  A fatal error is never retried.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        retry_after_s: float | None = None,
        kind: str | None = None,
        fatal: bool = False,
    ) -> None:
        super().__init__(message)
        if kind is not None and kind not in FAILURE_KINDS:
            raise ValueError(f"ChatError kind {kind!r} is not one of {', '.join(FAILURE_KINDS)}")
        self.kind = kind or ("fatal" if fatal else "provider_error")
        self.fatal = fatal or self.kind in FATAL_KINDS
        self.retryable = retryable and not self.fatal
        self.retry_after_s = retry_after_s


class FormatRejected(ChatError):
    """The provider refused the structured-output field; the backend has already weakened it: send again."""


class ChatBackend(ABC):
    """Completes chats for one model.  Subclass it and implement :meth:`complete` (sync or ``async``).

    ``model`` identifies the answers for the cache.  Override :meth:`price` so that
    ``oracle.budget_usd`` can be enforced, or set ``free = True`` for a backend that
    never costs anything (budgets then do not apply).
    """

    model: str = "chat"
    free: bool = False
    context_tokens: int | None = None  # a hard context limit the backend knows (a local server's n_ctx)

    @abstractmethod
    def complete(self, request: ChatRequest) -> ChatReply | Awaitable[ChatReply]:
        """Send one chat; raise :class:`ChatError` on failure."""

    def price(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Dollars for a call of this size; 0.0 when unknown."""
        return 0.0

    def preflight(self) -> None:
        """Fail fast (raise ``OracleSetupError``) when the endpoint cannot work, before any expensive work.

        Ask the provider once if it can be done cheaply (a listing, a 1-token chat), so that a
        rejected key or an unknown model stops the run before its directory is created.
        """
        return None

    def close(self) -> None:
        """Release what the backend holds (connections, a server it started)."""
        return None

    def describe(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"
