"""Experiment trackers: callbacks that feed a run's records to TensorBoard, MLflow, W&B, trackio or a plugin.

:func:`trackers_for` is the one place ``run.report_to`` becomes callbacks; every
run lifecycle calls it, so the cycle, ``cyclealign train`` and ``aligner train``
report the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from cyclealign.callbacks import Callback


def trackers_for(report_to: Sequence[str]) -> list[Callback]:
    """The tracker callbacks named by ``run.report_to`` (none yet: the built-in trackers land next)."""
    if report_to:
        raise NotImplementedError(f"run.report_to={list(report_to)!r}: trackers are not built yet")
    return []


__all__ = ["trackers_for"]
