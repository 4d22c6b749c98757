"""What the trainers accept, made uniform: args as a config, objects as ``in-memory:<digest>`` names.

A part handed in as an object is recorded in the run's config under a name that
says what it was (``in-memory:`` and a digest of its weights, or of its rows), so
that ``resume_from`` can tell the same object from a different one and refuse
the latter, and so that a config that needs an object never looks like a file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cyclealign.config import IN_MEMORY, Schema, config_from_dict, load_config
from cyclealign.errors import ConfigError, WhiteboxError


def load_args(args: Any, schema: type[Schema]) -> Schema:
    """``args``: None (the defaults), a config object, a mapping of sections, or a YAML path."""
    if args is None:
        return schema()
    if isinstance(args, schema):
        return args.model_copy(deep=True)
    if isinstance(args, dict):
        return config_from_dict(json.loads(json.dumps(args, default=str)), schema)
    if isinstance(args, (str, Path)):
        return load_config(args, schema=schema)
    raise ConfigError(
        f"args: expected a {schema.__name__}, a dict of sections or a YAML path, got {type(args).__name__}"
    )


def _hash_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_digest(model: Any) -> str:
    """A digest of a model's configuration and every tensor of its state (names, dtypes, shapes, bytes)."""
    import torch

    config = getattr(model, "config", None)
    described = config.to_dict() if hasattr(config, "to_dict") else {}
    described = {k: v for k, v in described.items() if not k.startswith("_") and k != "transformers_version"}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def rows_of(dataset: Any, what: str) -> list[Any]:
    """The rows of a ``datasets.Dataset`` (dicts), a list, or any iterable; a string is a path, not rows."""
    if isinstance(dataset, (str, Path, bytes)) or not isinstance(dataset, Iterable):
        raise ConfigError(f"{what}: expected a datasets.Dataset, a list or a path, got {type(dataset).__name__}")
    return list(dataset)


def rows_digest(rows: Iterable[Any]) -> str:
    """A digest of parsed rows (prompts, examples, triples: dataclasses of plain values)."""
    from dataclasses import asdict, is_dataclass

    return _hash_json([asdict(r) if is_dataclass(r) and not isinstance(r, type) else r for r in rows])


def object_name(obj: Any) -> str:
    """The name an oracle or loss object is recorded under: its ``name``, else its function's or class's name."""
    from cyclealign.oracle.callable import callable_name

    name = getattr(obj, "name", None)
    return f"{IN_MEMORY}{name if isinstance(name, str) else callable_name(obj)}"


def bind(config: Any, key: str, given: str | None, resuming: bool, argument: str) -> None:
    """Record ``given`` (a name, or ``in-memory:…``) at ``section.key``; on resume, check it against the record.

    A resumed run needs the same object again for every part it was started with from Python,
    and refuses a different one: its digest (or name) differs from the one in config.yaml.
    """
    section_name, field = key.split(".")
    section = getattr(config, section_name)
    recorded = getattr(section, field)
    recorded = recorded[0] if isinstance(recorded, list) and len(recorded) == 1 else recorded
    if not resuming:
        if given is not None:
            setattr(section, field, [given] if isinstance(getattr(section, field), list) else given)
        return
    if given is None and isinstance(recorded, str) and recorded.startswith(IN_MEMORY):
        raise ConfigError(f"{argument}=: this run was started with {key}={recorded} from Python; pass it again")
    if given is not None and given != recorded:
        error = WhiteboxError if argument == "model" else ConfigError
        raise error(
            f"{argument}=: not the one this run was started with ({key} is {recorded!r} in config.yaml, the "
            f"{argument} given is {given!r}); resume with the same {argument}, or start a new run"
        )


def model_name(model: Any) -> str | None:
    """``model=``: None, a name or path (as given), or an in-memory model's ``in-memory:<digest>``."""
    if model is None:
        return None
    if isinstance(model, (str, Path)):
        return str(model)
    if not hasattr(model, "state_dict"):
        raise ConfigError(f"model: expected a PreTrainedModel, a PeftModel or a name, got {type(model).__name__}")
    return IN_MEMORY + model_digest(model)


def tokenizer_for(model: Any, tokenizer: Any) -> Any:
    """The tokenizer of an in-memory model: the one given, else the one saved where the model came from."""
    if tokenizer is not None:
        return tokenizer
    source = getattr(model, "name_or_path", "") or ""
    if source and Path(source).is_dir():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(source)
    raise WhiteboxError("tokenizer: a model given in memory needs its tokenizer= as well")


__all__ = [
    "bind",
    "load_args",
    "model_digest",
    "model_name",
    "object_name",
    "rows_digest",
    "rows_of",
    "tokenizer_for",
]
