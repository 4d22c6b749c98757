"""The one JSONL reader: ``.jsonl`` or ``.jsonl.gz``, rows with their 1-based line numbers.

A line that is not JSON, or a row its caller cannot use (``reject``), raises
``DataError`` naming ``file:line``; in lenient mode it is skipped and counted in
``skipped`` instead, so leniency never hides how much was lost.  Blank lines are
ignored.  A file that cannot be read at all (missing, truncated gzip, not UTF-8)
is a ``DataError`` naming the file.
"""

from __future__ import annotations

import gzip
import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cyclealign.errors import DataError

T = TypeVar("T")


class JsonlReader:
    """``for line, row in JsonlReader(path): ...``; ``reader.reject(line, why)`` for rows the caller cannot use.

    ``hint`` is appended to every ``file:line`` error (e.g. which setting makes loading lenient).
    """

    def __init__(self, path: str | Path, *, lenient: bool = False, hint: str = "") -> None:
        self.path = Path(path)
        self.lenient = lenient
        self.hint = hint
        self.skipped = 0

    def reject(self, line: int, reason: str) -> None:
        """Row ``line`` is unusable: raise ``DataError`` naming ``file:line``, or count it when lenient."""
        if self.lenient:
            self.skipped += 1
            return
        raise DataError(f"{self.path}:{line}: {reason}{f' ({self.hint})' if self.hint else ''}")

    def parse(self, parse_row: Callable[[int, Any], T], section: str, what: str) -> list[T]:
        """Every row through ``parse_row(line, row)``, whose ``ValueError`` rejects the row (see ``reject``).

        Rows skipped in lenient mode are counted in a warning naming ``<section>.lenient``;
        a file that yields nothing is a ``DataError`` naming ``<section>.source``.
        """
        out: list[T] = []
        for n, row in self:
            try:
                out.append(parse_row(n, row))
            except ValueError as e:
                self.reject(n, str(e))
        if self.skipped:
            warnings.warn(f"{self.path}: skipped {self.skipped} malformed rows ({section}.lenient)", stacklevel=3)
        if not out:
            raise DataError(f"{section}.source: {self.path} holds no {what}")
        return out

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        opener: Any = gzip.open if self.path.suffix == ".gz" else open
        try:
            with opener(self.path, "rt", encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        self.reject(n, f"not valid JSON ({e.msg} at column {e.colno})")
                        continue
                    yield n, row
        except UnicodeDecodeError as e:
            raise DataError(self._where_not_utf8(e)) from None
        except (OSError, EOFError) as e:
            raise DataError(f"{self.path}: cannot be read ({e})") from None

    def _where_not_utf8(self, error: UnicodeDecodeError) -> str:
        """The line and byte offset where the file stops being UTF-8 (read again, as bytes, to find them)."""
        from cyclealign.user_files import decode_error

        try:
            data = gzip.decompress(self.path.read_bytes()) if self.path.suffix == ".gz" else self.path.read_bytes()
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            return decode_error(self.path, data, e)
        except (OSError, EOFError):
            pass
        return f"{self.path}: cannot be read ({error})"


def read_jsonl(path: str | Path, *, lenient: bool = False) -> list[Any]:
    """Every row of the file, in order (strict unless ``lenient``)."""
    return [row for _, row in JsonlReader(path, lenient=lenient)]


__all__ = ["JsonlReader", "read_jsonl"]
