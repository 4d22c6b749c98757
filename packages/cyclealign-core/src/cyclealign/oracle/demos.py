"""The in-context demonstrations shown to the oracle: one static, plus the dynamic ones the run found.

The dynamic demonstrations live in the run directory's journal (``demos.jsonl``);
the pool reads them from there and decides which to show for a prompt (most
recent, or most similar by word overlap), cut to a count and a token budget.
:func:`fit_demonstrations` is the one trimming pass: the pool uses it for its
budget, and the oracle for the room its context leaves, so the oracle's context
never overflows however long the run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from cyclealign.oracle.prompts import demo_tokens
from cyclealign.protocols import Demonstration

_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def fit_demonstrations(
    demos: Sequence[Demonstration],
    *,
    room: int | None = None,
    dynamic_budget: int | None = None,
    max_dynamic: int | None = None,
) -> tuple[Demonstration, ...]:
    """Keep demonstrations in the given (priority) order while they fit.

    Every kept one counts against ``room``; dynamic ones also against
    ``dynamic_budget`` and ``max_dynamic``.  One that does not fit is skipped and
    the next, perhaps shorter, is tried.  ``None`` means no limit.
    """
    room_left = float("inf") if room is None else room
    budget_left = float("inf") if dynamic_budget is None else dynamic_budget
    kept: list[Demonstration] = []
    n_dynamic = 0
    for demo in demos:
        cost = demo_tokens(demo)
        dynamic = demo.source != "static"
        if dynamic and max_dynamic is not None and n_dynamic >= max_dynamic:
            continue
        if cost > room_left or (dynamic and cost > budget_left):
            continue
        kept.append(demo)
        room_left -= cost
        if dynamic:
            budget_left -= cost
            n_dynamic += 1
    return tuple(kept)


class DemoJournal(Protocol):
    """Where a run's dynamic demonstrations are kept, oldest first (the run directory)."""

    demos: list[Demonstration]

    def add_demo(self, demo: Demonstration) -> None: ...


class _Memory:
    """A journal in memory, for pools outside a run (evaluation, tests)."""

    def __init__(self) -> None:
        self.demos: list[Demonstration] = []

    def add_demo(self, demo: Demonstration) -> None:
        self.demos.append(demo)


class DemoPool:
    """Chooses, per prompt, the static and dynamic demonstrations to show.

    It holds no demonstrations of its own: the dynamic ones live in ``journal``
    (a run's :class:`~cyclealign.infra.store.RunDir`; in memory when none is given).
    """

    def __init__(
        self,
        static: Demonstration | None,
        *,
        use_static: bool = True,
        use_dynamic: bool = True,
        max_dynamic: int | None = 3,
        selection: str = "recent",
        token_budget: int = 1200,
        journal: DemoJournal | None = None,
    ) -> None:
        self.static = static
        self.use_static = use_static
        self.use_dynamic = use_dynamic
        self.max_dynamic = max_dynamic
        self.selection = selection
        self.token_budget = token_budget
        self.journal = journal if journal is not None else _Memory()

    @property
    def dynamic(self) -> Sequence[Demonstration]:
        return self.journal.demos

    def add(self, demo: Demonstration) -> None:
        self.journal.add_demo(demo)

    def extend(self, demos: Sequence[Demonstration]) -> None:
        for demo in demos:
            self.add(demo)

    def __len__(self) -> int:
        return len(self.dynamic)

    def select(self, prompt: str) -> tuple[Demonstration, ...]:
        """Static first (if enabled), then dynamic demos by the selection policy, within count and budget."""
        chosen = [self.static] if self.use_static and self.static is not None else []
        dynamic = list(self.dynamic) if self.use_dynamic and self.max_dynamic != 0 else []
        if self.selection == "similar":
            words = _words(prompt)
            # Most overlapping first; among equals, the most recent first.
            indexed = sorted(enumerate(dynamic), key=lambda item: (-len(words & _words(item[1].prompt)), -item[0]))
            dynamic = [d for _, d in indexed]
        else:
            dynamic.reverse()
        return fit_demonstrations([*chosen, *dynamic], dynamic_budget=self.token_budget, max_dynamic=self.max_dynamic)
