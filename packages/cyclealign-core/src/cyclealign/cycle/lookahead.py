"""Sampling ahead: a prompt's next samples drawn while the oracle ranks its current ones (``cycle.sample_ahead``).

The paper's cycle is on-policy: a tick samples from the weights that its own
step then updates, so the white-box idles while the oracle answers and the
oracle idles while the white-box samples and trains.  Sampling ahead draws the
samples of a prompt's *next* interaction during the oracle's wait, from the
weights before this tick's step: one optimisation step off-policy, which is why
it is an explicit opt-in.

Exactness is kept where the project promises it.  A sample drawn ahead is the
one the same weights would draw later (each sample has its own random stream,
keyed by its interaction).  The last tick of a wave draws the next wave's first
samples; those are part of the checkpoint written at the wave's end
(``snapshot``/``restore``), so a resumed run uses exactly the draws the
uninterrupted run used.  A single process only: draws made while waiting are
not in step across data-parallel processes.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cyclealign.protocols import Candidate, Prompt, Sampler

T = TypeVar("T")


class Lookahead:
    """Samples drawn ahead, by random key; ``sample`` takes them and draws the rest."""

    def __init__(self, sampler: Sampler, num_samples: int) -> None:
        self.sampler = sampler
        self.n = num_samples
        self._ready: dict[str, list[Candidate]] = {}
        self.ahead_s = 0.0  # the last wait's drawing time (compute hidden behind the oracle)

    def sample(self, prompts: Sequence[Prompt], keys: Sequence[str]) -> list[list[Candidate]]:
        """The samples under ``keys``: drawn ahead where they were, in one ``sample_many`` call for the rest."""
        missing = [i for i, key in enumerate(keys) if key not in self._ready]
        if missing:
            fresh = self.sampler.sample_many([prompts[i] for i in missing], self.n, [keys[i] for i in missing])
            self._ready.update(zip((keys[i] for i in missing), fresh, strict=True))
        out = [self._ready[key] for key in keys]
        self._ready.clear()  # a prompt that stopped early leaves its draws behind: they are never used
        return out

    def while_waiting(self, call: Callable[[], T], prompts: Sequence[Prompt], keys: Sequence[str]) -> T:
        """Run ``call`` (the oracle's calls) on a worker thread; meanwhile draw ``prompts``' samples under ``keys``.

        The worker is a daemon thread: a second Ctrl+C that aborts the run is not
        held up by oracle calls still in flight (the oracle's loop cancels them at exit).
        """
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def wait_for_oracle() -> None:
            try:
                outcome["value"] = call()
            except BaseException as e:  # handed to the caller's thread below
                outcome["error"] = e
            finally:
                done.set()

        threading.Thread(target=wait_for_oracle, name="cyclealign-oracle-wait", daemon=True).start()
        t0 = time.perf_counter()
        try:
            if prompts:
                self._ready.update(zip(keys, self.sampler.sample_many(prompts, self.n, keys), strict=True))
        except Exception:
            done.wait()  # no oracle call is left running behind the sampler's error (Ctrl+C does not wait)
            raise
        self.ahead_s = time.perf_counter() - t0
        done.wait()
        if "error" in outcome:
            raise outcome["error"]  # the oracle's errors (a budget stop) surface here, in the caller
        return outcome["value"]

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """The draws not yet used, as JSON for a checkpoint."""
        return {key: [dataclasses.asdict(c) for c in cands] for key, cands in self._ready.items()}

    def restore(self, saved: dict[str, list[dict[str, Any]]] | None) -> None:
        """Take back a checkpoint's draws (a resumed run continues with what the interrupted one drew)."""
        self._ready = {
            key: [Candidate(c["text"], tuple(c["token_ids"]), c["sum_logp"], c["source"]) for c in cands]
            for key, cands in (saved or {}).items()
        }

    def close(self) -> None:
        self._ready.clear()
