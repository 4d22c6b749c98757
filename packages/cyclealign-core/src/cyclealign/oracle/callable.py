"""A plain Python function as the oracle: ``fn(prompt, answers) -> ranking`` (notebooks, tests, reward models).

The function sees the prompt and the answers in the order the engine shows them
and returns the order best first, as indices into ``answers``; it may also
return ``(order, better_answer)`` to play the part of the oracle's own response.
It costs nothing and calls nothing over the network, so it has no cache,
budget or retries: it is an :class:`~cyclealign.protocols.Oracle` of its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from cyclealign.errors import DataError
from cyclealign.protocols import OracleRequest, OracleVerdict
from cyclealign.usage import OracleStats

RankFn = Callable[[str, list[str]], Any]


def callable_name(fn: Any) -> str:
    """A readable name for a function or callable object (recorded as ``oracle.name``)."""
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__)


class CallableOracle:
    """Ranks with ``fn``; a result that is not a permutation of the answers is a ``DataError`` naming it."""

    def __init__(self, fn: RankFn, name: str | None = None) -> None:
        if not callable(fn):
            raise DataError(f"oracle: expected a function (prompt, answers) -> ranking, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or callable_name(fn)
        self.stats = OracleStats()

    def rank_many(self, requests: Sequence[OracleRequest]) -> list[OracleVerdict]:
        return [self.rank(r) for r in requests]

    def rank(self, request: OracleRequest) -> OracleVerdict:
        answers = list(request.responses)
        returned = self.fn(request.prompt, answers)
        order, response = self._split(returned, len(answers))
        self.stats.calls += 1
        raw = json.dumps({"desired rank": list(order), "response": response})
        return OracleVerdict(order=order, response=response, raw=raw)

    def _split(self, returned: Any, n: int) -> tuple[tuple[int, ...], str | None]:
        """(order, response) from what the function returned: an order, or an order and a better answer."""
        response = None
        if isinstance(returned, tuple) and len(returned) == 2 and (returned[1] is None or isinstance(returned[1], str)):
            returned, response = returned
        try:
            order = tuple(int(i) for i in returned)
        except (TypeError, ValueError):
            order = ()
        if sorted(order) != list(range(n)):
            raise DataError(
                f"oracle {self.name!r} returned {returned!r} for {n} answers; expected a permutation of "
                f"0..{n - 1} (indices into answers, best first), optionally with a better answer: (order, text)"
            )
        return order, response

    def preflight(self) -> None:
        """Nothing to reach."""

    def close(self) -> None:
        """Nothing to stop."""


__all__ = ["CallableOracle", "RankFn", "callable_name"]
