"""Experiment trackers: callbacks that feed a run's records to TensorBoard, MLflow, W&B, trackio or a plugin.

:func:`trackers_for` is the one place ``run.report_to`` becomes callbacks; every
run lifecycle calls it, so the cycle, ``cyclealign train`` and ``aligner train``
report the same way.  The built-in trackers import their package only when named
(each is an extra of cyclealign-core); a plugin adds its own through the
``register_trackers`` hook of the ``cyclealign`` entry-point group.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from cyclealign.callbacks import Callback
from cyclealign.errors import ConfigError, PluginError

# name -> (module, class); each module imports its package lazily, so naming one never costs the others.
BUILTIN = {
    "tensorboard": ("cyclealign.trackers.tensorboard", "TensorBoardTracker"),
    "mlflow": ("cyclealign.trackers.mlflow", "MLflowTracker"),
    "wandb": ("cyclealign.trackers.wandb", "WandbTracker"),
    "trackio": ("cyclealign.trackers.trackio", "TrackioTracker"),
}


def _plugin_tracker(name: str) -> Callback:
    from cyclealign.plugins import get_registry

    registry = get_registry()
    known = sorted({*BUILTIN, *(i.name for i in registry.items("tracker"))})
    try:
        entry = registry.get("tracker", name)
    except PluginError:
        raise ConfigError(
            f"run.report_to: unknown tracker {name!r}; known trackers: {', '.join(known)} "
            "(a plugin adds more through the register_trackers hook)"
        ) from None
    made = entry.factory()
    if not isinstance(made, Callback):
        raise PluginError(f"run.report_to: the tracker {name!r} of {entry.distribution} did not return a Callback")
    return made


def trackers_for(report_to: Sequence[str]) -> list[Callback]:
    """The tracker callbacks named by ``run.report_to``, in its order (a name twice is one tracker)."""
    made: list[Callback] = []
    for name in dict.fromkeys(report_to):
        if name in BUILTIN:
            module, cls = BUILTIN[name]
            made.append(getattr(importlib.import_module(module), cls)())
        else:
            made.append(_plugin_tracker(name))
    return made


__all__ = ["BUILTIN", "trackers_for"]
