"""`cyclealign aligner correct`: an upstream behind a real OpenAI-speaking server (through litellm), a tiny
real corrector, the answer cache; then `eval reward` and `eval judge` on the corrected file as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cyclealign.aligner import Corrector, CorrectorPrompt
from cyclealign.aligner.correct import correct, read_questions
from cyclealign.cli.main import app
from cyclealign.errors import DataError
from tests.support.openai_server import OpenAIServer, Reply
from tests.support.tiny_models import tiny_llama, tiny_tokenizer

QUESTIONS = ["How do I bake bread?", "Why is the sky blue?", "How can I keep basil alive?"]


def _corrector_dir(path: Path) -> Path:
    """Any tiny causal LM saved as a corrector (its rewrites need not be good, only real)."""
    tok = tiny_tokenizer()
    Corrector(tiny_llama(len(tok), seed=3), tok, CorrectorPrompt(max_prompt_tokens=256)).save(path)
    return path


def _upstream(call, index):
    return Reply(f"Answer to: {call.last_user}")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def corrected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The corrected file of QUESTIONS (run twice: the second run must send nothing), and the corrector."""
    tmp = tmp_path_factory.mktemp("correct")
    corrector = _corrector_dir(tmp / "corrector")
    questions = tmp / "questions.jsonl"
    questions.write_text("".join(json.dumps({"id": f"q{i}", "question": q}) + "\n" for i, q in enumerate(QUESTIONS)))
    out = tmp / "out" / "corrected.jsonl"
    with OpenAIServer(_upstream) as server:
        args = ["aligner", "correct", str(questions), "--corrector", str(corrector), "--upstream", "openai/up"]
        args += [
            "--api-base",
            server.api_base,
            "--out",
            str(out),
            "--max-new-tokens",
            "6",
            "--set",
            "oracle.concurrency=2",
        ]
        result = CliRunner().invoke(app, args, terminal_width=200)
        assert result.exit_code == 0, result.output
        assert len(server.chat_calls) == 3 and server.max_in_flight <= 2
        first = out.read_text()
        again = CliRunner().invoke(app, args, terminal_width=200)
        assert again.exit_code == 0, again.output
        assert len(server.chat_calls) == 3 and "3 from the cache" in again.output  # no upstream call the second time
        assert out.read_text() == first  # greedy correction: the same file
    assert (out.parent / "upstream_cache.sqlite").is_file()
    return out, corrector


def test_the_corrected_file(corrected: tuple[Path, Path]) -> None:
    out, corrector = corrected
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["q0", "q1", "q2"]
    assert all({"question", "original", "corrected"} <= set(r) for r in rows)
    assert [r["question"] for r in rows] == QUESTIONS
    assert [r["original"] for r in rows] == [f"Answer to: {q}" for q in QUESTIONS]
    model = Corrector.load(corrector)
    expected = model.correct([(r["question"], r["original"]) for r in rows], 6, batch_size=1)
    assert [r["corrected"] for r in rows] == expected  # the corrector's rewrite of the upstream's answer
    seen = model.encode(rows[0]["question"], rows[0]["original"])
    assert model.tokenizer.decode(seen).count("Answer to: How do I bake bread?") == 1


def test_eval_reward_scores_either_column_of_the_corrected_file(corrected: tuple[Path, Path], tmp_path: Path) -> None:
    from tests.support.tiny_models import tiny_reward_model_dir

    out, _ = corrected
    rm = tiny_reward_model_dir(tmp_path / "rm")
    scored = {}
    for column in ("original", "corrected"):
        target = tmp_path / column
        args = ["eval", "reward", "--reward-model", str(rm), "--answers", str(out), "--column", column]
        result = CliRunner().invoke(app, [*args, "--out", str(target)], terminal_width=200)
        assert result.exit_code == 0, result.output
        scored[column] = _rows(target / "answers.jsonl")
        assert [r["answer"] for r in scored[column]] == [r[column] for r in _rows(out)]
        assert (target / "table1_reward.csv").read_text().splitlines()[1].startswith(f"corrected:{column},")
    assert [r["score"] for r in scored["original"]] != [r["score"] for r in scored["corrected"]]


def test_eval_judge_compares_original_and_corrected_from_one_file(corrected: tuple[Path, Path], tmp_path: Path) -> None:
    out, _ = corrected
    by_question = {r["question"]: r for r in _rows(out)}

    def prefers_the_correction(call, index):
        text = call.first_user
        row = next(r for q, r in by_question.items() if q in text)
        first = text.split("<<<ANSWER 1>>>\n", 1)[1].split("\n<<<END ANSWER 1>>>", 1)[0]
        winner = "1" if first == row["corrected"] else "2"
        return Reply(json.dumps({"reasoning": "The revision is better.", "winner": winner}))

    with OpenAIServer(prefers_the_correction) as server:
        args = [
            "eval",
            "judge",
            str(out),
            "--out",
            str(tmp_path),
            "--set",
            f"oracle.options.api_base={server.api_base}",
        ]
        args += [
            "--set",
            "oracle.model=openai/judge",
            "--set",
            "oracle.options.serve_gguf=null",
            "--set",
            "oracle.cache=false",
        ]
        result = CliRunner().invoke(app, args, terminal_width=200)
        assert result.exit_code == 0, result.output
        assert len(server.chat_calls) == 3
    table = (tmp_path / "table2_judge.csv").read_text().splitlines()
    assert table[0] == "subset,upstream win %,tie %,corrected win %,judged,failed,truncated"
    assert table[-1] == "total,0.0,0.0,100.0,3,0,0"
    result = CliRunner().invoke(app, ["eval", "judge", str(tmp_path / "judgements.jsonl")])
    assert result.exit_code == 2 and "holds original and corrected answers" in result.output


def test_python_api_wraps_any_callable_upstream(corrected: tuple[Path, Path]) -> None:
    _, corrector = corrected
    pairs = correct(["be kind", "Why?"], str.upper, corrector, max_new_tokens=4)
    assert [o for o, _ in pairs] == ["BE KIND", "WHY?"]
    assert [c for _, c in pairs] == Corrector.load(corrector).correct([("be kind", "BE KIND"), ("Why?", "WHY?")], 4)


def test_questions_files_name_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "fine"}\n{"prompt": "also fine"}\n{"text": "no question"}\n')
    with pytest.raises(DataError, match=r"q\.jsonl:3: key 'question' \(or 'prompt'\) is missing"):
        read_questions(path)
    assert [r.prompt.text for r in read_questions(path, lenient=True)] == ["fine", "also fine"]
    path.write_text('{"id": 1, "question": "a"}\n{"id": 1, "question": "b"}\n')
    with pytest.raises(DataError, match=r"q\.jsonl:2: key 'id': '1' appears twice"):
        read_questions(path)
