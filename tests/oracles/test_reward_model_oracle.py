"""The `reward-model` oracle on its own: options checked with their keys named, batches equal to one pair at a
time, misses of a whole batch scored together, every pair cached once, a retrained model missing the cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cyclealign.config import OracleConfig
from cyclealign.errors import ConfigError, SetupError
from cyclealign.plugin_options import describe
from cyclealign.plugins import create_oracle, get_registry
from cyclealign.protocols import Oracle, OracleRequest
from tests.support.tiny_models import tiny_llama_reward_model_dir

REQUESTS = [
    OracleRequest("How do I bake bread?", ("Mix flour and water.", "I cannot help.", "Knead, rise, then bake.")),
    OracleRequest("Human: Hi\nAssistant: Hello!\nHuman: Why is the sky blue?", ("Air scatters blue.", "No idea.")),
    OracleRequest("How do I bake bread?", ("I cannot help.", "Bake it.", "Mix flour and water.")),
]


@pytest.fixture(scope="module")
def rm(tmp_path_factory) -> Path:
    return tiny_llama_reward_model_dir(tmp_path_factory.mktemp("rm") / "rm", seed=5)


def _oracle(rm: Path, cache: Path | None = None, **options):
    cfg = OracleConfig(
        name="reward-model", options={"model": str(rm), **options}, cache=cache is not None, cache_path=cache
    )
    return create_oracle(cfg)


def _count_passes(oracle) -> list[int]:
    rows: list[int] = []
    real = oracle.scorer.model.forward

    def counting(*args, **kwargs):
        rows.append(int(kwargs["input_ids"].shape[0]))
        return real(*args, **kwargs)

    oracle.scorer.model.forward = counting
    return rows


def test_the_options_are_checked_and_listed(rm: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"oracle\.options\.model"):
        create_oracle(OracleConfig(name="reward-model"))
    with pytest.raises(ConfigError, match=r"oracle\.options\.api_base: not an option of the oracle 'reward-model'"):
        _oracle(rm, api_base="http://x")
    with pytest.raises(ConfigError, match=r"oracle\.options\.kind"):
        _oracle(rm, kind="regressor")
    with pytest.raises(SetupError, match=r"oracle\.options\.model: .* is not a model directory"):
        _oracle(tmp_path)
    names = [o.name for o in describe(get_registry().get("oracle", "reward-model").options)]
    assert names[:2] == ["model", "kind"] and "batch_size" in names and "device" in names


def test_batches_rank_as_one_pair_at_a_time_and_repeats_are_scored_once(rm: Path) -> None:
    batched, alone = _oracle(rm, batch_size=4), _oracle(rm, batch_size=1)
    assert isinstance(batched, Oracle)
    rows = _count_passes(batched)
    got = batched.rank_many(REQUESTS)
    distinct = {(r.prompt, a) for r in REQUESTS for a in r.responses}
    assert sum(rows) == len(distinct) == 6 and rows == [4, 2]  # the misses of all three requests, 4 at a time
    assert batched.stats.http_calls == 2 and batched.stats.usage.calls == 6 and batched.stats.usage.cost_usd == 0
    for request, verdict in zip(REQUESTS, got, strict=True):
        one = alone.rank(request)
        assert verdict.ok and verdict.response is None and not verdict.cached
        assert verdict.order == one.order
        scores = json.loads(verdict.raw)["scores"]
        assert scores == pytest.approx(json.loads(one.raw)["scores"], abs=1e-5)
        assert list(verdict.order) == sorted(range(len(scores)), key=lambda i: -scores[i])
    # "Mix flour and water." and "I cannot help." for the same question: scored once, the same score twice
    s0, s2 = (json.loads(v.raw)["scores"] for v in (got[0], got[2]))
    assert s0[0] == s2[2] and s0[1] == s2[0]


def test_the_cache_answers_a_second_oracle_without_a_forward_pass(rm: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    first = _oracle(rm, cache)
    orders = [v.order for v in first.rank_many(REQUESTS)]
    first.close()

    second = _oracle(rm, cache)
    rows = _count_passes(second)
    replay = second.rank_many(REQUESTS)
    assert rows == [] and [v.order for v in replay] == orders and all(v.cached for v in replay)
    assert second.stats.cache_hits == 3 and second.stats.http_calls == 0 and second.stats.usage.calls == 0
    second.close()


def test_a_model_retrained_in_place_misses_the_cache(tmp_path: Path) -> None:
    cache, mine = tmp_path / "cache.sqlite", tmp_path / "rm"
    tiny_llama_reward_model_dir(mine, seed=5)
    _oracle(mine, cache).rank_many(REQUESTS[:1])
    tiny_llama_reward_model_dir(mine, seed=6)  # the same directory, other weights
    retrained = _oracle(mine, cache)
    rows = _count_passes(retrained)
    assert not retrained.rank(REQUESTS[0]).cached and sum(rows) == 3
    retrained.close()


def test_a_score_that_is_not_a_number_is_a_recorded_failure_never_cached(rm: Path, tmp_path: Path) -> None:
    oracle = _oracle(rm, tmp_path / "cache.sqlite")
    real = oracle.scorer.score
    oracle.scorer.score = lambda ctx, ans, on_batch=None: [math.nan, *real(ctx[1:], ans[1:], on_batch)]
    verdict = oracle.rank(REQUESTS[1])
    assert verdict.order is None and verdict.failure == "invalid_answer" and "finite" in verdict.error
    assert oracle.stats.failures == 1
    oracle.scorer.score = real
    again = oracle.rank(REQUESTS[1])
    assert again.ok and not again.cached  # the bad score was not kept; the good one was
    assert again.usage.calls == 1
