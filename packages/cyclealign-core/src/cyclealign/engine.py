"""The cycle of the paper's Figure 2, and nothing else.

For each prompt, up to N times:  sample → rank twice (oracle, self) → train →
agree → grow the demonstrations; stop early when both rankings are identical.
All side effects live behind the protocols, so this module is pure control flow.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from cyclealign.demos import DemoPool
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


@dataclass(frozen=True)
class CycleSettings:
    """The switches of one cycle (a view of ``CycleConfig`` the engine needs)."""

    num_samples: int = 3
    max_interactions: int = 5
    early_stop: bool = True
    include_oracle_response: bool = True
    shuffle: bool = True
    min_agreement: int = 2
    prompt_batch: int = 1
    on_oracle_failure: str = "skip"
    seed: int = 0

    @classmethod
    def from_config(cls, cycle: Any, seed: int) -> CycleSettings:
        """The engine's view of a ``CycleConfig`` (fields of the same name), plus the run's seed."""
        names = {f.name for f in fields(cls)} - {"seed"}
        return cls(**{n: getattr(cycle, n) for n in names}, seed=seed)


@dataclass
class PromptState:
    """Where one prompt stands inside a wave of concurrently processed prompts."""

    prompt: Prompt
    interaction: int = 0
    done: bool = False


@dataclass
class CycleTotals:
    prompts: int = 0
    interactions: int = 0
    full_agreements: int = 0
    oracle_failures: int = 0
    trained_steps: int = 0
    loss_sum: float = 0.0
    stopped: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def agreement_rate(self) -> float:
        return self.full_agreements / self.interactions if self.interactions else 0.0

    @property
    def mean_loss(self) -> float | None:
        return self.loss_sum / self.trained_steps if self.trained_steps else None


def interaction_rng(seed: int, prompt_id: str, interaction: int) -> random.Random:
    """A private RNG per interaction, so a resumed run shuffles exactly as an uninterrupted one."""
    return random.Random(f"{seed}:{prompt_id}:{interaction}")


def to_candidate_order(shown: Sequence[int], verdict_order: Sequence[int]) -> tuple[int, ...]:
    """Map an order over the shown positions back to candidate indices (``shown[k]`` is shown as k)."""
    return tuple(shown[k] for k in verdict_order)


class Cycle:
    """Runs CycleAlign over prompts, emitting one record per interaction."""

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
        reseed: Callable[[str], None] = lambda key: None,
        should_stop: Callable[[], bool] = lambda: False,
        totals: CycleTotals | None = None,
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
        self.reseed = reseed
        self.should_stop = should_stop
        self.totals = totals if totals is not None else CycleTotals()  # a resumed run starts from its own

    # ------------------------------------------------------------------ the loop
    def run(
        self,
        prompts: Sequence[Prompt],
        on_prompt_done: Callable[[Prompt], None] = lambda p: None,
        on_wave_done: Callable[[], None] = lambda: None,
    ) -> CycleTotals:
        """Process prompts in waves of ``prompt_batch`` (1 = the paper's batch size).

        ``on_wave_done`` runs when every prompt of a wave has finished: the only
        moments at which the whole state (weights, demos, records) is consistent
        with a prompt boundary, hence the checkpoints.
        """
        for start in range(0, len(prompts), self.s.prompt_batch):
            if self.totals.stopped:
                break
            wave = [PromptState(p) for p in prompts[start : start + self.s.prompt_batch]]
            self.run_wave(wave)
            if not all(state.done for state in wave):
                break  # stopped inside the wave: the partial prompts are redone on resume
            for state in wave:
                self.totals.prompts += 1
                on_prompt_done(state.prompt)
            on_wave_done()
        return self.totals

    def run_wave(self, wave: list[PromptState]) -> None:
        """Interactions for a few prompts in lockstep, so their oracle calls overlap."""
        while not self.totals.stopped:
            active = [s for s in wave if not s.done]
            if not active:
                return
            if self.should_stop():
                self.totals.stopped = "interrupted"
                return
            self.interact(active)

    def interact(self, states: list[PromptState]) -> None:
        """One interaction for each state: sample → oracle rank → self rank → train → agree."""
        # 1. sample l responses per prompt
        sampled: list[list[Candidate]] = []
        shown: list[tuple[int, ...]] = []
        sample_s: list[float] = []
        for st in states:
            self.reseed(f"{self.s.seed}:{st.prompt.id}:{st.interaction}")
            t0 = time.perf_counter()
            cands = self.sampler.sample(st.prompt, self.s.num_samples)
            sample_s.append(time.perf_counter() - t0)
            order = list(range(len(cands)))
            if self.s.shuffle:
                interaction_rng(self.s.seed, st.prompt.id, st.interaction).shuffle(order)
            sampled.append(cands)
            shown.append(tuple(order))

        # 2. the oracle ranks them (concurrently across prompts), guided by the demonstrations
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
            verdicts = self.oracle.rank_many(requests)
        except BudgetExceeded as e:
            self.totals.stopped = f"budget: {e}"
            return
        oracle_s = time.perf_counter() - t0

        if len(verdicts) != len(requests):
            raise RuntimeError(f"oracle {self.oracle.name!r} answered {len(verdicts)} of {len(requests)} requests")
        rows = zip(states, sampled, shown, requests, verdicts, sample_s, strict=True)
        for st, cands, order, req, verdict, s_s in rows:
            self._finish(st, cands, order, verdict, s_s, oracle_s, demos_shown=len(req.demonstrations))

    def _finish(
        self,
        st: PromptState,
        cands: list[Candidate],
        shown: tuple[int, ...],
        verdict: OracleVerdict,
        sample_s: float,
        oracle_s: float,
        demos_shown: int = 0,
    ) -> None:
        oracle_order = to_candidate_order(shown, verdict.order) if verdict.order is not None else None

        # 3. the white-box model ranks them by its own confidence
        own = self.self_ranker.rank(st.prompt, cands)

        # 4. train on the ranking (skipped, and said so, when the oracle gave none)
        loss_parts: dict[str, float] | None = None
        skipped: str | None = None
        t0 = time.perf_counter()
        batch = self._loss_batch(st.prompt, cands, oracle_order, verdict, own)
        if batch is None:
            skipped = f"oracle failed: {verdict.error or 'no ranking'}"
        else:
            loss_parts = self.trainer.step([batch])
            self.totals.trained_steps += 1
            self.totals.loss_sum += float(loss_parts.get("total", 0.0))
        train_s = time.perf_counter() - t0

        # 5. agreement → a new dynamic demonstration
        agreement: tuple[int, ...] = ()
        full = False
        if oracle_order is not None:
            agreement = self.agreement.agree(Ranking(oracle_order), own)
            full = oracle_order == own.order
            if len(agreement) >= self.s.min_agreement:
                demo = self._demonstration(st, cands, agreement)
                self.demos.add(demo)
        else:
            self.totals.oracle_failures += 1

        self.totals.interactions += 1
        self.totals.full_agreements += int(full)
        self.on_record(
            {
                "prompt_id": st.prompt.id,
                "prompt": st.prompt.text,
                "interaction": st.interaction,
                "candidates": [c.text for c in cands],
                "candidate_mean_logps": [c.mean_logp for c in cands],
                "shown_order": list(shown),
                "oracle": {
                    "raw": verdict.raw,
                    "order": list(oracle_order) if oracle_order is not None else None,
                    "shown_order_answer": list(verdict.order) if verdict.order is not None else None,
                    "response": verdict.response,
                    "error": verdict.error,
                    "attempts": verdict.attempts,
                    "cached": verdict.cached,
                    **verdict.usage.as_dict(),
                    "latency_s": verdict.latency_s,
                },
                "demonstrations_shown": demos_shown,
                "self_order": list(own.order),
                "agreement": list(agreement),
                "agreed_fully": full,
                "loss": loss_parts,
                "skipped_reason": skipped,
                "timings": {"sample_s": sample_s, "oracle_s": oracle_s, "train_s": train_s},
            }
        )
        st.interaction += 1
        if (full and self.s.early_stop) or st.interaction >= self.s.max_interactions:
            st.done = True

    # ------------------------------------------------------------------ helpers
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
