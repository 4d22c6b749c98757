"""Files and folders a user names: each problem said once, naming the key and the path.

A path that exists but is the wrong kind is not "missing"; a file that is not
UTF-8 is named with the line and byte where decoding failed; an output folder
that cannot be written is refused before any work.  Every function raises the
caller's error class (``ConfigError``, ``DataError``, …), so the CLI shows one
red line.
"""

from __future__ import annotations

import os
from pathlib import Path

from cyclealign.errors import CycleAlignError, DataError


def require_file(path: str | Path, what: str, error: type[CycleAlignError] = DataError) -> Path:
    """``path`` as a file that exists; ``error`` saying ``what`` is wrong with it otherwise."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise error(f"{what}: {p} is a directory, expected a file")
    if not p.exists():
        raise error(f"{what}: {p} does not exist")
    if not p.is_file():
        raise error(f"{what}: {p} is not a regular file")
    return p


def decode_error(path: Path, data: bytes, e: UnicodeDecodeError) -> str:
    """Where decoding failed: ``file:line: not UTF-8 text (byte 0xff at byte offset 12)``."""
    line = data.count(b"\n", 0, e.start) + 1
    return f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at byte offset {e.start})"


def read_text(path: str | Path, what: str, error: type[CycleAlignError] = DataError) -> str:
    """The file's text (UTF-8, BOM allowed); ``error`` naming ``what``, the file and the line otherwise."""
    p = require_file(path, what, error)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise error(f"{what}: {p} cannot be read ({e.strerror or e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{what}: {decode_error(p, data, e)}") from None


def require_writable_dir(path: str | Path, what: str, error: type[CycleAlignError] = DataError) -> Path:
    """``path`` as a folder that exists or can be made, and can be written; checked before any work.

    Nothing is created here: the parent that would hold a new folder is checked instead.
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise error(f"{what}: {p} is a file, expected a folder")
    existing = p
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise error(f"{what}: {existing} is a file, so {p} cannot be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        shown = "" if existing == p else f" ({existing} is where it would be made)"
        raise error(f"{what}: {existing} is not writable{shown}")
    return p


__all__ = ["decode_error", "read_text", "require_file", "require_writable_dir"]
