"""An on-disk oracle cache (SQLite), so a rerun or a resumed run never pays twice for one call.

The key is a hash of what determines the answer: model, messages and sampling
parameters (``response_format`` included).  The endpoint address and the API key
are deliberately not part of it (a managed local server gets a new port every
run) and the key is never stored.  Every answer received is stored, valid or
not: a re-ask after an invalid answer has a longer conversation, hence its own
key, so a rerun replays the same exchange for free.  Transport failures are not
stored.  Every write is committed at once (WAL), so a crash loses at most the
call in flight; a cache file that is damaged is moved aside and a fresh one
started, never a reason to stop a run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cyclealign.usage import Usage

log = logging.getLogger("cyclealign.oracle.cache")

KEY_VERSION = 2  # bump when what goes into a key changes, so old entries are never misread


def cache_key(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    canonical = json.dumps(
        {"v": KEY_VERSION, "model": model, "messages": messages, "params": params},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    """A stored reply and what it cost when it was first paid for (a replay costs nothing)."""

    text: str
    usage: Usage


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT, text TEXT, "
    "prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL, created REAL)"
)


def _damaged(error: sqlite3.DatabaseError) -> bool:
    """Corruption (move the file aside), as opposed to a locked or unwritable file (report it)."""
    text = str(error).lower()
    return "not a database" in text or "malformed" in text or "quick_check" in text


class OracleCache:
    """``get`` / ``put`` raw answers by key; safe to share between threads and between processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._warned = False
        self.moved_aside: Path | None = None

    # ------------------------------------------------------------------ opening
    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(_SCHEMA)
            status = conn.execute("PRAGMA quick_check").fetchone()[0]
            if status != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {status}")
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    @property
    def _db(self) -> sqlite3.Connection:
        """Opened on first use, so that building an oracle writes nothing to disk."""
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._conn = self._open()
            except sqlite3.DatabaseError as e:
                if not _damaged(e):
                    raise
                self._move_aside(e)
                self._conn = self._open()
        return self._conn

    def _move_aside(self, error: Exception) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                src.rename(Path(f"{target}{suffix}"))
        self.moved_aside = target
        log.warning("oracle cache %s is damaged (%s); moved to %s, starting a fresh one", self.path, error, target)

    def _warn(self, what: str, error: Exception) -> None:
        if not self._warned:
            self._warned = True
            log.warning("oracle cache %s: %s failed (%s); the run goes on without it", self.path, what, error)

    # ------------------------------------------------------------------ use
    def get(self, key: str) -> CachedAnswer | None:
        """The stored answer, or None (also when the cache cannot be read: a miss costs money, not the run)."""
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT text, prompt_tokens, completion_tokens, cost_usd FROM answers WHERE key = ?", (key,)
                ).fetchone()
            except (sqlite3.Error, OSError) as e:
                self._warn("a read", e)
                return None
        if not row:
            return None
        text, prompt_tokens, completion_tokens, cost_usd = row
        return CachedAnswer(text, Usage(1, int(prompt_tokens or 0), int(completion_tokens or 0), float(cost_usd or 0)))

    def put(self, key: str, model: str, answer: CachedAnswer) -> None:
        with self._lock:
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        model,
                        answer.text,
                        answer.usage.prompt_tokens,
                        answer.usage.completion_tokens,
                        answer.usage.cost_usd,
                        time.time(),
                    ),
                )
            except (sqlite3.Error, OSError) as e:
                self._warn("a write", e)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
