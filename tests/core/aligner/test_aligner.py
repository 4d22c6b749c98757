"""The Aligner corrector: its data, its loss mask, its training, and greedy correction from a saved directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from cyclealign.aligner import Corrector, CorrectorPrompt
from cyclealign.aligner.settings import AlignerTrainConfig
from cyclealign.aligner.training import examples, train_corrector
from cyclealign.aligner.triples import Triple, read_triples, triples_from_run
from cyclealign.config import load_config
from cyclealign.errors import ConfigError, DataError, SetupError
from cyclealign.whitebox.batching import encode_candidates
from cyclealign.whitebox.prefix import encode_shared
from tests.support.tiny_models import tiny_llama_dir

QUIET = Console(quiet=True)
COPY = [
    {"question": "How do I bake bread?", "answer": "Bake it.", "correction": "Mix flour, water and yeast, then bake."},
    {"question": "Why is the sky blue?", "answer": "No idea.", "correction": "Air scatters short wavelengths more."},
    {"question": "Tips for running?", "answer": "Run.", "correction": "Start slowly, run for one minute and walk."},
    {
        "question": "How do I keep basil alive?",
        "answer": "Water.",
        "correction": "Give it sunlight and regular watering.",
    },
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("model") / "tiny")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(model_dir: Path, run_dir: Path, data: Path, *sets: str) -> AlignerTrainConfig:
    base = [f"whitebox.model={model_dir}", f"aligner.data=[{data}]", f"run.dir={run_dir}", "run.progress=false"]
    return load_config(None, [*base, "whitebox.finetune=full", *sets], schema=AlignerTrainConfig)


def test_triples_come_from_json_and_jsonl_in_aligners_field_names(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text(json.dumps(COPY))
    from_json = read_triples(tmp_path / "t.json")
    from_jsonl = read_triples(write_jsonl(tmp_path / "t.jsonl", COPY))
    assert [t.correction for t in from_json] == [t.correction for t in from_jsonl] == [r["correction"] for r in COPY]
    assert from_json[1].source.endswith("t.json:[1]") and from_jsonl[1].source.endswith("t.jsonl:2")
    write_jsonl(tmp_path / "bad.jsonl", [COPY[0], {"question": "q", "answer": "a", "corrected": "c"}])
    with pytest.raises(DataError, match=r'bad.jsonl:2: field "correction" must be a string'):
        read_triples(tmp_path / "bad.jsonl")


def test_the_prompt_template_is_checked_and_stored(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\{answer\}"):
        CorrectorPrompt("Question: {question}")
    with pytest.raises(ConfigError, match="braces"):
        CorrectorPrompt("{question} {answer} {other}")
    CorrectorPrompt("Q: {question}\nA: {answer}", 99).save(tmp_path)
    assert CorrectorPrompt.load(tmp_path) == CorrectorPrompt("Q: {question}\nA: {answer}", 99)
    with pytest.raises(SetupError, match="not a corrector"):
        Corrector.load(tmp_path / "elsewhere")


def test_the_loss_sees_only_the_correction_and_eos_and_the_prompt_is_the_inference_prompt(model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(model_dir)
    prompt = CorrectorPrompt()
    corrector = Corrector(AutoModelForCausalLM.from_pretrained(model_dir), tok, prompt)
    triples = [Triple(r["question"], r["answer"], r["correction"], "mem") for r in COPY[:3]]
    batches = [ex.loss_batch() for ex in examples(triples, prompt)]
    enc = encode_candidates(tok, [b.prompt for b in batches], [b.candidates for b in batches], 512, 512)
    for row, t in enumerate(triples):
        ids, mask, attn = enc.input_ids[row], enc.response_mask[row], enc.attention_mask[row].bool()
        target = tok(t.correction, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert ids[mask].tolist() == target  # the correction and EOS, nothing else
        assert ids[attn & ~mask].tolist() == corrector.encode(t.question, t.answer)  # every prompt token unlabelled
        assert t.answer in tok.decode(ids[attn & ~mask])
    shared = encode_shared(tok, [b.prompt for b in batches], [b.candidates for b in batches], 512, 512)
    for row, t in enumerate(triples):  # the prefix-sharing layout: the prompt pass carries no label at all
        target = tok(t.correction, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert shared.response_ids[row][shared.response_mask[row].bool()].tolist() == target
        assert shared.prompt_ids[row][shared.prompt_mask[row].bool()].tolist() == corrector.encode(t.question, t.answer)


def test_training_on_triples_lowers_the_heldout_loss_and_saves_a_loadable_corrector(
    model_dir: Path, tmp_path: Path
) -> None:
    rows = [
        {"question": f"Question {i}: {q['question']}", "answer": q["answer"], "correction": q["correction"]}
        for i in range(6)
        for q in COPY
    ]
    data = write_jsonl(tmp_path / "triples.jsonl", rows)
    cfg = config(
        model_dir, tmp_path / "run", data, "train.lr=0.003", "aligner.heldout_fraction=0.25", "aligner.epochs=2"
    )
    result = train_corrector(cfg, console=QUIET)
    before, after = result.summary["heldout_before"], result.summary["heldout_after"]
    assert result.summary["heldout_examples"] == 6 and result.summary["train_examples"] == {"warmup": 18, "correct": 18}
    assert after["loss"] < before["loss"] - 0.5, (before, after)
    steps = [json.loads(s) for s in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert [s["stage"] for s in steps] == ["warmup"] * 5 + ["correct"] * 10  # warm-up first, then corrections
    corrector = Corrector.load(tmp_path / "run" / "corrector", device="cpu")
    assert corrector.prompt == CorrectorPrompt(max_prompt_tokens=768)
    out = corrector.correct([(r["question"], r["answer"]) for r in rows[:3]], max_new_tokens=4, batch_size=2)
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    card = ModelCard.load(tmp_path / "run" / "corrector" / "README.md").data.to_dict()  # its model card
    assert card["library_name"] == "transformers" and card["base_model"] == str(model_dir)
    assert "cyclealign" in card["tags"] and card["cyclealign"]["training_steps"] == 15
    assert card["cyclealign"]["data_source"] == [str(data)]


def test_after_the_identity_warmup_greedy_output_reproduces_a_training_answer(model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "triples.jsonl", COPY)
    sets = ["train.lr=0.003", "aligner.heldout_fraction=0", "aligner.epochs=0", "aligner.warmup_epochs=60"]
    result = train_corrector(config(model_dir, tmp_path / "run", data, *sets), console=QUIET)
    assert result.summary["steps"] == 60 and result.summary["train_examples"] == {"warmup": 4}
    corrector = Corrector.load(tmp_path / "run" / "corrector", device="cpu")
    pairs = [(r["question"], r["answer"]) for r in COPY]
    assert corrector.correct(pairs, max_new_tokens=12, batch_size=4) == [r["answer"] for r in COPY]


def test_triples_from_a_run_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    records = [
        {"prompt": "Why?", "candidates": ["a", "b", "c"], "oracle": {"order": [2, 0, 1], "response": "Because."}},
        {"prompt": "How?", "candidates": ["x", "y"], "oracle": {"order": None, "response": None}},  # the oracle failed
    ]
    write_jsonl(run / "interactions.jsonl", records)
    where = f"{run / 'interactions.jsonl'}:1"  # every sample of the ranked interaction, as `export --format aligner`
    assert triples_from_run(run) == [Triple("Why?", s, "Because.", where) for s in ("a", "b", "c")]
    with pytest.raises(DataError, match=r"no interactions\.jsonl"):
        triples_from_run(tmp_path)


def test_export_writes_exactly_trls_columns_and_cyclealign_train_trains_on_them(
    model_dir: Path, tmp_path: Path
) -> None:
    import datasets
    from typer.testing import CliRunner

    from cyclealign.cli.main import app

    corrected = [{"question": r["question"], "original": r["answer"], "corrected": r["correction"]} for r in COPY * 3]
    corrected.append({"question": "Same?", "original": "Yes.", "corrected": "Yes."})  # nothing to prefer
    source = write_jsonl(tmp_path / "corrected.jsonl", corrected)
    runner = CliRunner()
    out = runner.invoke(app, ["aligner", "export", str(source), "-o", str(tmp_path / "prefs.jsonl")])
    assert out.exit_code == 0, out.output
    said = " ".join(out.output.split())  # the console wraps long paths at its width
    assert "wrote 12 preference pairs" in said and "1 unchanged left out" in said
    table = datasets.load_dataset("json", data_files=str(tmp_path / "prefs.jsonl"), split="train")
    assert table.column_names == ["prompt", "chosen", "rejected"] and len(table) == 12
    assert table[0] == {"prompt": COPY[0]["question"], "chosen": COPY[0]["correction"], "rejected": COPY[0]["answer"]}

    sets = [f"whitebox.model={model_dir}", f"offline.source={tmp_path / 'prefs.jsonl'}", "loss.name=dpo"]
    sets += [
        f"run.dir={tmp_path / 'run'}",
        "run.progress=false",
        "offline.max_steps=2",
        "offline.heldout_fraction=0.25",
    ]
    out = runner.invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert out.exit_code == 0, out.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["loss"] == "dpo" and summary["heldout_examples"] == 3

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "a", "correction": "c"}])
    out = runner.invoke(app, ["aligner", "export", str(bad), "-o", str(tmp_path / "x.jsonl")])
    assert out.exit_code == 2 and "bad.jsonl:1: expected string fields question, original, corrected" in out.output


def test_batched_correction_equals_one_pair_at_a_time(model_dir: Path) -> None:
    corrector = Corrector(AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir))
    pairs = [(r["question"], r["answer"]) for r in COPY]
    together = corrector.correct(pairs, max_new_tokens=6, batch_size=4)
    alone = [corrector.correct([p], max_new_tokens=6)[0] for p in pairs]
    assert together == alone


def test_a_stop_in_the_warmup_then_resume_gives_the_uninterrupted_corrector(model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from cyclealign.aligner.training import build_recipe, resume_corrector

    data = write_jsonl(tmp_path / "triples.jsonl", COPY * 2)
    sets = ["train.lr=0.003", "aligner.heldout_fraction=0.25", "aligner.batch_size=2", "run.checkpoint_interval_s=0"]
    whole = train_corrector(config(model_dir, tmp_path / "whole", data, *sets), console=QUIET)
    stopped = build_recipe(config(model_dir, tmp_path / "stopped", data, *sets), console=QUIET)
    stopped.setup()
    step = stopped.trainer.step

    def step_then_stop(batches):  # the first Ctrl+C, during the warm-up's second step
        out = step(batches)
        stopped.stop.requested = stopped.totals.steps == 1
        return out

    stopped.trainer.step = step_then_stop
    stopped.train()
    assert stopped.cleanup()["steps"] == 2 and (tmp_path / "stopped" / "corrector" / "corrector.json").is_file()
    resumed = resume_corrector(tmp_path / "stopped", console=QUIET)
    assert resumed.summary["steps"] == whole.summary["steps"] == 6  # 3 warm-up + 3 correction steps
    a = load_file(str(tmp_path / "whole" / "corrector" / "model.safetensors"))
    b = load_file(str(tmp_path / "stopped" / "corrector" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.summary["heldout_after"] == whole.summary["heldout_after"]
