"""Evaluation: Table 1 with tiny reward models of both kinds, the LLM judge's order randomisation
(Table 2), oracle accuracy on fixed human-labelled pairs per demonstration setting, and the CLI."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from cyclealign.cli.main import app
from cyclealign.config import OracleConfig
from cyclealign.data.hh_rlhf import load_hh_rlhf, stratified_sample
from cyclealign.evaluate.judge import eval_judge
from cyclealign.evaluate.pair_accuracy import eval_human_pair_accuracy
from cyclealign.evaluate.reward import eval_reward
from cyclealign.evaluate.reward_model import RewardModelError, RewardScorer, oasst_text
from cyclealign.infra.store import atomic_write_jsonl
from cyclealign.protocols import Demonstration, Message, Prompt
from tests.support.openai_server import OpenAIServer, Reply, shown_responses
from tests.support.paths import REPO
from tests.support.tiny_models import tiny_llama_dir, tiny_reward_model_dir, tiny_tokenizer

SHARED = REPO.parent / "shared" / "data" / "hh-rlhf"


def _pythia_dir(path: Path) -> Path:
    """A tiny checkpoint laid out like OpenAssistant's oasst-rm-2-pythia-6.9b: its config's model_type and
    pooling, weights as sharded pytorch_model-*.bin with an index, keys gpt_neox.* and out_proj.*."""
    from transformers import GPTNeoXConfig, GPTNeoXModel

    tok = tiny_tokenizer(padding_side="right")
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=1024,
    )
    trunk, head = GPTNeoXModel(cfg), torch.nn.Linear(32, 1)
    torch.nn.init.normal_(head.weight, std=0.5)
    state = {f"gpt_neox.{k}": v for k, v in trunk.state_dict().items()}
    state |= {f"out_proj.{k}": v for k, v in head.state_dict().items()}
    path.mkdir(parents=True)
    keys = sorted(state)
    weight_map = {}
    for n, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :]), 1):
        name = f"pytorch_model-0000{n}-of-00002.bin"
        torch.save({k: state[k].clone() for k in part}, path / name)
        weight_map |= dict.fromkeys(part, name)
    (path / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = cfg.to_dict() | {
        "model_type": "gpt_neox_reward_model",
        "architectures": ["GPTNeoXRewardModel"],
        "pooling": "last",
    }
    (path / "config.json").write_text(json.dumps(config))
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["classifier", "oasst-pythia"])
def test_reward_table_layout_and_arithmetic(kind: str, tmp_path: Path) -> None:
    rm = tiny_reward_model_dir(tmp_path / "rm") if kind == "classifier" else _pythia_dir(tmp_path / "rm")
    examples, _ = load_hh_rlhf(SHARED, subsets=["harmless-base"], split="test")
    picked = stratified_sample(examples, 6, seed=0)
    answers = [f"answer number {i} " * (i + 1) for i in range(6)]
    out = eval_reward(
        data=SHARED,
        reward_model=rm,
        reward_kind=kind,
        model="unused",
        system="tiny",
        k=6,
        seed=0,
        out_dir=tmp_path / "eval",
        answers=answers,
    )
    rows = [json.loads(x) for x in (tmp_path / "eval" / "answers.jsonl").read_text().rstrip("\n").split("\n")]
    assert [r["id"] for r in rows] == [e.id for e in picked] and [r["answer"] for r in rows] == answers
    assert len({r["score"] for r in rows}) > 1
    direct = RewardScorer(rm, kind).score([e.prompt for e in picked], answers)
    assert [r["score"] for r in rows] == pytest.approx(direct, abs=1e-5)
    expected = round(sum(100 / (1 + math.exp(-r["score"])) for r in rows) / len(rows), 2)
    assert out["header"] == ["system", "harmless-base", "total", "unweighted subset mean"]
    assert out["rows"] == [["tiny", expected, expected, expected]]
    csv = (tmp_path / "eval" / "table1_reward.csv").read_text().splitlines()
    assert csv[0] == "system,harmless-base,total,unweighted subset mean"
    assert csv[1] == f"tiny,{expected},{expected},{expected}"
    assert f"| tiny | {expected} | {expected} | {expected} |" in (tmp_path / "eval" / "table1_reward.md").read_text()


def test_total_weighs_subsets_by_size_and_the_plain_mean_stands_beside_it() -> None:
    from cyclealign.evaluate.reward import ScoredAnswer, table1

    scored = [
        ScoredAnswer("1", "a", "q", "x", 0.0),
        ScoredAnswer("2", "b", "q", "x", 0.0),
        ScoredAnswer("3", "b", "q", "x", 100.0),
    ]
    header, rows = table1(scored)
    assert header == ["system", "a", "b", "total", "unweighted subset mean"]
    assert rows == [[50.0, 75.0, round(200 / 3, 2), 62.5]]
    assert table1(scored, {"a": 3, "b": 1})[1] == [[50.0, 75.0, 56.25, 62.5]]  # weighted by full split sizes


def test_pythia_reward_loads_the_upstream_layout_and_pools_the_last_real_token(tmp_path: Path) -> None:
    path = _pythia_dir(tmp_path / "rm")
    scorer = RewardScorer(path, "oasst-pythia", batch_size=8)
    head = torch.load(path / "pytorch_model-00002-of-00002.bin", weights_only=True)["out_proj.weight"]
    assert torch.equal(scorer.model.out_proj.weight, head)  # the checkpoint's head, not a random one
    contexts = [Prompt.from_text("a", "How do I bake bread?"), Prompt.from_text("b", "Why?")]
    answers = ["Knead the dough and bake it for long.", "No."]
    batched = scorer.score(contexts, answers)
    single = [scorer.score([c], [a])[0] for c, a in zip(contexts, answers, strict=True)]
    assert batched == pytest.approx(single, abs=1e-5)  # padding never reaches the pooled token
    dialogue = Prompt("d", (Message("user", "hi"), Message("assistant", "hello"), Message("user", "bake?")))
    assert oasst_text(dialogue, "knead", "<|endoftext|>") == (
        "<|prompter|>hi<|endoftext|><|assistant|>hello<|endoftext|><|prompter|>bake?<|endoftext|>"
        "<|assistant|>knead<|endoftext|>"
    )


def test_a_directory_without_a_reward_head_is_refused(tmp_path: Path) -> None:
    model_dir = tiny_llama_dir(tmp_path / "llama")
    with pytest.raises(RewardModelError, match="not a trained classifier reward model"):
        RewardScorer(model_dir, "classifier")
    with pytest.raises(RewardModelError, match="not a model directory"):
        RewardScorer(tmp_path, "oasst-pythia")


def test_eval_reward_generates_in_batches_and_merges_a_shared_table(tmp_path: Path) -> None:
    from cyclealign.whitebox.greedy import generate_answers, load_system

    model = tiny_llama_dir(tmp_path / "base")
    rm = tiny_reward_model_dir(tmp_path / "rm")
    table = tmp_path / "table1.csv"
    runner = CliRunner()
    for name in ("base", "again", "base"):
        args = ["eval", "reward", "--model", str(model), "--name", name, "--reward-model", str(rm)]
        args += ["--data", str(SHARED), "--subset", "harmless-base", "--k", "5", "--max-new-tokens", "6"]
        args += ["--batch-size", "2", "--out", str(tmp_path / name), "--table", str(table)]
        result = runner.invoke(app, args, terminal_width=200)
        assert result.exit_code == 0, result.output
    assert "read 2312, kept 2308" in result.output
    rows = table.read_text().splitlines()
    assert rows[0] == "system,harmless-base,total,unweighted subset mean" and [r.split(",")[0] for r in rows[1:]] == [
        "again",
        "base",
    ]
    saved = [json.loads(x) for x in (tmp_path / "base" / "answers.jsonl").read_text().rstrip("\n").split("\n")]
    examples, _ = load_hh_rlhf(SHARED, subsets=["harmless-base"])
    prompts = [e.prompt for e in stratified_sample(examples, 5, seed=0)]
    one_by_one = generate_answers(load_system(model=str(model)), prompts, 6, batch_size=1)
    assert [r["answer"] for r in saved] == one_by_one  # batching with left padding changes nothing


def test_eval_reward_generates_with_a_trained_runs_adapter(tmp_path: Path) -> None:
    from tests.core.report.test_report import make_run

    run_dir = make_run(tmp_path)
    rm = tiny_reward_model_dir(tmp_path / "rm")
    out = eval_reward(data=SHARED, reward_model=rm, run_dir=run_dir, subsets=["harmless-base"], k=2, max_new_tokens=6)
    rows = [json.loads(x) for x in (run_dir / "eval" / "answers.jsonl").read_text().rstrip("\n").split("\n")]
    assert len(rows) == 2 and out["rows"][0][0] == "run"
    from cyclealign.whitebox.greedy import load_system

    wb = load_system(run_dir=run_dir)
    assert type(wb.model).__name__.startswith("PeftModel")  # the trained adapter is applied


def _answers(path: Path, n: int, tag: str) -> Path:
    subsets = ["harmless-base", "helpful-base"]
    rows = [{"id": str(i), "subset": subsets[i % 2], "question": f"q{i}", "answer": f"{tag} {i}"} for i in range(n)]
    atomic_write_jsonl(path, rows)
    return path


def test_answers_files_name_the_bad_line(tmp_path: Path) -> None:
    from cyclealign.data import DataError
    from cyclealign.evaluate.judge import load_answers

    path = _answers(tmp_path / "a.jsonl", 2, "alpha")
    assert load_answers(path)["1"] == {"subset": "helpful-base", "question": "q1", "answer": "alpha 1"}
    path.write_text(path.read_text() + '{"id": "2", "subset": "s"}\n{not json\n')
    with pytest.raises(DataError, match=r"a\.jsonl:3: expected an object with id, subset, question, answer"):
        load_answers(path)
    path.write_text('{"id": "0", "subset": "s", "question": "q", "answer": "a"}\n{not json\n')
    with pytest.raises(DataError, match=r"a\.jsonl:2: not valid JSON"):
        load_answers(path)
    with pytest.raises(DataError, match="no such answers file"):
        load_answers(tmp_path / "missing.jsonl")


def _first_wins(call, index):
    return Reply(json.dumps({"reasoning": "The first one reads better.", "winner": "1"}))


@pytest.mark.parametrize("randomize", [True, False])
def test_judge_maps_randomised_order_back(randomize: bool, tmp_path: Path) -> None:
    a, b = _answers(tmp_path / "a.jsonl", 40, "alpha"), _answers(tmp_path / "b.jsonl", 40, "beta")
    with OpenAIServer(_first_wins) as server:
        cfg = OracleConfig(
            name="local", options={"api_base": server.api_base, "serve_gguf": None}, model="openai/judge", cache=False
        )
        out = eval_judge(
            answers_a=a,
            answers_b=b,
            oracle=cfg,
            name_a="alpha",
            name_b="beta",
            seed=1,
            randomize=randomize,
            out_dir=tmp_path,
        )
        shown_first = [re.search(r"<<<ANSWER 1>>>\n(\w+)", c.first_user).group(1) for c in server.chat_calls]
    total = out["rows"][-1]
    assert total[0] == "total" and total[4] == 40 and total[5] == 0
    a_first = shown_first.count("alpha")
    if randomize:
        # A judge that always picks the first answer ends near 50/50, and exactly at the share shown first.
        assert total[1] == pytest.approx(100 * a_first / 40) and total[3] == pytest.approx(100 - total[1])
        assert 30 <= total[1] <= 70 and 30 <= total[3] <= 70
    else:
        assert a_first == 40 and total[1] == 100.0 and total[3] == 0.0
    assert out["header"][1] == "alpha win %" and [r[0] for r in out["rows"]] == [
        "harmless-base",
        "helpful-base",
        "total",
    ]
    saved = [json.loads(x) for x in (tmp_path / "judgements.jsonl").read_text().rstrip("\n").split("\n")]
    assert all(s["outcome"] == ("win" if s["a_shown_first"] else "lose") for s in saved)
    assert saved[0]["reasoning"] == "The first one reads better."


def test_judge_asks_again_after_an_unusable_verdict(tmp_path: Path) -> None:
    def prose_first(call, index):
        if len(call.body["messages"]) == 2:
            return Reply("Both are fine, I think the second is nicer.")
        return Reply(json.dumps({"reasoning": "B is kinder.", "winner": "2"}))

    a, b = _answers(tmp_path / "a.jsonl", 6, "alpha"), _answers(tmp_path / "b.jsonl", 6, "beta")
    with OpenAIServer(prose_first) as server:
        cfg = OracleConfig(
            name="local", options={"api_base": server.api_base, "serve_gguf": None}, model="openai/judge", cache=False
        )
        out = eval_judge(answers_a=a, answers_b=b, oracle=cfg, randomize=False, out_dir=tmp_path)
        assert len(server.chat_calls) == 12
    assert out["rows"][-1][1:] == [0.0, 0.0, 100.0, 6, 0, 0]


def test_oracle_accuracy_arithmetic_and_demonstration_modes(tmp_path: Path) -> None:
    examples, _ = load_hh_rlhf(SHARED, subsets=["harmless-base"], split="test")
    picked = stratified_sample(examples, 40, seed=3)
    assert all(len(e.chosen) != len(e.rejected) for e in picked)  # no ties, so the rule below is unambiguous
    demos = tmp_path / "demos.jsonl"
    atomic_write_jsonl(demos, [Demonstration(f"p{i}", ("good", "bad"), (0, 1)).__dict__ for i in range(5)])

    def longer_first_or_refuse(call, index):
        (_, first), (_, second) = shown_responses(call)
        if (len(first) + len(second)) % 5 == 0:
            return Reply("I would rather not rank these.")
        return Reply(json.dumps({"desired rank": [0, 1] if len(first) > len(second) else [1, 0], "response": "ok."}))

    with OpenAIServer(longer_first_or_refuse) as server:
        cfg = OracleConfig(
            name="local",
            options={"api_base": server.api_base, "serve_gguf": None},
            model="openai/acc",
            cache=False,
            max_parse_retries=0,
        )
        out = eval_human_pair_accuracy(
            data=SHARED,
            oracle=cfg,
            modes=["none", "static", "dynamic", "dynamic@2"],
            demos=demos,
            subsets=["harmless-base"],
            k=40,
            seed=3,
            out_dir=tmp_path,
        )
        calls = list(server.chat_calls)
    failures = sum((len(e.chosen) + len(e.rejected)) % 5 == 0 for e in picked)
    correct = sum(len(e.chosen) > len(e.rejected) and (len(e.chosen) + len(e.rejected)) % 5 != 0 for e in picked)
    assert 0 < failures < 40 and 0 < correct < 40 - failures
    assert len(calls) == 4 * 40
    for n, (result, mode) in enumerate(zip(out["results"], ["none", "static", "dynamic", "dynamic@2"], strict=True)):
        assert (result.mode, result.pairs, result.valid, result.failures) == (mode, 40, 40 - failures, failures)
        assert result.correct == correct
        assert result.accuracy == pytest.approx(correct / (40 - failures))
        assert result.accuracy_all == pytest.approx(correct / 40)
        examples_shown = calls[40 * n].first_user.count("## Example")
        assert examples_shown == {"none": 0, "static": 1, "dynamic": 4, "dynamic@2": 3}[mode]
    percents = [round(100 * correct / (40 - failures), 1), round(100 * correct / 40, 1)]
    assert out["rows"][0] == ["none", 40, 40 - failures, correct, failures, *percents]
    items = [json.loads(x) for x in (tmp_path / "human_pair_accuracy_items.jsonl").read_text().rstrip("\n").split("\n")]
    assert len(items) == 160 and sum(i["correct"] for i in items) == 4 * correct
    assert (tmp_path / "human_pair_accuracy.csv").read_text().startswith("demonstrations,pairs,valid,correct,failures")


def test_eval_cli_is_a_thin_wrapper_and_bad_input_is_one_line(tmp_path: Path) -> None:
    reply = Reply(json.dumps({"desired rank": [1, 0], "response": "A fine answer, surely."}))
    with OpenAIServer(lambda call, i: reply) as server:
        args = ["eval", "human-pair-accuracy", "--data", str(SHARED), "--subset", "harmless-base", "--k", "6"]
        args += [
            "--mode",
            "static",
            "--set",
            f"oracle.options.api_base={server.api_base}",
            "--set",
            "oracle.model=openai/x",
        ]
        args += ["--set", "oracle.options.serve_gguf=null", "--out", str(tmp_path)]
        result = CliRunner().invoke(app, args, terminal_width=200)
        assert result.exit_code == 0, result.output
        assert len(server.chat_calls) == 6
    saved = json.loads((tmp_path / "human_pair_accuracy.json").read_text())
    assert saved[0]["mode"] == "static" and saved[0]["pairs"] == 6 and saved[0]["valid"] == 6
    bad = CliRunner().invoke(app, ["eval", "human-pair-accuracy", "--data", str(tmp_path), "--mode", "static"])
    assert bad.exit_code == 2 and "no HH-RLHF subset found" in bad.output and "Traceback" not in bad.output
    bad = CliRunner().invoke(app, ["eval", "human-pair-accuracy", "--data", str(SHARED), "--mode", "dynamic@x"])
    assert bad.exit_code == 2 and "dynamic@<count>" in bad.output


@pytest.mark.slow
@pytest.mark.llamacpp
def test_oracle_accuracy_runs_with_the_embedded_local_oracle(tmp_path: Path) -> None:
    args = ["eval", "human-pair-accuracy", "--data", str(SHARED), "--subset", "harmless-base", "--k", "4"]
    result = CliRunner().invoke(app, [*args, "--mode", "static", "--out", str(tmp_path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "human_pair_accuracy.json").read_text())[0]
    assert saved["pairs"] == 4 and saved["valid"] + saved["failures"] == 4
    print(f"embedded oracle accuracy (static demonstration, 4 pairs): {saved['accuracy']:.2f}")


def test_hub_loading_maps_rows_like_the_local_folder(monkeypatch) -> None:
    import datasets

    rows = [
        {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"},
        {"chosen": "\n\nHuman: x\n\nAssistant: same", "rejected": "\n\nHuman: x\n\nAssistant: same"},
    ]
    seen = []

    def fake_load_dataset(name, data_dir, split):
        seen.append((name, data_dir, split))
        return rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples, report = load_hh_rlhf("hub", subsets=["helpful-base"], split="train")
    assert seen == [("Anthropic/hh-rlhf", "helpful-base", "train")]
    assert len(examples) == 1 and examples[0].chosen == "hello" and report.dropped["identical_replies"] == 1
    assert examples[0].source == "Anthropic/hh-rlhf/helpful-base/train:1"


def test_paper_configs_hold_the_papers_settings() -> None:
    from cyclealign.config import load_config
    from cyclealign.run.assembly import build_loss

    paths = sorted((REPO / "configs" / "paper").glob("*.yaml"))
    paths = [p for p in paths if "offline" not in yaml.safe_load(p.read_text())]  # `cyclealign train` baselines
    assert {p.stem for p in paths} >= {"cyclealign-pro-llama7b", "cyclealign-pro-alpaca7b", "ablation-no-icl"}
    for path in paths:
        cfg = load_config(path)
        assert (cfg.cycle.num_samples, cfg.cycle.max_interactions, build_loss(cfg).sft_weight) == (3, 5, 4.0), path
        assert (cfg.train.lr, cfg.train.max_length, cfg.train.zero_stage) == (5e-5, 512, 2), path
        assert cfg.oracle.name == "chatgpt" and cfg.loss.name in ("pro", "rrhf"), path
        assert cfg.data.source.startswith("hh-rlhf:") and cfg.data.max_prompts == 1000, path
        # prompt and answer together fit the paper's maximum sequence length
        assert cfg.whitebox.max_prompt_tokens + cfg.whitebox.max_new_tokens <= cfg.train.max_length, path
