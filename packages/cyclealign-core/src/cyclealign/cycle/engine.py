"""The cycle of the paper's Figure 2, and nothing else.

For each prompt, up to N times:  sample → rank twice (oracle, self) → train →
agree → grow the demonstrations; stop early when both rankings are identical.
All side effects live behind the protocols, so this module is pure control flow.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from cyclealign.cycle.lookahead import Lookahead
from cyclealign.cycle.state import CycleSettings, CycleTotals, PromptState
from cyclealign.infra.lockstep import Lockstep, Solo
from cyclealign.oracle.demos import DemoPool
from cyclealign.protocols import (
    AgreementStrategy,
    BudgetExceeded,
    Candidate,
    Demonstration,
    LossBatch,
    Oracle,
    OracleRequest,
    OracleVerdict,
    Prompt,
    Ranking,
    Sampler,
    SelfRanker,
    Trainer,
)

RewardFn = Callable[[Sequence[int]], Sequence[float]]
FATAL_STOP = "oracle failed fatally: "  # how totals.stopped begins when a fatal oracle error ended the run


def interaction_rng(seed: int, prompt_id: str, interaction: int) -> random.Random:
    """A private RNG per interaction, so a resumed run shuffles exactly as an uninterrupted one."""
    return random.Random(f"{seed}:{prompt_id}:{interaction}")


def to_candidate_order(shown: Sequence[int], verdict_order: Sequence[int]) -> tuple[int, ...]:
    """Map an order over the shown positions back to candidate indices (``shown[k]`` is shown as k)."""
    return tuple(shown[k] for k in verdict_order)


@dataclass
class _Judged:
    """One interaction after both rankings, before training."""

    state: PromptState
    cands: list[Candidate]
    shown: tuple[int, ...]
    verdict: OracleVerdict
    oracle_order: tuple[int, ...] | None
    own: Ranking
    batch: LossBatch | None
    timings: dict[str, float]
    demos_shown: int


class Cycle:
    """Runs CycleAlign over prompts, emitting one record per interaction.

    A tick is one interaction for every active prompt of a wave: their oracle
    calls overlap, and their ranked candidates make one optimisation step.  With
    a data-parallel ``lockstep`` each process runs its own shard of prompts, and
    at every tick the processes step together and share their records and new
    demonstrations in prompt order, so K processes with ``prompt_batch`` 1 do
    exactly what one process does with ``prompt_batch`` K.
    """

    def __init__(
        self,
        *,
        sampler: Sampler,
        oracle: Oracle,
        self_ranker: SelfRanker,
        agreement: AgreementStrategy,
        trainer: Trainer,
        demos: DemoPool,
        rewards: RewardFn,
        settings: CycleSettings,
        on_record: Callable[[dict[str, Any]], None] = lambda record: None,
        on_step: Callable[[dict[str, Any]], None] = lambda record: None,
        reseed: Callable[[str], None] = lambda key: None,
        should_stop: Callable[[], bool] = lambda: False,
        totals: CycleTotals | None = None,
        lockstep: Lockstep | None = None,
        full_weights: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ) -> None:
        self.sampler = sampler
        self.oracle = oracle
        self.self_ranker = self_ranker
        self.agreement = agreement
        self.trainer = trainer
        self.demos = demos
        self.rewards = rewards
        self.s = settings
        self.on_record = on_record
        self.on_step = on_step  # each optimizer step's number and loss parts (what trackers plot)
        self.reseed = reseed
        self.should_stop = should_stop
        self.totals = totals if totals is not None else CycleTotals()  # a resumed run starts from its own
        self.lockstep = lockstep or Solo()
        self.full_weights = full_weights  # sharded weights (ZeRO-3) are gathered once per tick to sample
        self.lookahead = Lookahead(sampler, settings.num_samples) if settings.sample_ahead else None
        self._upcoming: list[PromptState] = []  # the next wave's prompts (what the last tick of a wave draws ahead)

    # ------------------------------------------------------------------ the loop
    def run(
        self,
        prompts: Sequence[Prompt],
        *,
        positions: Sequence[int] | None = None,
        waves: int | None = None,
        on_prompts_done: Callable[[int], None] = lambda n: None,
        on_wave_done: Callable[[], None] = lambda: None,
    ) -> CycleTotals:
        """Process prompts in waves of ``prompt_batch`` (1 = the paper's batch size).

        ``positions`` are the prompts' places in the run's list (default 0, 1, …;
        a process of a data-parallel run holds a shard).  ``waves`` is how many
        waves every process runs (its own may be fewer: it then only keeps step).
        ``on_wave_done`` runs when every prompt of a wave has finished: the only
        moments at which the whole state (weights, demos, records) is consistent
        with a prompt boundary, hence the checkpoints.
        """
        b = self.s.prompt_batch
        pairs = list(zip(positions if positions is not None else range(len(prompts)), prompts, strict=True))
        n_waves = waves if waves is not None else -(-len(prompts) // b)
        for k in range(n_waves):
            if self.totals.stopped:
                break
            wave = [PromptState(p, position=i) for i, p in pairs[k * b : (k + 1) * b]]
            self._upcoming = [PromptState(p, position=i) for i, p in pairs[(k + 1) * b : (k + 2) * b]]
            self.run_wave(wave)
            if self.lockstep.any(not all(state.done for state in wave)):
                break  # stopped inside the wave: the partial prompts are redone on resume
            done = self.lockstep.total(len(wave))
            self.totals.prompts += done
            self.totals.waves += 1
            on_prompts_done(done)
            on_wave_done()
        if self.lookahead is not None:
            self.lookahead.close()
        return self.totals

    def run_wave(self, wave: list[PromptState]) -> None:
        """Ticks until every prompt of the wave (of every process) is done, or the run stops."""
        while True:
            active = [s for s in wave if not s.done]
            if not self.lockstep.any(bool(active)):
                return
            if self.lockstep.any(self.should_stop() or self.totals.stopped is not None):
                self.totals.stopped = self.totals.stopped or "interrupted"
                return
            self.tick(active)

    def tick(self, states: list[PromptState]) -> None:
        """One interaction for each state: sample → oracle rank → self rank → one training step → agree."""
        judged = self.interact(states)
        batches = [j.batch for j in judged if j.batch is not None]
        t0 = time.perf_counter()
        loss_parts: dict[str, float] | None = None
        if self.lockstep.any(bool(batches)):
            loss_parts = self.trainer.step(batches)
            self.totals.trained_steps += 1
            self.totals.loss_sum += float(loss_parts.get("total", 0.0))
            self.on_step({"step": self.totals.trained_steps, **loss_parts})
        train_s = time.perf_counter() - t0
        records, demos = [], []
        ended_at = time.time()  # the tick's end (epoch s), shared by its records: profiles see ticks
        for j in judged:
            record, demo = self._conclude(j, loss_parts if j.batch is not None else None, train_s)
            record["timings"]["ended_at"] = ended_at
            records.append((j.state.position, record))
            if demo is not None:
                demos.append((j.state.position, demo))
        for demo in self.lockstep.merge(demos):
            self.demos.add(demo)
        for record in self.lockstep.merge(records):
            self.totals.interactions += 1
            self.totals.full_agreements += int(record["agreed_fully"])
            if record["oracle"]["order"] is None:
                self.totals.oracle_failures += 1
                self.totals.count_failure(record["oracle"]["failure"])
            self.on_record(record)

    def interact(self, states: list[PromptState]) -> list[_Judged]:
        """Sample l responses per prompt, have the oracle rank them (concurrently), rank them ourselves."""
        keys = [self._key(st, st.interaction) for st in states]
        self.reseed("|".join(keys))  # the tick's other randomness (dropout in training), resumable
        t0 = time.perf_counter()
        with self.full_weights():
            prompts = [st.prompt for st in states]
            if self.lookahead is not None:
                sampled = self.lookahead.sample(prompts, keys)
            else:
                sampled = self.sampler.sample_many(prompts, self.s.num_samples, keys)
        sample_s = time.perf_counter() - t0  # the wave's, shared by its prompts (as the oracle's wait is)
        shown: list[tuple[int, ...]] = []
        for st, cands in zip(states, sampled, strict=True):
            order = list(range(len(cands)))
            if self.s.shuffle:
                interaction_rng(self.s.seed, st.prompt.id, st.interaction).shuffle(order)
            shown.append(tuple(order))
        requests = [
            OracleRequest(
                prompt=st.prompt.text,
                responses=tuple(cands[i].text for i in order),
                demonstrations=self.demos.select(st.prompt.text),
            )
            for st, cands, order in zip(states, sampled, shown, strict=True)
        ]
        t0 = time.perf_counter()
        try:
            verdicts = self._rank(requests, states)
        except BudgetExceeded as e:
            self.totals.stopped = f"budget: {e}"
            return []
        if fatal := next((v for v in verdicts if v.fatal), None):  # nothing of this tick counts; resume redoes it
            self.totals.stopped = f"{FATAL_STOP}{(fatal.error or fatal.failure or '').removeprefix('transport: ')}"
            return []
        oracle_s = time.perf_counter() - t0
        if len(verdicts) != len(requests):
            raise RuntimeError(f"oracle {self.oracle.name!r} answered {len(verdicts)} of {len(requests)} requests")
        judged = []
        for st, cands, order, req, verdict in zip(states, sampled, shown, requests, verdicts, strict=True):
            oracle_order = to_candidate_order(order, verdict.order) if verdict.order is not None else None
            own = self.self_ranker.rank(st.prompt, cands)
            batch = self._loss_batch(st.prompt, cands, oracle_order, verdict, own)
            timings = {"sample_s": sample_s, "oracle_s": oracle_s}
            if self.lookahead is not None:
                timings["sample_ahead_s"] = self.lookahead.ahead_s  # the next tick's draws, during this wait
            judged.append(
                _Judged(st, cands, order, verdict, oracle_order, own, batch, timings, len(req.demonstrations))
            )
        return judged

    def _conclude(
        self, j: _Judged, loss_parts: dict[str, float] | None, train_s: float
    ) -> tuple[dict[str, Any], Demonstration | None]:
        """The agreement (and a demonstration from it), the interaction's record, the prompt's next state."""
        st, verdict, oracle_order, own = j.state, j.verdict, j.oracle_order, j.own
        agreement: tuple[int, ...] = ()
        full = False
        demo = None
        if oracle_order is not None:
            agreement = self.agreement.agree(Ranking(oracle_order), own)
            full = oracle_order == own.order
            if len(agreement) >= self.s.min_agreement:
                demo = self._demonstration(st, j.cands, agreement)
        record = {
            "prompt_id": st.prompt.id,
            "prompt": st.prompt.text,
            "interaction": st.interaction,
            "candidates": [c.text for c in j.cands],
            "candidate_mean_logps": [c.mean_logp for c in j.cands],
            "candidate_sum_logps": [c.sum_logp for c in j.cands],
            "shown_order": list(j.shown),
            "oracle": {
                "raw": verdict.raw,
                "order": list(oracle_order) if oracle_order is not None else None,
                "shown_order_answer": list(verdict.order) if verdict.order is not None else None,
                "response": verdict.response,
                "error": verdict.error,
                "failure": verdict.failure,
                "attempts": verdict.attempts,
                "cached": verdict.cached,
                **verdict.usage.as_dict(),
                "latency_s": verdict.latency_s,
            },
            "demonstrations_shown": j.demos_shown,
            "self_order": list(own.order),
            "self_rank": getattr(self.self_ranker, "name", type(self.self_ranker).__name__),  # cycle.self_rank
            "agreement": list(agreement),
            "agreed_fully": full,
            "loss": loss_parts,
            "skipped_reason": None if j.batch is not None else f"oracle failed: {verdict.error or 'no ranking'}",
            "timings": {**j.timings, "train_s": train_s},
        }
        st.interaction += 1
        if (full and self.s.early_stop) or st.interaction >= self.s.max_interactions:
            st.done = True
        return record, demo

    # ------------------------------------------------------------------ helpers
    def _key(self, st: PromptState, interaction: int) -> str:
        """The random key of one interaction's samples: the same whichever wave, process or moment draws them."""
        return f"{self.s.seed}:{st.prompt.id}:{interaction}"

    def _rank(self, requests: list[OracleRequest], states: list[PromptState]) -> list[OracleVerdict]:
        """The oracle's verdicts; with ``sample_ahead``, the next interaction's samples are drawn meanwhile."""
        if not requests:
            return []
        if self.lookahead is None:
            return self.oracle.rank_many(requests)
        ahead = [(st, st.interaction + 1) for st in states if st.interaction + 1 < self.s.max_interactions]
        if not ahead:  # the wave ends with this tick: the next wave's first interactions
            ahead = [(st, 0) for st in self._upcoming]
        with self.full_weights():
            return self.lookahead.while_waiting(
                lambda: self.oracle.rank_many(requests),
                [st.prompt for st, _ in ahead],
                [self._key(st, i) for st, i in ahead],
            )

    def _loss_batch(
        self,
        prompt: Prompt,
        cands: list[Candidate],
        oracle_order: tuple[int, ...] | None,
        verdict: OracleVerdict,
        own: Ranking,
    ) -> LossBatch | None:
        """Candidates best first with distinct rewards; the oracle's answer leads when enabled."""
        if oracle_order is None:
            if self.s.on_oracle_failure != "self_rank":
                return None
            ranked = [cands[i] for i in own.order]
        else:
            ranked = [cands[i] for i in oracle_order]
            if self.s.include_oracle_response and verdict.response:
                ranked.insert(0, Candidate(text=verdict.response, source="oracle"))
        rewards = tuple(float(r) for r in self.rewards(tuple(range(len(ranked)))))
        return LossBatch(prompt=prompt, candidates=tuple(ranked), rewards=rewards, sft_index=0)

    def _demonstration(self, st: PromptState, cands: list[Candidate], agreement: tuple[int, ...]) -> Demonstration:
        """The agreed responses, shown in a shuffled order so demos teach no positional habit."""
        texts = [cands[i].text for i in agreement]  # best first
        slots = list(range(len(texts)))
        if self.s.shuffle:
            interaction_rng(self.s.seed + 1, st.prompt.id, st.interaction).shuffle(slots)
        responses = tuple(texts[i] for i in slots)  # slot k shows the agreed item of rank slots[k]
        order = tuple(sorted(range(len(slots)), key=lambda k: slots[k]))
        return Demonstration(prompt=st.prompt.text, responses=responses, order=order, source="dynamic")
