"""The in-context demonstrations shown to the oracle: one static, plus a growing dynamic pool.

The dynamic pool grows by one agreement per interaction.  Only a few of them fit
in an oracle prompt, so each request gets a selection (most recent, or most
similar to the prompt by word overlap) cut to a token budget: the oracle's
context must never overflow however long the run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cyclealign.protocols import Demonstration

_WORD = re.compile(r"[a-z0-9']+")


def approx_tokens(text: str) -> int:
    """A provider-independent token estimate (about four characters per token)."""
    return max(1, (len(text) + 3) // 4)


def demo_tokens(demo: Demonstration) -> int:
    return approx_tokens(demo.prompt) + sum(approx_tokens(r) for r in demo.responses) + 8 * len(demo.responses)


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


class DemoPool:
    """Dynamic demonstrations collected so far, and the policy that picks some for a prompt."""

    def __init__(
        self,
        static: Demonstration | None,
        *,
        use_static: bool = True,
        use_dynamic: bool = True,
        max_dynamic: int = 3,
        selection: str = "recent",
        token_budget: int = 1200,
    ) -> None:
        self.static = static
        self.use_static = use_static
        self.use_dynamic = use_dynamic
        self.max_dynamic = max_dynamic
        self.selection = selection
        self.token_budget = token_budget
        self.dynamic: list[Demonstration] = []

    def add(self, demo: Demonstration) -> None:
        self.dynamic.append(demo)

    def extend(self, demos: Iterable[Demonstration]) -> None:
        self.dynamic.extend(demos)

    def __len__(self) -> int:
        return len(self.dynamic)

    def select(self, prompt: str) -> tuple[Demonstration, ...]:
        """Static first (if enabled), then dynamic demos within the count and token budget."""
        chosen: list[Demonstration] = []
        if self.use_static and self.static is not None:
            chosen.append(self.static)
        if not self.use_dynamic or self.max_dynamic == 0 or not self.dynamic:
            return tuple(chosen)
        if self.selection == "similar":
            words = _words(prompt)
            # Most overlapping first; among equals, the most recent first.
            indexed = list(enumerate(self.dynamic))
            indexed.sort(key=lambda item: (-len(words & _words(item[1].prompt)), -item[0]))
            ranked = [d for _, d in indexed]
        else:
            ranked = list(reversed(self.dynamic))
        budget = self.token_budget
        picked: list[Demonstration] = []
        for demo in ranked:
            if len(picked) == self.max_dynamic:
                break
            cost = demo_tokens(demo)
            if cost > budget:
                continue
            picked.append(demo)
            budget -= cost
        return (*chosen, *picked)
