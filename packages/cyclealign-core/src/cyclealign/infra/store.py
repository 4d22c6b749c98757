"""The run directory: everything a run produces, written atomically.

Layout::

    run.json            identity and status (running / completed / interrupted / budget)
    config.yaml         the resolved configuration (never secrets)
    interactions.jsonl  one record per interaction (the cycle)
    demos.jsonl         the dynamic demonstrations, in the order they were found (the cycle)
    steps.jsonl         one record per optimizer step (``cyclealign train``, ``aligner train``)
    summary.json        the final numbers
    adapter/            the trained weights (peft ``save_pretrained`` format)
    trackers.json       each experiment tracker's run id and last step (``run.report_to``)
    tensorboard/ mlruns/ wandb/   what those trackers write locally, unless told elsewhere

Every file is replaced by write-to-temp + fsync + rename, so a crash at any
moment leaves either the old or the new version, never half of one.  Temporary
names start with ``.cyclealign-tmp-``; cleaning up and ``run.overwrite`` touch
only those and the names above (:data:`OWNED`), never a file the project did
not write, and ``run.overwrite`` refuses a directory that holds no run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from cyclealign import jsonl
from cyclealign.errors import DataError, RunDirError
from cyclealign.protocols import Demonstration

TEMP_PREFIX = ".cyclealign-tmp-"  # every temporary name the project makes; cleanup touches no other
MARKER = "cyclealign"  # run.json's ``written_by``: a directory with it holds a run this project made
_FILES = ("run.json", "config.yaml", "interactions.jsonl", "demos.jsonl", "steps.jsonl", "summary.json")
_MORE = ("oracle_calls.jsonl", "adapter", "checkpoint", "checkpoint.prev", "corrector", "eval", "report")
_TRACKERS = ("trackers.json", "tensorboard", "mlruns", "wandb")  # what run.report_to's trackers keep here
# what a run writes into its directory (the oracle cache, ``oracle_cache.sqlite*``, besides)
OWNED = frozenset(_FILES + _MORE + _TRACKERS)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def atomic_write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def swap_in(tmp: Path, target: Path, *, keep: Path | None = None) -> None:
    """Rename the complete directory ``tmp`` to ``target``; the replaced one is deleted, or becomes ``keep``.

    With ``keep`` the generation before it is dropped, so a damaged new
    ``target`` still has an intact predecessor.
    """
    old = target.with_name(f"{TEMP_PREFIX}{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if keep is not None and keep.exists() and target.exists():
        os.replace(keep, old)  # from here until the swap below, ``target`` alone is complete
    if target.exists():
        os.replace(target, keep if keep is not None else old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)
    _fsync_dir(target.parent)


def atomic_replace_dir(target: Path, fill: Any, *, keep: Path | None = None) -> None:
    """Build a directory beside ``target`` with ``fill(tmp_dir)``, then swap it in (see :func:`swap_in`)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{target.name}.", dir=target.parent))
    try:
        fill(tmp)
        swap_in(tmp, target, keep=keep)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """A run file's rows ([] when it does not exist yet); a damaged line is a ``RunDirError`` naming it."""
    if not path.exists():
        return []
    try:
        return jsonl.read_jsonl(path)
    except DataError as e:
        raise RunDirError(str(e)) from None


JOURNALS = ("interactions", "demos", "steps")  # the record files a run may keep, as ``<name>.jsonl``


