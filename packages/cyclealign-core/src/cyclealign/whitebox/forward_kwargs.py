"""How a model's forward takes and returns what the fast paths need: a key/value cache, logits for the last k columns.

Transformers renamed both over its versions (``past_key_values`` → ``cache``,
``num_logits_to_keep`` → ``logits_to_keep``); the sampler and prefix sharing
ask here once per call, not on every decoding step.
"""

from __future__ import annotations

import inspect
from typing import Any


def _forward_params(model: Any) -> Any:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inspect.signature(base.forward).parameters


def accepts(model: Any, name: str) -> bool:
    """Whether this model's forward takes a keyword ``name`` (e.g. ``cache_position``, gone in transformers 5)."""
    return name in _forward_params(model)


def keep_kwarg(model: Any) -> str | None:
    """The name under which this model's forward accepts "project only the last k positions", if any."""
    params = _forward_params(model)
    return next((name for name in ("logits_to_keep", "num_logits_to_keep") if name in params), None)


def keep_last(model: Any, k: int = 1) -> dict[str, int]:
    """Forward kwargs that project only the last ``k`` positions onto the vocabulary (empty if unsupported)."""
    name = keep_kwarg(model)
    return {name: k} if name else {}


def cache_kwarg(model: Any) -> str:
    """The name the forward takes a key/value cache under: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    return "cache" if "cache" in _forward_params(model) else "past_key_values"


def returned_cache(out: Any) -> Any:
    """The key/value cache a forward with ``use_cache=True`` returned, under either name (None if none)."""
    return getattr(out, "cache", None) or getattr(out, "past_key_values", None)
