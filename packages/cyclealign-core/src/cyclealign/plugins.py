"""Plugin loading and the registries of oracles, losses and trackers.

First-party oracles and losses live in their own distributions and register
through the ``cyclealign`` entry-point group exactly as a third party would.
Set ``CYCLEALIGN_PLUGINS`` to a comma-separated list of entry-point or
distribution names to load only those (an empty value loads none).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from cyclealign import hookspecs
from cyclealign.config import LossConfig, OracleConfig
from cyclealign.errors import ConfigError, CycleAlignError, PluginError
from cyclealign.oracle import ChatBackend, ChatOracle
from cyclealign.plugin_options import validate_options
from cyclealign.protocols import Oracle, RankLoss
from cyclealign.usage import Usage

GROUP = "cyclealign"
__all__ = [
    "GROUP",
    "INSTALL_HINTS",
    "PluginError",
    "Registry",
    "as_oracle",
    "check_options",
    "create_loss",
    "create_oracle",
    "get_registry",
]


# First-party names whose absence means an extra is missing, and the install that fixes it.
INSTALL_HINTS = {
    ("oracle", "chatgpt"): 'pip install "cyclealign-core[openai]"',
    ("oracle", "gpt-4"): 'pip install "cyclealign-core[openai]"',
    ("oracle", "litellm"): 'pip install "cyclealign-core[openai]"',
    ("oracle", "local"): 'pip install "cyclealign-core[local]"',
    ("oracle", "reward-model"): 'pip install "cyclealign-core[openai]"',
    ("loss", "pro"): "pip install cyclealign-losses",
    ("loss", "rrhf"): "pip install cyclealign-losses",
    ("loss", "dpo"): "pip install cyclealign-losses",
}


@dataclass(frozen=True)
class Registered:
    kind: str
    name: str
    factory: Callable[..., Any]
    distribution: str
    description: str
    options: type | None = None  # the plugin's own options (a pydantic model or a dataclass), if it declares them

    def options_for(self, raw: dict[str, Any]) -> Any:
        """``<kind>.options`` checked against the declared model: an instance of it, or the raw mapping."""
        return validate_options(self.kind, self.name, self.options, raw)

    def build(self, config: Any, raw_options: dict[str, Any], **kwargs: Any) -> Any:
        """Call the factory; ``options=`` the checked options only for a plugin that declared some."""
        if self.options is not None:
            kwargs["options"] = self.options_for(raw_options)
        return self.factory(config, **kwargs)


class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], Registered] = {}

    def add(self, item: Registered) -> None:
        key = (item.kind, item.name)
        if key in self._items:
            other = self._items[key]
            raise PluginError(
                f"{item.kind} {item.name!r} is registered twice: by {other.distribution} and by {item.distribution}"
            )
        self._items[key] = item

    def items(self, kind: str | None = None) -> list[Registered]:
        return sorted(
            (i for i in self._items.values() if kind is None or i.kind == kind), key=lambda i: (i.kind, i.name)
        )

    def get(self, kind: str, name: str, field: str | None = None) -> Registered:
        try:
            return self._items[(kind, name)]
        except KeyError:
            known = ", ".join(i.name for i in self.items(kind)) or "none"
            where = f"{field}: " if field else ""
            hint = INSTALL_HINTS.get((kind, name))
            if hint:
                raise PluginError(f"{where}the {kind} {name!r} is not installed; {hint}") from None
            raise PluginError(
                f"{where}unknown {kind} {name!r}; registered {kind} plugins: {known}. "
                f"Run `cyclealign plugins` to see what is installed."
            ) from None


_pm: pluggy.PluginManager | None = None
_registry: Registry | None = None


_dists: dict[int, str] = {}


def _dist_name(plugin: object) -> str:
    return _dists.get(id(plugin)) or getattr(plugin, "__name__", None) or type(plugin).__name__


def _wanted(ep: metadata.EntryPoint) -> bool:
    allow = os.environ.get("CYCLEALIGN_PLUGINS")
    if allow is None:
        return True
    names = {n.strip() for n in allow.split(",") if n.strip()}
    dist = ep.dist.metadata["Name"] if ep.dist is not None else ""
    return ep.name in names or dist in names


def load_entry_point(ep: metadata.EntryPoint) -> Any:
    """The plugin module an entry point names; one that cannot be imported is the user's install to fix."""
    try:
        return ep.load()
    except ImportError as e:
        dist = ep.dist.metadata["Name"] if ep.dist is not None else ep.value
        raise PluginError(
            f"the plugin {ep.name!r} of {dist} cannot be imported ({e}); reinstall it, or leave it out with "
            "CYCLEALIGN_PLUGINS"
        ) from e


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, loading entry points on first use."""
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager(GROUP)
        pm.add_hookspecs(hookspecs)
        for ep in metadata.entry_points(group=GROUP):
            if _wanted(ep) and pm.get_plugin(ep.name) is None:
                plugin = load_entry_point(ep)
                pm.register(plugin, name=ep.name)
                if ep.dist is not None:
                    _dists[id(plugin)] = ep.dist.metadata["Name"]
        pm.check_pending()
        _pm = pm
    return _pm


def _collect(pm: pluggy.PluginManager) -> Registry:
    registry = Registry()
    hooks = (
        ("oracle", pm.hook.register_oracles),
        ("loss", pm.hook.register_losses),
        ("tracker", pm.hook.register_trackers),
    )
    for kind, hook in hooks:
        for impl in hook.get_hookimpls():
            dist = _dist_name(impl.plugin)

            def register(
                name: str,
                factory: Callable[..., Any],
                description: str = "",
                *,
                options: type | None = None,
                _k=kind,
                _d=dist,
            ) -> None:
                registry.add(Registered(_k, name, factory, _d, description, options))

            impl.function(register=register)
    return registry


def get_registry() -> Registry:
    """Oracles and losses from every loaded plugin (cached; call :func:`reset` after registering)."""
    global _registry
    if _registry is None:
        _registry = _collect(get_plugin_manager())
    return _registry


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register an in-process plugin object (tests, notebooks) and refresh the registry."""
    get_plugin_manager().register(plugin, name=name)
    reset(keep_manager=True)


