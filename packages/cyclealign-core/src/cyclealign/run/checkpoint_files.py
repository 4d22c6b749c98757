"""A checkpoint's files: the manifest of digests, and which of the two generations a resume can trust.

``checkpoint/`` is the newest generation and ``checkpoint.prev/`` the one before it;
each ends with ``manifest.json`` (every other file's size and sha256), written
last, so a directory with a manifest was complete when it was swapped in.  A
resume checks every file against it: a truncated or altered file makes that
generation unusable, and the resume falls back to the older one (the records
past it are dropped and redone, the oracle cache makes the redone calls free).
A checkpoint of an earlier version has no manifest and is trusted as it is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cyclealign.errors import CheckpointDamaged

CURRENT, PREVIOUS, MANIFEST = "checkpoint", "checkpoint.prev", "manifest.json"
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: Path, covers: int) -> None:
    """Record every file under ``directory`` (size, sha256) and the prompts (or steps) it ``covers``; written last."""
    files = {
        p.relative_to(directory).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in _files(directory)
    }
    manifest = {"format": 1, "covers": covers, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def damaged_file(directory: Path) -> str | None:
    """The first file of ``directory`` that does not match its manifest, with why; None when all do."""
    manifest = directory / MANIFEST
    if not manifest.exists():
        return None if (directory / "state.json").exists() else f"{directory.name}/state.json (missing)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{directory.name}/{MANIFEST} (unreadable: {e})"
    for rel, expected in sorted(files.items()):
        path = directory / rel
        name = f"{directory.name}/{rel}"
        if not path.is_file():
            return f"{name} (missing)"
        size = path.stat().st_size
        if size != expected["bytes"]:
            return f"{name} ({size} bytes, the manifest says {expected['bytes']})"
        if _sha256(path) != expected["sha256"]:
            return f"{name} (its sha256 differs from the manifest's)"
    return None


def _done(directory: Path) -> int | None:
    """The prompts (or steps) a damaged checkpoint says it covers, when its state.json or manifest still reads."""
    for name, key in (("state.json", "units_done"), ("state.json", "prompts_done"), (MANIFEST, "covers")):
        try:
            return int(json.loads((directory / name).read_text())[key])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def choose_checkpoint(run_path: Path, make_state: Callable[..., Any], check: Callable[[Any], None]) -> Any:
    """The state of the newest intact generation (``.directory``, ``.fallback`` set), or None when there is none.

    ``check`` refuses a state (e.g. another config's); a damaged generation is
    skipped with its file named in ``state.fallback``; when every one is damaged,
    :class:`CheckpointDamaged` names them.
    """
    damaged: list[str] = []
    instead_of: int | None = None
    for name in (CURRENT, PREVIOUS):
        directory = run_path / name
        if not directory.exists():
            continue
        bad = damaged_file(directory)
        state = None
        if bad is None:
            try:
                state = make_state(**json.loads((directory / "state.json").read_text()))
            except (OSError, ValueError, TypeError) as e:
                bad = f"{name}/state.json (unreadable: {e})"
        if state is None:
            damaged.append(str(bad))
            instead_of = _done(directory) if instead_of is None and not damaged[:-1] else instead_of
            continue
        check(state)
        state.directory = directory
        state.fallback = None
        if damaged:
            state.fallback = {"damaged": damaged, "resumed_after": state.units_done, "instead_of": instead_of}
        return state
    if damaged:
        raise CheckpointDamaged(
            f"{run_path}: no usable checkpoint ({'; '.join(damaged)}); the run cannot continue from it, "
            "start it again (a new run.dir, or run.overwrite=true)"
        )
    return None
