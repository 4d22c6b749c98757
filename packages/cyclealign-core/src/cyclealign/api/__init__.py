"""The object API: trainers that take a model, a tokenizer, a dataset and an oracle as Python objects.

``from cyclealign import CycleAlignTrainer`` (or ``OfflineTrainer``, ``AlignerTrainer``);
``inputs.py`` turns what they are given into a config and parts, ``trainers.py``
runs them through the same functions as the command line.  Loaded lazily: the
trainers bring torch and transformers with them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AlignerTrainer", "CycleAlignTrainer", "OfflineTrainer"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cyclealign.api import trainers

        return getattr(trainers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
