"""What every tracker shares: step numbering that survives a resume, the scalars, the public parameters.

A tracker sees each record once per start of the run.  After a crash the run
resumes from its last checkpoint and redoes the records after it (exactly, so
they equal what was logged before the crash); the tracker remembers the last
step it logged in ``trackers.json`` (in the run directory, written atomically)
and skips what it already sent, so the tracker's series stays continuous with
no step twice.  The same file keeps the tracker's own run id, so the resumed
start writes into the same tracker run.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import Any

from cyclealign.callbacks import Callback, RunInfo
from cyclealign.config import SECRET_OPTION
from cyclealign.errors import SetupError
from cyclealign.infra.store import atomic_write_json, read_jsonl

STATE_FILE = "trackers.json"
SERIES = ("interaction", "step")  # one step axis per kind of record
_ORACLE_KEYS = ("prompt_tokens", "completion_tokens", "cost_usd", "latency_s", "attempts", "calls")


class TrackerUnavailable(SetupError):
    """A built-in tracker's package is not installed."""


def require(module: str, extra: str, name: str) -> Any:
    """Import ``module`` for the tracker ``name``, or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise TrackerUnavailable(
            f"run.report_to: the tracker {name!r} needs {module.split('.')[0]!r}, which is not installed ({e}); "
            f'pip install "cyclealign-core[{extra}]"'
        ) from e


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def flat_numbers(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numeric leaves of nested mappings, under ``a/b`` names."""
    out: dict[str, float] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat_numbers(value, f"{prefix}{key}/"))
        elif (number := _number(value)) is not None:
            out[f"{prefix}{key}"] = number
    return out


def interaction_scalars(record: dict[str, Any]) -> dict[str, float]:
    """One interaction's scalars: loss parts, agreement, the oracle's tokens, cost and latency, timings."""
    out = flat_numbers(record.get("loss") or {}, "loss/")
    oracle = record.get("oracle") or {}
    out.update({f"oracle/{k}": v for k in _ORACLE_KEYS if (v := _number(oracle.get(k))) is not None})
    out["oracle/failed"] = float(oracle.get("order") is None)
    timings = {k: v for k, v in (record.get("timings") or {}).items() if k != "ended_at"}  # a clock, not a measure
    out.update(flat_numbers(timings, "time/"))
    out["agreement/full"] = float(bool(record.get("agreed_fully")))
    out["agreement/length"] = float(len(record.get("agreement") or ()))
    if (shown := _number(record.get("demonstrations_shown"))) is not None:
        out["demos_shown"] = shown
    for key in ("lr", "learning_rate"):
        if (lr := _number(record.get(key))) is not None:
            out["lr"] = lr
    return out


def step_scalars(record: dict[str, Any]) -> dict[str, float]:
    """One optimizer step's scalars: every number of its record but its own number."""
    return {k: v for k, v in flat_numbers(record).items() if k != "step"}


def public_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The resolved config as flat ``a.b`` parameters; a key that names a secret is left out, whatever it holds."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if SECRET_OPTION.search(str(key)):
            continue
        if isinstance(value, dict):
            out.update(public_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
    return out


def read_state(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


class Tracker(Callback):
    """A callback that sends scalars to one tracking service; subclasses implement the five ``_`` methods."""

    name = "tracker"

    def __init__(self) -> None:
        self.run_dir: Path | None = None
        self.run_id: str | None = None
        self.logged = dict.fromkeys(SERIES, -1)  # the last step sent, per series
        self.interactions = 0

    # the service: what each tracker implements
    def _open(self, info: RunInfo, run_id: str | None) -> str:
        """Start (``run_id`` None) or continue the tracker's run; return its id."""
        raise NotImplementedError

    def _params(self, params: dict[str, Any]) -> None:
        raise NotImplementedError

    def _log(self, series: str, step: int, scalars: dict[str, float]) -> None:
        raise NotImplementedError

    def _close(self, status: str) -> None:
        raise NotImplementedError

    def _durable_step(self) -> int | None:
        """The last step the service itself holds, when it can tell (a buffered writer may lose some on a kill)."""
        return None

    # the hooks
    def on_run_start(self, info: RunInfo) -> None:
        self.run_dir = Path(info.run_dir)
        mine = read_state(self.run_dir).get(self.name, {}) if info.resumed else {}
        self.logged = {s: int(mine.get(s, -1)) for s in SERIES}
        self.interactions = info.records_done
        self.run_id = self._open(info, mine.get("run_id"))
        durable = self._durable_step() if mine else None
        if durable is not None:  # the service lost the tail of what was sent: send it again
            self.logged = {s: min(v, durable) for s, v in self.logged.items()}
        self._save()
        if not mine:
            self._params(public_params(info.config))
        if mine:
            self._replay(info)

    def _replay(self, info: RunInfo) -> None:
        """Send again the kept records the service lost (they are restored on resume, not redone)."""
        interactions, steps = Path(info.run_dir) / "interactions.jsonl", Path(info.run_dir) / "steps.jsonl"
        if self.logged["interaction"] < info.records_done and interactions.exists():
            for n, record in enumerate(read_jsonl(interactions)[: info.records_done], 1):
                self._emit("interaction", n, interaction_scalars(record))
        if info.kind != "cycle" and steps.exists():
            for record in read_jsonl(steps):
                if int(record.get("step", -1)) <= info.units_done:
                    self._emit("step", int(record["step"]), step_scalars(record))

    def on_interaction(self, record: dict[str, Any]) -> None:
        self.interactions += 1
        self._emit("interaction", self.interactions, interaction_scalars(record))

    def on_step(self, record: dict[str, Any]) -> None:
        self._emit("step", int(record["step"]), step_scalars(record))

    def on_run_end(self, summary: dict[str, Any]) -> None:
        status = summary.get("status") or "completed"
        self._close(str(status))

    def _emit(self, series: str, step: int, scalars: dict[str, float]) -> None:
        if step <= self.logged[series]:
            return  # sent before the crash this start resumed from; the redone record equals it
        self._log(series, step, scalars)
        self.logged[series] = step
        self._save()

    def _save(self) -> None:
        assert self.run_dir is not None
        state = read_state(self.run_dir)
        state[self.name] = {"run_id": self.run_id, **self.logged}
        atomic_write_json(self.run_dir / STATE_FILE, state)


__all__ = [
    "STATE_FILE",
    "Tracker",
    "TrackerUnavailable",
    "interaction_scalars",
    "public_params",
    "read_state",
    "require",
    "step_scalars",
]
