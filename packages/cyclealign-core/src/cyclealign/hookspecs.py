"""The plugin surface: one entry-point group (``cyclealign``), a few ``register_*`` hooks.

``options=`` (optional) declares the plugin's own settings as a pydantic model or a dataclass:
the framework checks ``oracle.options`` / ``loss.options`` against it and passes the factory
``options=`` an instance of it (see ``cyclealign.plugin_options``).  A factory registered
without it is called as before and reads the raw ``config.options`` mapping.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("cyclealign")
hookimpl = pluggy.HookimplMarker("cyclealign")

Register = Callable[..., None]


@hookspec
def register_oracles(register: Register) -> None:
    """Call ``register(name, factory, description="", *, options=None)``.

    ``factory(OracleConfig[, options=...])`` gives a ChatBackend or an Oracle.
    """


@hookspec
def register_losses(register: Register) -> None:
    """Call ``register(name, factory, description="", *, options=None)``.

    ``factory(LossConfig, num_samples=l[, options=...]) -> RankLoss``.
    """


@hookspec
def register_trackers(register: Register) -> None:
    """Call ``register(name, factory, description="")``; ``run.report_to: [name]`` then reports to it.

    ``factory() -> cyclealign.callbacks.Callback``, made once per run start (first process only).
    """


__all__ = ["Register", "hookimpl", "hookspec", "register_losses", "register_oracles", "register_trackers"]
