"""A plugin's own options: declared by the plugin, validated here, under ``oracle.options`` / ``loss.options``.

A plugin registers its factory with ``options=`` a pydantic model or a plain
dataclass (the losses' package has no pydantic).  Core checks the section's
``options`` mapping against it before the factory runs, so a wrong key or value
is a ``ConfigError`` naming ``<section>.options.<key>``, and the factory gets an
instance of the plugin's own class.  A plugin that declares nothing gets the raw
mapping, as before.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from cyclealign.errors import ConfigError, PluginError


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    """One declared option, as ``cyclealign plugins --options`` shows it."""

    name: str
    type: str
    default: Any
    required: bool
    description: str


def options_model(schema: type) -> type[BaseModel]:
    """The pydantic model of a declared schema: the model itself, or one built from a dataclass's fields."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise PluginError(f"options={schema!r}: declare a plugin's options as a pydantic model or a dataclass")
    hints = typing.get_type_hints(schema)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(schema):
        description = f.metadata.get("description")
        if f.default is not dataclasses.MISSING:
            fields[f.name] = (hints[f.name], Field(f.default, description=description))
        elif f.default_factory is not dataclasses.MISSING:
            fields[f.name] = (hints[f.name], Field(default_factory=f.default_factory, description=description))
        else:
            fields[f.name] = (hints[f.name], Field(description=description))
    return create_model(schema.__name__, __config__=ConfigDict(extra="forbid"), **fields)


def validate_options(section: str, plugin: str, schema: type | None, raw: Mapping[str, Any]) -> Any:
    """``raw`` as an instance of ``schema`` (the raw mapping when none); errors name ``section.options.key``."""
    if schema is None:
        return dict(raw)
    model = options_model(schema)
    unknown = sorted(set(raw) - set(model.model_fields))
    if unknown:
        known = ", ".join(model.model_fields) or "none"
        raise ConfigError(
            f"{section}.options.{unknown[0]}: not an option of the {section} {plugin!r} (its options: {known}; "
            f"`cyclealign plugins --options {plugin}` lists them)"
        )
    try:
        checked = model.model_validate(dict(raw))
    except ValidationError as e:
        raise ConfigError("; ".join(_message(section, err) for err in e.errors())) from None
    if model is schema:
        return checked
    return schema(**{name: getattr(checked, name) for name in model.model_fields})


def _message(section: str, err: Any) -> str:
    key = ".".join(str(p) for p in err["loc"])
    return f"{section}.options.{key}: {err['msg']} (got {err.get('input')!r})"


def type_name(annotation: Any) -> str:
    """``float``, ``str | None``, ``Literal['all', 'best_worst']``: a type as a user reads it."""
    if isinstance(annotation, type) and typing.get_origin(annotation) is None:
        return annotation.__name__
    return re.sub(r"\b(typing|pathlib)\.", "", str(annotation))


def describe(schema: type | None) -> list[OptionInfo]:
    """Every declared option with its type, default and description (nothing when none are declared)."""
    if schema is None:
        return []
    rows = []
    for name, field in options_model(schema).model_fields.items():
        required = field.is_required()
        default = None if required else field.get_default(call_default_factory=True)
        kind = type_name(field.annotation)
        rows.append(OptionInfo(name, kind, default, required, field.description or ""))
    return rows


__all__ = ["OptionInfo", "describe", "options_model", "validate_options"]
