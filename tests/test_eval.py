"""Evaluation: reward-model tables with tiny reward models of both kinds, the LLM judge's order
randomisation, oracle accuracy arithmetic, and the run report."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cyclealign.cli import app
from cyclealign.config import OracleConfig
from cyclealign.data.hh_rlhf import load_hh_rlhf, stratified_sample
from cyclealign.evaluate.commands import eval_judge, eval_oracle_accuracy, eval_reward
from cyclealign.evaluate.reward import PythiaRewardModel, RewardScorer
from cyclealign.protocols import Demonstration
from cyclealign.store import atomic_write_jsonl
from tests.support.openai_server import OpenAIServer, Reply
from tests.support.tiny_models import tiny_tokenizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh-rlhf"


def _classifier_dir(path: Path) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    tok = tiny_tokenizer(padding_side="right")
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
    )
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _pythia_dir(path: Path) -> Path:
    from transformers import GPTNeoXConfig

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
    model = PythiaRewardModel(cfg)
    torch.nn.init.normal_(model.out_proj.weight, std=0.5)
    model.save_dir(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["classifier", "oasst-pythia"])
def test_reward_table_layout_and_arithmetic(kind: str, tmp_path: Path) -> None:
    rm = _classifier_dir(tmp_path / "rm") if kind == "classifier" else _pythia_dir(tmp_path / "rm")
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
    rows = [json.loads(x) for x in (tmp_path / "eval" / "answers.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [e.id for e in picked] and len({r["score"] for r in rows}) > 1
    expected = round(sum(100 / (1 + math.exp(-r["score"])) for r in rows) / len(rows), 2)
    assert out["header"] == ["system", "harmless-base", "total"]
    assert out["rows"] == [["tiny", expected, expected]]
    csv = (tmp_path / "eval" / "table1_reward.csv").read_text().splitlines()
    assert csv[0] == "system,harmless-base,total" and csv[1] == f"tiny,{expected},{expected}"
    assert "| tiny |" in (tmp_path / "eval" / "table1_reward.md").read_text()


def test_pythia_reward_pools_the_last_real_token(tmp_path: Path) -> None:
    scorer = RewardScorer(_pythia_dir(tmp_path / "rm"), "oasst-pythia", batch_size=8)
    questions, answers = ["How do I bake bread?", "Why?"], ["Knead the dough and bake it for long.", "No."]
    batched = scorer.score(questions, answers)
    single = [scorer.score([q], [a])[0] for q, a in zip(questions, answers, strict=True)]
    assert batched == pytest.approx(single, abs=1e-5)
    text = scorer._oasst_text("q", "a")
    assert text.startswith("<|prompter|>q") and "<|assistant|>a" in text


def test_total_is_over_all_answers_across_subsets(tmp_path: Path) -> None:
    from cyclealign.evaluate.reward import ScoredAnswer, table1

    scored = [
        ScoredAnswer("1", "a", "q", "x", 0.0),
        ScoredAnswer("2", "b", "q", "x", 0.0),
        ScoredAnswer("3", "b", "q", "x", 100.0),
    ]
    header, rows = table1(scored)
    assert header == ["system", "a", "b", "total"] and rows == [[50.0, 75.0, round(200 / 3, 2)]]


def _answers(path: Path, n: int, tag: str) -> Path:
    atomic_write_jsonl(
        path,
        [
            {
                "id": str(i),
                "subset": ["harmless-base", "helpful-base"][i % 2],
                "question": f"q{i}",
                "answer": f"{tag} {i}",
            }
            for i in range(n)
        ],
    )
    return path


def _first_wins(call, index):
    return Reply(json.dumps({"reasoning": "The first one reads better.", "winner": "1"}))


@pytest.mark.parametrize("randomize", [True, False])
def test_judge_maps_randomised_order_back(randomize: bool, tmp_path: Path) -> None:
    a, b = _answers(tmp_path / "a.jsonl", 40, "alpha"), _answers(tmp_path / "b.jsonl", 40, "beta")
    with OpenAIServer(_first_wins) as server:
        cfg = OracleConfig(name="local", api_base=server.api_base, model="openai/judge", serve_gguf=None, cache=False)
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
        assert total[1] == pytest.approx(100 * a_first / 40) and total[3] == pytest.approx(100 - total[1])
        assert 30 <= total[1] <= 70  # a judge that always picks the first answer ends near 50/50
    else:
        assert a_first == 40 and total[1] == 100.0
    assert out["header"][1] == "alpha win %" and {r[0] for r in out["rows"]} == {
        "harmless-base",
        "helpful-base",
        "total",
    }


def test_oracle_accuracy_arithmetic_and_demonstration_modes(tmp_path: Path) -> None:
    examples, _ = load_hh_rlhf(SHARED, subsets=["harmless-base"], split="test")
    picked = {e.prompt.text: e for e in stratified_sample(examples, 40, seed=3)}
    demos = tmp_path / "demos.jsonl"
    atomic_write_jsonl(demos, [Demonstration(f"p{i}", ("good", "bad"), (0, 1)).__dict__ for i in range(5)])

    with OpenAIServer(
        lambda call, i: Reply(json.dumps({"desired rank": [0, 1], "response": "A fine answer."}))
    ) as server:
        cfg = OracleConfig(name="local", api_base=server.api_base, model="openai/acc", serve_gguf=None, cache=False)
        out = eval_oracle_accuracy(
            data=SHARED, oracle=cfg, demos=demos, subsets=["harmless-base"], k=40, seed=3, out_dir=tmp_path
        )
        calls = list(server.chat_calls)
    assert len(calls) == 120
    by_mode = {r.mode: r for r in out["results"]}
    # Independently: the oracle always picks what is shown first; it is right when the chosen reply was shown first.
    for mode, chunk in zip(["none", "static", "dynamic"], [calls[:40], calls[40:80], calls[80:]], strict=True):
        right = 0
        for call in chunk:
            text = call.first_user
            task = text[text.index("## Your task") :] if "## Your task" in text else text
            first = re.search(r"<<<Response-0>>>\n(.*?)\n<<<END Response-0>>>", task, re.DOTALL).group(1)
            prompt = re.search(r"<<<INSTRUCTION>>>\n(.*?)\n<<<END INSTRUCTION>>>", task, re.DOTALL).group(1)
            right += first == picked[prompt].chosen
        assert by_mode[mode].correct == right and by_mode[mode].valid == 40
        assert by_mode[mode].accuracy == pytest.approx(right / 40)
        examples_shown = chunk[0].first_user.count("## Example")
        assert examples_shown == {"none": 0, "static": 1, "dynamic": 4}[mode]
    assert out["rows"][0][:4] == ["none", 40, 40, by_mode["none"].correct]
    assert (tmp_path / "oracle_accuracy.csv").exists()


@pytest.mark.slow
@pytest.mark.llamacpp
def test_oracle_accuracy_runs_with_the_embedded_local_oracle(tmp_path: Path, capsys) -> None:
    out = eval_oracle_accuracy(
        data=SHARED, oracle=OracleConfig(), modes=["static"], subsets=["harmless-base"], k=4, seed=0, out_dir=tmp_path
    )
    result = out["results"][0]
    assert result.pairs == 4 and result.valid + result.failures == 4
    print(f"embedded oracle accuracy (static demo, 4 pairs): {result.accuracy:.2f}")


def test_report_writes_images_and_a_page_that_references_them(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _make_run(tmp_path, run_dir)
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "table1_reward.md").write_text(
        "### Table 1\n\n| system | total |\n|---|---|\n| tiny | 51.2 |\n"
    )
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    report = run_dir / "report"
    pngs = sorted(report.glob("*.png"))
    assert [p.name for p in pngs] == ["agreement.png", "losses.png", "oracle.png"]
    import matplotlib.image

    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(p).shape[0] > 100
    md = (report / "report.md").read_text()
    assert all(f"]({p.name})" in md for p in pngs) and "| tiny | 51.2 |" in md
    page = (report / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "tiny" in page


def test_report_on_a_non_run_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no interactions.jsonl" in result.output


def _make_run(tmp_path: Path, run_dir: Path) -> None:
    from cyclealign.config import load_config
    from cyclealign.run import run
    from tests.support.runs import tiny_overrides
    from tests.support.tiny_models import tiny_llama_dir

    model = tiny_llama_dir(tmp_path / "model")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "How do I bake bread?"}) + "\n" + json.dumps({"prompt": "Why?"}) + "\n")
    with OpenAIServer() as server:
        extra = ("whitebox.max_new_tokens=8", "cycle.max_interactions=2", "cycle.early_stop=false")
        run(load_config(overrides=tiny_overrides(model, prompts, server.api_base, run_dir, *extra)))


def test_eval_reward_generates_with_a_trained_runs_adapter(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _make_run(tmp_path, run_dir)
    rm = _classifier_dir(tmp_path / "rm")
    out = eval_reward(data=SHARED, reward_model=rm, run_dir=run_dir, subsets=["harmless-base"], k=2, max_new_tokens=6)
    rows = [json.loads(x) for x in (run_dir / "eval" / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and out["rows"][0][0] == "run"
    from cyclealign.evaluate.generate import load_system

    wb = load_system(run_dir=run_dir)
    assert type(wb.model).__name__.startswith("PeftModel")  # the trained adapter is applied


def test_eval_cli_is_a_thin_wrapper(tmp_path: Path) -> None:
    reply = Reply(json.dumps({"desired rank": [1, 0], "response": "A fine answer, surely."}))
    with OpenAIServer(lambda call, i: reply) as server:
        result = CliRunner().invoke(
            app,
            [
                "eval",
                "oracle-accuracy",
                "--data",
                str(SHARED),
                "--subset",
                "harmless-base",
                "--k",
                "6",
                "--mode",
                "static",
                "--set",
                f"oracle.api_base={server.api_base}",
                "--set",
                "oracle.model=openai/x",
                "--set",
                "oracle.serve_gguf=null",
                "--out",
                str(tmp_path),
            ],
            terminal_width=200,
        )
        assert result.exit_code == 0, result.output
        assert len(server.chat_calls) == 6
    saved = json.loads((tmp_path / "oracle_accuracy.json").read_text())
    assert saved[0]["mode"] == "static" and saved[0]["pairs"] == 6 and saved[0]["valid"] == 6


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