class RunDir:
    """One run's directory, with its records kept in memory and flushed atomically.

    ``journals`` names the record files this run keeps (the cycle: interactions and
    demonstrations; training: steps); a ``listener`` (the run's callbacks) sees each
    record as it is added, so what it shows is what the files will hold.
    """

    def __init__(
        self, path: Path, *, writer: bool = True, world_size: int = 1, journals: tuple[str, ...] = JOURNALS[:2]
    ) -> None:
        """``writer=False``: a data-parallel process other than the first keeps the journal in memory only."""
        self.path = Path(path)
        self.writer = writer
        self.world_size = world_size
        self.journals = journals
        self.interactions: list[dict[str, Any]] = []
        self.demos: list[Demonstration] = []
        self.steps: list[dict[str, Any]] = []
        self.listener: Any = None  # a ``Callback`` (rank 0): told of each interaction and step record
        self.meta: dict[str, Any] = {}  # what run.json keeps besides the status (see :meth:`set_status`)
        self._started = time.monotonic()

    # paths
    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def cache_path(self) -> Path:
        return self.path / "oracle_cache.sqlite"

    def _meta(self) -> dict[str, Any] | None:
        """run.json as a dict when this project wrote it (``written_by``, or the older ``format`` + ``status``)."""
        try:
            meta = json.loads((self.path / "run.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict):
            return None
        return meta if meta.get("written_by") == MARKER or {"format", "status"} <= meta.keys() else None

    def _reusable(self) -> bool:
        """A run that failed before its first interaction holds nothing worth keeping."""
        meta = self._meta() or {}
        return meta.get("status") == "failed" and not (self.path / "interactions.jsonl").exists()

    def _owned(self, name: str) -> bool:
        return name in OWNED or name.startswith((TEMP_PREFIX, self.cache_path.name))

    def check_free(self, *, overwrite: bool) -> None:
        """Refuse, before any work, to mix two different runs in one place, or to touch a directory that holds none."""
        if not self.writer or not self.path.exists():
            return
        if not self.path.is_dir():
            raise RunDirError(f"run.dir: {self.path} is a file, not a directory")
        holds_run = self._meta() is not None
        ours = self._owned if holds_run else lambda name: name.startswith((TEMP_PREFIX, self.cache_path.name))
        others = sorted(c.name + "/" * c.is_dir() for c in self.path.iterdir() if not ours(c.name))
        if not holds_run and others:
            shown = ", ".join(others[:5]) + (f", … ({len(others)} entries)" if len(others) > 5 else "")
            raise RunDirError(
                f"run.dir: {self.path} is not empty and holds no CycleAlign run ({shown}); choose another "
                "`run.dir` (`run.overwrite` replaces only a run's own files, never a directory like this one)"
            )
        if overwrite or not holds_run or self._reusable():
            return
        raise RunDirError(
            f"run.dir: {self.path} already holds a run; choose another `run.dir`, "
            f"set `run.overwrite=true` to replace it, or resume it with `--resume {self.path}`"
        )

    def prepare(self, config: dict[str, Any], *, overwrite: bool) -> None:
        """Create the directory (after :meth:`check_free`); replace only the project's own names in it.

        The oracle cache stays (it may already be open; its answers stay valid); files
        the project did not write stay too.
        """
        if not self.writer:
            return
        self.check_free(overwrite=overwrite)
        if self.path.exists():
            for child in self.path.iterdir():
                if not self._owned(child.name) or child.name.startswith(self.cache_path.name):
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        self.meta.setdefault("created", _now())
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        self.set_status("running")

    def require_existing(self) -> None:
        """A run to resume, made by as many processes as this one has."""
        if not (self.path / "run.json").is_file() or not (self.path / "config.yaml").is_file():
            raise RunDirError(f"{self.path} holds no run to resume (run.json or config.yaml is missing)")
        try:
            meta = json.loads((self.path / "run.json").read_text())
            made_by = int(meta.get("world_size", 1))
        except (OSError, ValueError, AttributeError) as e:
            raise RunDirError(f"{self.path / 'run.json'}: unreadable ({e})") from None
        if made_by != self.world_size:
            raise RunDirError(
                f"{self.path} was run by {made_by} process(es) and this is {self.world_size}: resume it with "
                f"world size {made_by} (e.g. deepspeed --num_gpus {made_by} --module cyclealign run --resume "
                f"{self.path}), or the data shards and steps would not match"
            )
        self.meta = {k: v for k, v in meta.items() if k not in ("format", "status", "world_size", "written_by")}
        if self.writer:
            self.clean_temp()

    def clean_temp(self) -> None:
        """Remove what writes killed half-way left behind (their targets are intact by construction).

        Only the project's temporary names: ``.cyclealign-tmp-*``, and the older
        ``.<own name>.*`` ones; any other hidden entry (a user's ``.git/``) stays.
        """
        legacy = tuple(f".{name}." for name in OWNED)
        for leftover in self.path.glob(".*"):
            if not leftover.name.startswith((TEMP_PREFIX, *legacy)):
                continue
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    def set_status(self, status: str, **extra: Any) -> None:
        """Write run.json: the status, and what the run keeps there (:attr:`meta`: resumes, changes, fallbacks)."""
        if self.writer:
            self.meta.update(extra)
            record = {"format": 1, "written_by": MARKER, "status": status, "world_size": self.world_size}
            atomic_write_json(self.path / "run.json", {**record, **self.meta})

    def start_process(self) -> None:
        """Open this process's entry in run.json's ``processes`` (one per start or ``--resume`` of the run)."""
        self._started = time.monotonic()
        self.meta.setdefault("processes", []).append({"started": _now(), "wall_s": 0.0})

    def update_process(self, **fields: Any) -> None:
        """This process's wall time so far and ``fields`` (e.g. its oracle counters), written with the status."""
        if self.meta.get("processes"):
            wall = round(time.monotonic() - self._started, 2)
            self.meta["processes"][-1].update(wall_s=wall, **fields)

    @property
    def earlier_processes(self) -> list[dict[str, Any]]:
        """The entries of the processes before this one (what they did, up to their last checkpoint)."""
        return list(self.meta.get("processes", [])[:-1])

    def note(self, key: str, entry: dict[str, Any]) -> None:
        """Append ``entry`` (stamped with the time) to run.json's list ``key`` (e.g. a fallback, a change)."""
        self.meta.setdefault(key, []).append({"time": _now(), **entry})

    def add_interaction(self, record: dict[str, Any]) -> None:
        self.interactions.append(record)
        if self.listener is not None:
            self.listener.on_interaction(record)

    def add_demo(self, demo: Demonstration) -> None:
        self.demos.append(demo)

    def add_step(self, record: dict[str, Any]) -> None:
        """One optimizer step's record: journalled when the run keeps ``steps``, always shown to the listener."""
        if "steps" in self.journals:
            self.steps.append(record)
        if self.listener is not None:
            self.listener.on_step(record)

    def reset_journals(self) -> None:
        """A fresh start: no records yet."""
        self.interactions, self.demos, self.steps = [], [], []

    def flush(self) -> None:
        """Write the kept records so far (called at every checkpoint and at the end)."""
        if not self.writer:
            return
        rows = {"interactions": self.interactions, "demos": [asdict(d) for d in self.demos], "steps": self.steps}
        for name in self.journals:
            atomic_write_jsonl(self.path / f"{name}.jsonl", rows[name])

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.writer:
            atomic_write_json(self.path / "summary.json", summary)


def load_demos(path: Path) -> list[Demonstration]:
    """Demonstrations from a ``demos.jsonl`` file (e.g. to seed another run or an evaluation)."""
    demos = []
    for n, row in enumerate(read_jsonl(path), 1):
        try:
            demos.append(
                Demonstration(
                    prompt=str(row["prompt"]),
                    responses=tuple(row["responses"]),
                    order=tuple(int(i) for i in row["order"]),
                    source=row.get("source", "dynamic"),
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise RunDirError(f"{path}:{n}: not a demonstration ({e})") from None
    return demos
