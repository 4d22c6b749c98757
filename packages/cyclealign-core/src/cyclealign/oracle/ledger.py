"""The run's journal of oracle calls sent over HTTP, so the totals span every process, crashed ones included.

One JSON line per event, appended by every process of the run (each line is one
``write`` on an ``O_APPEND`` file, so processes never mix their lines):
``sent`` before each HTTP attempt, ``paid`` with the usage when an answer
arrives, ``end`` when the call is over however it ended.  A ``sent`` with no later
event of the same process is a call that was in flight when that process died:
the API may have billed it, and no client has its answer, so a resume sends it
again; :func:`ledger_totals` counts those that were then paid again (re-paid).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from cyclealign.usage import Usage

NAME = "oracle_calls.jsonl"


def process_id(rank: int = 0) -> str:
    """A name for one process of one start of a run (its ``--resume`` gets another)."""
    return f"{uuid.uuid4().hex[:10]}.{rank}"


class CallLedger:
    """Appends this process's events to the run's ``oracle_calls.jsonl``."""

    def __init__(self, path: Path, process: str) -> None:
        self.path = Path(path)
        self.process = process
        self._lock = threading.Lock()
        self._fd: int | None = None

    def _append(self, row: dict[str, Any]) -> None:
        line = (json.dumps({"p": self.process, **row}, separators=(",", ":")) + "\n").encode()
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    if _cut_short(self.path):
                        os.write(self._fd, b"\n")  # a killed process's last line stays apart from ours
                os.write(self._fd, line)
            except OSError:
                pass  # a journal that cannot be written costs the totals' precision, never the run

    def sent(self, key: str) -> None:
        self._append({"e": "sent", "k": key[:24]})

    def paid(self, key: str, usage: Usage) -> None:
        self._append({"e": "paid", "k": key[:24], **usage.as_dict()})

    def ended(self, key: str) -> None:
        self._append({"e": "end", "k": key[:24]})

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _cut_short(path: Path) -> bool:
    """True when the file's last line has no newline (its writer was killed during the write)."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        text = path.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        if isinstance(row, dict) and "p" in row and "k" in row:
            rows.append(row)
    return rows


def in_flight(path: Path, alive: set[str] = frozenset()) -> list[tuple[str, str]]:
    """``(process, key)`` of calls sent by a process not in ``alive`` that never ended (it died first)."""
    last: dict[tuple[str, str], str] = {}
    for row in _rows(path):
        last[(row["p"], row["k"])] = row["e"]
    return [pk for pk, event in last.items() if event == "sent" and pk[0] not in alive]


def ledger_totals(path: Path, alive: set[str]) -> dict[str, Any]:
    """HTTP attempts, paid calls and their usage over every process; calls in flight at a crash and re-paid."""
    rows = _rows(path)
    paid = [r for r in rows if r["e"] == "paid"]
    usage = sum((Usage.from_dict(r) for r in paid), Usage())
    crashed = in_flight(path, alive)
    paid_by: dict[str, set[str]] = {}
    for r in paid:
        paid_by.setdefault(r["k"], set()).add(r["p"])
    repaid = sum(1 for p, k in crashed if paid_by.get(k, set()) - {p})
    return {
        "http_calls": sum(1 for r in rows if r["e"] == "sent"),
        "paid_calls": usage.calls,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cost_usd": usage.cost_usd,
        "in_flight_at_crash": len(crashed),
        "repaid_calls": repaid,
    }
