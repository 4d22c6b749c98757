"""The engine's control flow with fakes: fast, and exact about what the cycle does."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from cyclealign.cycle.agreement import LCSAgreement
from cyclealign.cycle.engine import Cycle, CycleSettings
from cyclealign.oracle.demos import DemoPool
from cyclealign.protocols import (
    BudgetExceeded,
    Candidate,
    Demonstration,
    LossBatch,
    OracleRequest,
    OracleVerdict,
    Prompt,
    Ranking,
)

STATIC = Demonstration("static prompt", ("good", "bad"), (0, 1), source="static")


class ScoredSampler:
    """Candidates 'q=<quality>' whose self-confidence is given by ``confidence(quality)``."""

    def __init__(self, qualities: Sequence[int], confidence=lambda q: float(q)) -> None:
        self.qualities = list(qualities)
        self.confidence = confidence
        self.calls = 0

    def sample_many(self, prompts: Sequence[Prompt], n: int, keys: Sequence[str]) -> list[list[Candidate]]:
        self.calls += 1
        qs = self.qualities[:n]
        return [
            [Candidate(text=f"{p.id} q={q}", token_ids=(1, 2), sum_logp=2 * self.confidence(q)) for q in qs]
            for p in prompts
        ]


class QualityOracle:
    """Ranks the shown responses by the quality written inside them (a perfect judge)."""

    name = "quality"

    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.requests: list[OracleRequest] = []
        self.batches: list[int] = []
        self.fail_on = fail_on or set()

    def rank_many(self, requests: Sequence[OracleRequest]) -> list[OracleVerdict]:
        self.batches.append(len(requests))
        out = []
        for req in requests:
            self.requests.append(req)
            if len(self.requests) - 1 in self.fail_on:
                out.append(OracleVerdict(order=None, response=None, raw="I cannot rank these.", error="no JSON"))
                continue
            qs = [int(re.search(r"q=(-?\d+)", r).group(1)) for r in req.responses]
            order = tuple(sorted(range(len(qs)), key=lambda k: -qs[k]))
            out.append(OracleVerdict(order=order, response="oracle answer", raw="{}"))
        return out

    def close(self) -> None:
        pass


class MeanLogpRanker:
    def rank(self, prompt: Prompt, candidates: Sequence[Candidate]) -> Ranking:
        return Ranking(tuple(sorted(range(len(candidates)), key=lambda i: (-candidates[i].mean_logp, i))))


class RecordingTrainer:
    def __init__(self) -> None:
        self.batches: list[LossBatch] = []
        self.steps: list[list[str]] = []  # the prompt ids of each optimisation step

    def step(self, batches: Sequence[LossBatch]) -> dict[str, float]:
        self.batches.extend(batches)
        self.steps.append([b.prompt.id for b in batches])
        return {"total": 1.5, "rank": 1.0, "sft": 0.5}


def make_cycle(sampler, oracle, *, settings: CycleSettings | None = None, pool: DemoPool | None = None):
    records: list[dict] = []
    trainer = RecordingTrainer()
    cycle = Cycle(
        sampler=sampler,
        oracle=oracle,
        self_ranker=MeanLogpRanker(),
        agreement=LCSAgreement(),
        trainer=trainer,
        demos=pool if pool is not None else DemoPool(STATIC, max_dynamic=3, token_budget=10_000),
        rewards=lambda order: [float(len(order) - 1 - p) for p in range(len(order))],
        settings=settings or CycleSettings(num_samples=3, max_interactions=4),
        on_record=records.append,
    )
    return cycle, records, trainer


PROMPTS = [Prompt.from_text(f"p{i}", f"question {i}") for i in range(3)]


def test_interactions_are_capped_at_n_when_rankings_never_match() -> None:
    # The model is most confident in the worst answer: the two rankings are reversed.
    sampler = ScoredSampler([3, 1, 2], confidence=lambda q: -q)
    cycle, records, _ = make_cycle(sampler, QualityOracle())
    totals = cycle.run(PROMPTS)
    assert [r["interaction"] for r in records] == [0, 1, 2, 3] * 3
    assert totals.interactions == 12 and totals.prompts == 3 and totals.full_agreements == 0
    assert sampler.calls == 12


def test_prompt_stops_early_when_both_rankings_are_identical() -> None:
    sampler = ScoredSampler([3, 1, 2], confidence=lambda q: q)
    cycle, records, _ = make_cycle(sampler, QualityOracle())
    totals = cycle.run(PROMPTS)
    assert [r["interaction"] for r in records] == [0, 0, 0]
    assert all(r["agreed_fully"] for r in records)
    assert totals.agreement_rate == 1.0


def test_early_stop_can_be_switched_off() -> None:
    cycle, records, _ = make_cycle(
        ScoredSampler([3, 1, 2]), QualityOracle(), settings=CycleSettings(max_interactions=2, early_stop=False)
    )
    cycle.run(PROMPTS[:1])
    assert len(records) == 2


def test_demonstration_pool_grows_and_feeds_later_oracle_calls() -> None:
    # Partial agreement: confidence order 2 > 3 > 1 vs quality 3 > 2 > 1 → LCS of length 2.
    sampler = ScoredSampler([3, 1, 2], confidence=lambda q: {3: 2.0, 1: 0.0, 2: 3.0}[q])
    oracle = QualityOracle()
    cycle, records, _ = make_cycle(sampler, oracle, settings=CycleSettings(max_interactions=2))
    cycle.run(PROMPTS)
    assert len(cycle.demos) == len(records) == 6
    # The first call sees only the static demo; each later call sees the static one plus up to 3 dynamic ones.
    shown = [len(r.demonstrations) for r in oracle.requests]
    assert shown == [1, 2, 3, 4, 4, 4]
    assert all(r.demonstrations[0] is STATIC for r in oracle.requests)
    assert [r["demonstrations_shown"] for r in records] == shown
    # Each demo holds the agreed items (quality 3 then quality 1 per LCS preference) in a correct order.
    for demo in cycle.demos.dynamic:
        best_first = [demo.responses[i] for i in demo.order]
        assert [int(t.split("q=")[1]) for t in best_first] == [3, 1]


def test_dynamic_demos_switch_keeps_only_the_static_one() -> None:
    pool = DemoPool(STATIC, use_dynamic=False)
    sampler = ScoredSampler([3, 1, 2], confidence=lambda q: {3: 2.0, 1: 0.0, 2: 3.0}[q])
    oracle = QualityOracle()
    cycle, _, _ = make_cycle(sampler, oracle, pool=pool, settings=CycleSettings(max_interactions=2))
    cycle.run(PROMPTS)
    assert [len(r.demonstrations) for r in oracle.requests] == [1] * 6


def test_shuffled_presentation_is_mapped_back_to_candidates() -> None:
    sampler = ScoredSampler([5, 9, 1, 7], confidence=lambda q: -q)
    oracle = QualityOracle()
    cycle, records, trainer = make_cycle(
        sampler, oracle, settings=CycleSettings(num_samples=4, max_interactions=5, seed=7)
    )
    cycle.run(PROMPTS)
    shown_orders = {tuple(r["shown_order"]) for r in records}
    assert len(shown_orders) > 1, "responses were not shuffled"
    for rec, req in zip(records, oracle.requests, strict=True):
        # What the oracle saw at position k is candidate shown_order[k].
        assert list(req.responses) == [rec["candidates"][i] for i in rec["shown_order"]]
        # Mapped back, the oracle's order is the true quality order of the candidates.
        best_first = [int(rec["candidates"][i].split("q=")[1]) for i in rec["oracle"]["order"]]
        assert best_first == [9, 7, 5, 1]
    for batch in trainer.batches:
        assert batch.candidates[0].source == "oracle"
        assert [int(c.text.split("q=")[1]) for c in batch.candidates[1:]] == [9, 7, 5, 1]
        assert list(batch.rewards) == [4.0, 3.0, 2.0, 1.0, 0.0] and batch.sft_index == 0


def test_without_shuffle_the_oracle_sees_sampling_order() -> None:
    oracle = QualityOracle()
    cycle, records, _ = make_cycle(
        ScoredSampler([5, 9, 1]), oracle, settings=CycleSettings(shuffle=False, max_interactions=1)
    )
    cycle.run(PROMPTS)
    assert all(r["shown_order"] == [0, 1, 2] for r in records)


def test_oracle_response_can_be_left_out_of_the_ranked_candidates() -> None:
    cycle, _, trainer = make_cycle(
        ScoredSampler([3, 1, 2]), QualityOracle(), settings=CycleSettings(include_oracle_response=False)
    )
    cycle.run(PROMPTS[:1])
    assert all(c.source == "whitebox" for c in trainer.batches[0].candidates)
    assert len(trainer.batches[0].rewards) == 3


def test_oracle_failure_is_recorded_and_skips_training_without_inventing_a_rank() -> None:
    oracle = QualityOracle(fail_on={0})
    cycle, records, trainer = make_cycle(
        ScoredSampler([3, 1, 2], confidence=lambda q: -q), oracle, settings=CycleSettings(max_interactions=2)
    )
    totals = cycle.run(PROMPTS[:1])
    assert records[0]["oracle"]["order"] is None and records[0]["loss"] is None
    assert "no JSON" in records[0]["skipped_reason"] and records[0]["agreement"] == []
    assert records[1]["loss"] is not None
    # reversed rankings agree on a single item only: too short to teach anything
    assert totals.oracle_failures == 1 and len(trainer.batches) == 1 and len(cycle.demos) == 0


def test_budget_stop_ends_the_run_cleanly() -> None:
    class Broke(QualityOracle):
        def rank_many(self, requests):
            if self.requests:
                raise BudgetExceeded("next call would exceed 0.01 USD")
            return super().rank_many(requests)

    cycle, records, _ = make_cycle(ScoredSampler([3, 1, 2], confidence=lambda q: -q), Broke())
    totals = cycle.run(PROMPTS)
    assert len(records) == 1 and totals.stopped.startswith("budget")


def test_prompt_batch_sends_concurrent_oracle_requests() -> None:
    oracle = QualityOracle()
    cycle, records, _ = make_cycle(
        ScoredSampler([3, 1, 2], confidence=lambda q: -q),
        oracle,
        settings=CycleSettings(prompt_batch=3, max_interactions=2),
    )
    cycle.run(PROMPTS)
    assert oracle.batches == [3, 3]
    assert len(records) == 6


def test_a_wave_makes_one_optimisation_step_per_tick_over_all_its_prompts() -> None:
    cycle, records, trainer = make_cycle(
        ScoredSampler([3, 1, 2], confidence=lambda q: -q),
        QualityOracle(),
        settings=CycleSettings(prompt_batch=3, max_interactions=2, early_stop=False),
    )
    totals = cycle.run(PROMPTS)
    assert trainer.steps == [["p0", "p1", "p2"], ["p0", "p1", "p2"]]
    assert totals.trained_steps == 2 and totals.waves == 1 and totals.prompts == 3
    assert [r["loss"]["total"] for r in records] == [1.5] * 6  # each record carries its step's loss


def test_records_and_demos_follow_prompt_positions_not_arrival_order() -> None:
    cycle, records, _ = make_cycle(
        ScoredSampler([3, 1, 2], confidence=lambda q: -q),
        QualityOracle(),
        settings=CycleSettings(prompt_batch=3, max_interactions=1),
    )
    cycle.run(list(reversed(PROMPTS)), positions=[2, 1, 0])
    assert [r["prompt_id"] for r in records] == ["p0", "p1", "p2"]
    assert [d.prompt for d in cycle.demos.dynamic] == [r["prompt"] for r in records if len(r["agreement"]) >= 2]


def test_stop_request_interrupts_between_interactions() -> None:
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    cycle, records, _ = make_cycle(ScoredSampler([3, 1, 2], confidence=lambda q: -q), QualityOracle())
    cycle.should_stop = should_stop
    totals = cycle.run(PROMPTS)
    assert len(records) == 2 and totals.stopped == "interrupted"


@pytest.mark.parametrize("selection", ["recent", "similar"])
def test_demo_selection_respects_count_and_token_budget(selection: str) -> None:
    pool = DemoPool(STATIC, max_dynamic=2, selection=selection, token_budget=40)
    for i in range(5):
        pool.add(Demonstration(f"cooking pasta {i}", ("a" * 20, "b" * 20), (0, 1)))
    pool.add(Demonstration("x" * 400, ("a", "b"), (1, 0)))  # too long for any budget here
    chosen = pool.select("how long to cook pasta 3")
    assert chosen[0] is STATIC and 1 <= len(chosen) - 1 <= 2
    assert all(len(d.prompt) < 100 for d in chosen)
    if selection == "recent":
        assert chosen[1].prompt == "cooking pasta 4"
    else:
        assert chosen[1].prompt == "cooking pasta 3"


def test_settings_mirror_the_cycle_config() -> None:
    from cyclealign.config import CycleConfig

    cfg = CycleConfig(num_samples=4, max_interactions=2, prompt_batch=3, on_oracle_failure="self_rank")
    s = CycleSettings.from_config(cfg, seed=9, shuffle=False)  # oracle.shuffle_answers
    assert (s.num_samples, s.max_interactions, s.shuffle, s.prompt_batch, s.seed) == (4, 2, False, 3, 9)
    assert s.on_oracle_failure == "self_rank" and s.early_stop and s.include_oracle_response and s.min_agreement == 2


def test_self_rank_fallback_trains_on_the_models_own_order_when_the_oracle_fails() -> None:
    cycle, records, trainer = make_cycle(
        ScoredSampler([3, 1, 2], confidence=lambda q: -q),
        QualityOracle(fail_on={0}),
        settings=CycleSettings(max_interactions=1, on_oracle_failure="self_rank"),
    )
    cycle.run(PROMPTS[:1])
    (batch,) = trainer.batches
    assert all(c.source == "whitebox" for c in batch.candidates)
    assert [c.text.split("q=")[1] for c in batch.candidates] == ["1", "2", "3"]  # most confident first
    assert records[0]["oracle"]["order"] is None and records[0]["loss"] is not None


def test_a_fatal_oracle_failure_stops_the_run_and_leaves_its_wave_undone() -> None:
    class Revoked(QualityOracle):  # the key is rejected from the third request on
        def rank_many(self, requests):
            verdicts = super().rank_many(requests)
            first = len(self.requests) - len(requests)
            return [
                OracleVerdict(order=None, response=None, error="AuthenticationError: bad key", failure="auth")
                if first + k >= 2
                else v
                for k, v in enumerate(verdicts)
            ]

    settings = CycleSettings(num_samples=3, max_interactions=1, prompt_batch=2)
    cycle, records, trainer = make_cycle(
        ScoredSampler([3, 1, 2], confidence=lambda q: -q), Revoked(), settings=settings
    )
    totals = cycle.run(PROMPTS)  # waves: [p0, p1] then [p2]
    assert totals.stopped == "oracle failed fatally: AuthenticationError: bad key"
    assert totals.prompts == 2 and len(records) == 2 and len(trainer.batches) == 2  # nothing of the failed wave
    assert totals.oracle_failures == 0 and totals.oracle_failures_by_kind == {}


def test_failures_are_counted_by_kind() -> None:
    oracle = QualityOracle(fail_on={0})
    cycle, records, _ = make_cycle(
        ScoredSampler([3, 1, 2], confidence=lambda q: -q), oracle, settings=CycleSettings(max_interactions=2)
    )
    totals = cycle.run(PROMPTS[:1])
    assert records[0]["oracle"]["failure"] is None  # an oracle that names no kind
    assert totals.oracle_failures_by_kind == {"unknown": 1}
