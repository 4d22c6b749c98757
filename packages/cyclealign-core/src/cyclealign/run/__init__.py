"""A run's life: the one lifecycle (``lifecycle.py``) of the cycle and of training, the cycle's
unit of work (``cycle_run.py``), wiring the parts, checkpoints, the stop flag, the summary.

``from cyclealign.run import run, resume`` stays the public entry; the names load lazily
from :mod:`cyclealign.run.entry` so lower layers may import ``cyclealign.infra.store`` cheaply.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RunResult", "resume", "run"]


def __getattr__(name: str) -> Any:
    """Load the entry points on first use (PEP 562), keeping ``import cyclealign.infra.store`` light."""
    if name in __all__:
        from cyclealign.run import entry

        return getattr(entry, name)
    raise AttributeError(f"module 'cyclealign.run' has no attribute {name!r}")