def unregister_plugin(plugin: object) -> None:
    get_plugin_manager().unregister(plugin)
    reset(keep_manager=True)


def reset(keep_manager: bool = False) -> None:
    """Forget the cached registry (and, unless told otherwise, the loaded entry points)."""
    global _pm, _registry
    _registry = None
    if not keep_manager:
        _pm = None


def create_oracle(config: OracleConfig, *, spent: Usage | None = None) -> Oracle:
    """Build the oracle named by ``config.name``.

    A factory may return a whole ``Oracle``, or a ``ChatBackend``, which gets the
    framework's ranking protocol around it (``ChatOracle``); ``spent`` is what the
    run already paid before a resume, so the budget spans the whole run.
    """
    entry = get_registry().get("oracle", config.name, field="oracle.name")
    made = entry.build(config, config.options)
    if not isinstance(made, (ChatBackend, Oracle)):
        raise PluginError(
            f"oracle.name: the factory of {config.name!r} returned a {type(made).__name__}, "
            "neither a ChatBackend nor an Oracle"
        )
    return as_oracle(made, config, spent=spent)


def as_oracle(given: Any, config: OracleConfig, *, spent: Usage | None = None) -> Oracle:
    """An oracle handed in as an object (the object API): a ``ChatBackend`` gets the ranking protocol
    around it, an ``Oracle`` stays as it is, a plain function ``(prompt, answers) -> ranking`` ranks alone."""
    if isinstance(given, ChatBackend):
        return ChatOracle(given, config, spent=spent)
    if isinstance(given, Oracle):
        return given
    from cyclealign.oracle.callable import CallableOracle

    return CallableOracle(given)


def create_loss(config: LossConfig, *, num_samples: int | None = None) -> RankLoss:
    """Build the loss named by ``config.name`` with ``num_samples`` (l) candidates per prompt.

    The losses' package cannot raise core's errors, so a ``ValueError`` while building one
    (a hyperparameter out of range) is the user's: a ``ConfigError`` naming the key.
    """
    entry = get_registry().get("loss", config.name, field="loss.name")
    kwargs = {} if num_samples is None else {"num_samples": num_samples}
    try:
        return entry.build(config, config.options, **kwargs)
    except CycleAlignError:
        raise
    except ValueError as e:
        message = str(e)
        raise ConfigError(message if "loss." in message else f"loss.options ({config.name}): {message}") from e


def check_options(config: Any, *, skip: tuple[str, ...] = ()) -> None:
    """Check the ``oracle`` and ``loss`` sections' options against their plugins, building nothing.

    ``skip``: the kinds handed in as objects (the object API), which no plugin builds."""
    for kind in ("oracle", "loss"):
        section = getattr(config, kind, None) if kind not in skip else None
        if section is not None:
            get_registry().get(kind, section.name, field=f"{kind}.name").options_for(section.options)
