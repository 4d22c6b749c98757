"""The plugin surface: one entry-point group (``cyclealign``), a few ``register_*`` hooks."""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("cyclealign")
hookimpl = pluggy.HookimplMarker("cyclealign")

Register = Callable[..., None]


@hookspec
def register_oracles(register: Register) -> None:
    """Call ``register(name, factory, description="")``; ``factory(OracleConfig)`` gives a ChatBackend or an Oracle."""


@hookspec
def register_losses(register: Register) -> None:
    """Call ``register(name, factory, description="")``; ``factory(LossConfig, num_samples=l) -> RankLoss``."""


__all__ = ["Register", "hookimpl", "hookspec", "register_losses", "register_oracles"]
