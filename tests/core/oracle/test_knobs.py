"""The knobs for what the paper leaves open: SFT reduction, the oracle's instruction file,
no cap on dynamic demonstrations, and the judge's own reply limit with truncations counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cyclealign.config import OracleConfig, load_config
from cyclealign.errors import ConfigError
from cyclealign.evaluate.judge import eval_judge
from cyclealign.infra.store import atomic_write_jsonl
from cyclealign.oracle.demos import DemoPool
from cyclealign.oracle.prompts import STATIC_DEMONSTRATION, SYSTEM
from cyclealign.protocols import Demonstration, OracleRequest
from cyclealign.run.assembly import build_loss, check_cheaply
from tests.support.openai_server import OpenAIServer, Reply, oracle_for

LOGPS = torch.tensor([[-6.0, -9.0, -12.0], [-20.0, -4.0, -8.0]])  # summed log-probs [B, n]
LENGTHS = torch.tensor([[3.0, 6.0, 4.0], [10.0, 2.0, 8.0]])
REWARDS = torch.tensor([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0]])  # best: candidate 0, then candidate 1


@pytest.mark.parametrize("name", ["pro", "rrhf", "dpo"])
def test_sft_reduction_sum_is_the_mean_times_the_token_count(name: str) -> None:
    mean = build_loss(load_config(overrides=[f"loss.name={name}"]))
    summed = build_loss(load_config(overrides=[f"loss.name={name}", "loss.sft_reduction=sum"]))
    assert (mean.sft_reduction, summed.sft_reduction) == ("mean", "sum")
    ref = LOGPS - 1.0
    for row in range(2):  # one prompt at a time: the factor is the best answer's token count
        args = (LOGPS[row : row + 1], LENGTHS[row : row + 1], REWARDS[row : row + 1], ref[row : row + 1])
        m, s = mean(*args).parts, summed(*args).parts
        best = int(REWARDS[row].argmax())
        assert s["sft"] == pytest.approx(m["sft"] * float(LENGTHS[row, best]))
        assert s["rank"] == pytest.approx(m["rank"])
        assert s["total"] == pytest.approx(s["rank"] + mean.sft_weight * s["sft"])
    assert summed(LOGPS, LENGTHS, REWARDS, ref).parts["sft"] == pytest.approx((6.0 + 4.0) / 2)
    with pytest.raises(ConfigError, match=r"loss\.sft_reduction"):
        load_config(overrides=["loss.sft_reduction=median"])


REQUEST = OracleRequest("How do I bake bread?", ("Mix flour.", "No."), (STATIC_DEMONSTRATION,))
GOOD = json.dumps({"desired rank": [0, 1], "response": "Knead the dough, let it rise, then bake it."})


def test_the_ranking_instruction_can_come_from_a_file(tmp_path: Path) -> None:
    own = tmp_path / "instruction.txt"
    own.write_text("Rank by harmlessness and helpfulness only; nothing else.\n")
    with OpenAIServer(lambda call, i: Reply(GOOD)) as server:
        default = oracle_for(server)
        assert default.rank(REQUEST).ok
        custom = oracle_for(server, instruction_file=own)
        assert custom.rank(REQUEST).ok
        systems = [c.body["messages"][0]["content"] for c in server.chat_calls]
    assert systems == [SYSTEM, "Rank by harmlessness and helpfulness only; nothing else."]


def test_a_missing_or_empty_instruction_file_is_a_clear_error_before_the_run(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    for path, message in ((tmp_path / "nope.txt", "does not exist"), (empty, "is empty")):
        config = load_config(overrides=[f"oracle.instruction_file={path}"])
        with pytest.raises(ConfigError, match=f"oracle.instruction_file: {path} {message}"):
            check_cheaply(config)
        with OpenAIServer(lambda call, i: Reply(GOOD)) as server, pytest.raises(ConfigError, match=message):
            oracle_for(server, instruction_file=path)


def _demo(k: int) -> Demonstration:
    return Demonstration(f"question {k}", (f"good {k}", f"bad {k}"), (0, 1))


def test_max_dynamic_demos_null_means_no_count_cap() -> None:
    config = load_config(overrides=["cycle.max_dynamic_demos=null", "cycle.demo_token_budget=100000"])
    assert config.cycle.max_dynamic_demos is None
    shown = {}
    for cap in (None, 3, 0):
        pool = DemoPool(STATIC_DEMONSTRATION, max_dynamic=cap, token_budget=config.cycle.demo_token_budget)
        pool.extend([_demo(k) for k in range(8)])
        shown[cap] = pool.select("question")
    assert len(shown[None]) == 9 and shown[None][0] is STATIC_DEMONSTRATION  # the static one and all eight
    assert len(shown[3]) == 4 and len(shown[0]) == 1


def _answers(path: Path, n: int, tag: str) -> Path:
    rows = [{"id": str(i), "subset": "harmless-base", "question": f"q{i}", "answer": f"{tag} {i}"} for i in range(n)]
    atomic_write_jsonl(path, rows)
    return path


def test_the_judge_has_its_own_max_tokens_and_counts_truncated_verdicts_apart(tmp_path: Path) -> None:
    verdict = json.dumps({"reasoning": "Both fine; the first is clearer.", "winner": "1"})

    def judge(call, index):
        q = int(call.first_user.split("<<<REQUEST>>>\n")[1].split("q", 1)[1].split("\n")[0])
        if q < 3:  # reasoning cut off mid-sentence at max_tokens
            return Reply('{"reasoning": "Answer 1 explains the steps while answer 2', finish_reason="length")
        if q == 3:  # cut off, but after a complete verdict: still usable
            return Reply(verdict + " Also", finish_reason="length")
        if q == 4:
            return Reply("I cannot decide.")  # unusable even when asked again: a failure, not a truncation
        return Reply(verdict)

    a, b = _answers(tmp_path / "a.jsonl", 10, "alpha"), _answers(tmp_path / "b.jsonl", 10, "beta")
    with OpenAIServer(judge) as server:
        cfg = OracleConfig(
            name="local", options={"api_base": server.api_base, "serve_gguf": None}, model="openai/judge", cache=False
        )
        out = eval_judge(answers_a=a, answers_b=b, oracle=cfg, out_dir=tmp_path / "j")
        limits = {c.body["max_tokens"] for c in server.chat_calls}
        calls = len(server.chat_calls)
    assert limits == {1024} and cfg.max_tokens == 256  # the judge's own limit; the ranking's is untouched
    assert calls == 11  # only the unusable verdict was asked again; truncated ones would be cut off again
    assert out["header"][-3:] == ["judged", "failed", "truncated"]
    assert out["rows"][-1][-3:] == [6, 1, 3]
    saved = [json.loads(x) for x in (tmp_path / "j" / "judgements.jsonl").read_text().splitlines()]
    assert sum(s["truncated"] for s in saved) == 3
    assert all(s["error"].startswith("truncated") for s in saved if s["truncated"])
