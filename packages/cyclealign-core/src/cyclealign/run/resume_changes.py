"""What ``--resume RUN --set KEY=VALUE`` may change, and the record of each change.

A resumed run must end as the uninterrupted one would, so only settings that
change no answer may differ: how much the oracle may spend and how fast it is
asked (:data:`cyclealign.run.checkpoint.RESUME_KEYS`; they are outside the config
fingerprint).  A change is written into the run's ``config.yaml`` (a later plain
``--resume`` keeps it) and listed in ``run.json`` under ``changes`` with the time.
Any other key is refused by name.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from cyclealign.config import load_config
from cyclealign.errors import ConfigError, RunDirError
from cyclealign.infra.store import atomic_write_json, atomic_write_text
from cyclealign.run.checkpoint import RESUME_KEYS

CHANGEABLE = tuple(f"oracle.{k}" for k in RESUME_KEYS)


def _key(override: str) -> str:
    key, sep, _ = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE")
    return key.strip()


def _get(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part, {}) if isinstance(data, dict) else {}
    return None if data == {} else data


def check_keys(overrides: list[str], allowed: tuple[str, ...], command: str) -> list[str]:
    """The keys of ``overrides``; one outside ``allowed`` is refused, by name."""
    keys = [_key(o) for o in overrides]
    for key in keys:
        if key not in allowed:
            may = f"only {', '.join(allowed)} may change" if allowed else "no setting may change"
            raise ConfigError(
                f"--set {key}: a resumed run keeps its configuration ({command} --resume: {may}); "
                "start a new run to change it"
            )
    return keys


def load_resumed(run_dir: Path, overrides: list[str], schema: Any, *, command: str, allowed: tuple[str, ...]) -> Any:
    """The run's config with ``overrides`` applied; changed values go into config.yaml and run.json."""
    keys = check_keys(overrides, allowed, command)
    config_file = Path(run_dir) / "config.yaml"
    if not config_file.is_file():
        raise RunDirError(f"{run_dir} holds no run to resume (no config.yaml)")
    before = load_config(config_file, [f"run.dir={run_dir}"], schema=schema)
    if not keys:
        return before
    after = load_config(config_file, [f"run.dir={run_dir}", *overrides], schema=schema)
    old, new = before.public_dict(), after.public_dict()
    changes = [(k, _get(old, k), _get(new, k)) for k in dict.fromkeys(keys) if _get(old, k) != _get(new, k)]
    if changes and os.environ.get("RANK", "0") == "0":  # data-parallel processes: the first one writes
        _record(Path(run_dir), changes)
    return after


def _record(run_dir: Path, changes: list[tuple[str, Any, Any]]) -> None:
    """Write the new values into config.yaml and list them in run.json (key, old, new, time)."""
    raw = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    for key, _, value in changes:
        section, _, name = key.partition(".")
        raw.setdefault(section, {})[name] = value
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(raw, sort_keys=False))
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"{run_dir / 'run.json'}: unreadable ({e})") from None
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    meta.setdefault("changes", []).extend({"time": stamp, "key": k, "old": a, "new": b} for k, a, b in changes)
    atomic_write_json(run_dir / "run.json", meta)
