"""`cycle.self_rank`: the white-box ranks by mean token log-prob or by the whole answer's log-prob.

A tiny real model scores a constructed pair of answers of unequal length, so the two
rules disagree for a reason the test controls; a tiny real run records which rule it used.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cyclealign.config import WhiteboxConfig, load_config
from cyclealign.errors import ConfigError
from cyclealign.protocols import Candidate, Prompt
from cyclealign.whitebox import LogProbRanker, encode_candidates, load_whitebox, sequence_logps
from cyclealign.whitebox.prompt_format import encode_prompt
from tests.support.openai_server import OpenAIServer
from tests.support.runs import tiny_overrides
from tests.support.tiny_models import tiny_llama_dir

PROMPT = Prompt.from_text("p", "How do I bake bread?")


@pytest.fixture(scope="module")
def whitebox(tmp_path_factory: pytest.TempPathFactory):
    path = tiny_llama_dir(tmp_path_factory.mktemp("tiny"))
    return load_whitebox(WhiteboxConfig(model=str(path), device="cpu"), seed=0)


def _next_logps(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].double().log_softmax(-1)


def _pair(wb) -> tuple[list[int], list[int]]:
    """A one-token answer the model finds least likely, and a six-token greedy one it finds likely token by token."""
    prompt_ids, _ = encode_prompt(wb.tokenizer, PROMPT, 512, "auto")
    special = set(wb.tokenizer.all_special_ids)
    first = _next_logps(wb.model, prompt_ids)
    short = [min((t for t in range(len(first)) if t not in special), key=lambda t: float(first[t]))]
    long: list[int] = []
    for _ in range(6):
        step = _next_logps(wb.model, prompt_ids + long)
        long.append(max((t for t in range(len(step)) if t not in special), key=lambda t: float(step[t])))
    return short, long


def test_sum_and_mean_rank_a_short_unlikely_and_a_long_likely_answer_differently(whitebox) -> None:
    short, long = _pair(whitebox)
    ids = [tuple(short), tuple(long)]
    bare = [[Candidate(whitebox.tokenizer.decode(i), token_ids=i) for i in ids]]
    with torch.no_grad():
        logps, lengths = sequence_logps(whitebox.model, encode_candidates(whitebox.tokenizer, [PROMPT], bare, 512))
    assert lengths[0].tolist() == [1, 6]
    cands = [Candidate(c.text, c.token_ids, float(s)) for c, s in zip(bare[0], logps[0], strict=True)]
    sums, means = [c.sum_logp for c in cands], [c.mean_logp for c in cands]
    assert sums[0] > sums[1] and means[1] > means[0], (sums, means)  # what the construction guarantees
    by_sum = LogProbRanker("sum_logp").rank(PROMPT, cands).order
    by_mean = LogProbRanker("mean_logp").rank(PROMPT, cands).order
    assert by_sum == (0, 1) and by_mean == (1, 0)
    unscored = Candidate("the oracle's own answer")  # no log-prob: last under either rule
    assert LogProbRanker("sum_logp").rank(PROMPT, [unscored, *cands]).order == (1, 2, 0)


def test_an_unknown_rule_is_refused_by_its_key() -> None:
    with pytest.raises(ConfigError, match=r"cycle\.self_rank"):
        load_config(overrides=["cycle.self_rank=median_logp"])
    with pytest.raises(ConfigError, match=r"cycle\.self_rank: 'x' is not one of mean_logp, sum_logp"):
        LogProbRanker("x")
    assert load_config().cycle.self_rank == "mean_logp"


def test_a_run_records_the_rule_and_ranks_by_it(tmp_path: Path) -> None:
    """The non-default rule end to end (the default's ``mean_logp`` is checked in tests/test_run_integration.py)."""
    from cyclealign.run.entry import run

    rule = "sum_logp"
    model = tiny_llama_dir(tmp_path / "model")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "How do I bake bread?"}) + "\n")
    with OpenAIServer() as server:
        extra = ("data.max_prompts=1", "cycle.max_interactions=2", "cycle.early_stop=false", f"cycle.self_rank={rule}")
        run(load_config(overrides=tiny_overrides(model, prompts, server.api_base, tmp_path / "run", *extra)))
    records = [json.loads(line) for line in (tmp_path / "run" / "interactions.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for rec in records:
        assert rec["self_rank"] == rule
        scores = rec["candidate_sum_logps"]
        assert rec["self_order"] == sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        assert all(s < 0 for s in scores) and len(set(scores)) == len(scores)  # real, distinct log-probs
