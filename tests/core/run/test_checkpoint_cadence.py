"""The checkpoint cadence: every ``checkpoint_every`` units, but no more often than ``checkpoint_interval_s``."""

from __future__ import annotations

from dataclasses import asdict
from types import SimpleNamespace

import pytest

from cyclealign.cycle.state import CycleTotals
from cyclealign.run import checkpoint
from cyclealign.run.checkpoint import Checkpointer


@pytest.fixture
def saves(monkeypatch) -> list[int]:
    done: list[int] = []
    monkeypatch.setattr(
        checkpoint, "save_checkpoint", lambda store, trainer, state, lockstep=None: done.append(state.units_done)
    )
    return done


def run_waves(cp: Checkpointer, waves: int, per_wave: int = 2) -> None:
    totals = CycleTotals()
    for _ in range(waves):
        totals.prompts += per_wave
        cp.maybe_save(totals.prompts, asdict(totals))


def make(interval_s: float, total: int = 10) -> Checkpointer:
    store = SimpleNamespace(interactions=[], demos=[])
    return Checkpointer(store, None, fingerprint="f", every=1, total=total, start=0, interval_s=interval_s)


def test_without_an_interval_every_wave_saves(saves) -> None:
    run_waves(make(0.0), 5)
    assert saves == [2, 4, 6, 8, 10]


def test_an_interval_keeps_saves_out_of_the_steady_state_but_the_last_prompt_always_saves(saves) -> None:
    run_waves(make(3600.0), 5)
    assert saves == [10]


def test_a_forced_save_ignores_the_interval(saves) -> None:
    cp = make(3600.0)
    cp.maybe_save(2, asdict(CycleTotals(prompts=2)), force=True)
    assert saves == [2]


def test_the_interval_counts_from_the_last_save(saves, monkeypatch) -> None:
    clock = iter([0.0, 10.0, 20.0, 40.0, 50.0, 70.0])
    monkeypatch.setattr(checkpoint.time, "monotonic", lambda: next(clock))
    cp = make(25.0)  # made at 0; waves end at 10, 20, 40 (saved, done at 50), 70 (only 20 s after: no)
    totals = CycleTotals()
    for _ in range(4):
        totals.prompts += 2
        cp.maybe_save(totals.prompts, asdict(totals))
    assert saves == [6]
