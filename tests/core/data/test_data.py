"""HH-RLHF through the real loader on the real harmless-base test split, plus prompt sources."""

from __future__ import annotations

import gzip
import itertools
import json
import sys
from pathlib import Path

import pytest

from cyclealign.config import DataConfig
from cyclealign.data import DataError, load_prompts
from cyclealign.data.builtin import MUST_REFUSE, builtin_prompts
from cyclealign.data.hh_rlhf import (
    FILTER_RULES,
    SUBSETS,
    load_hh_rlhf,
    parse_pair,
    split_dialogue,
    stratified_sample,
    to_dataset,
)
from tests.support.paths import REPO
from tests.support.tiny_models import tiny_tokenizer

SHARED = REPO.parent / "shared" / "data" / "hh-rlhf"
HARMLESS_TEST = REPO.parent / "shared/data/hh-rlhf/harmless-base/test.jsonl.gz"


def test_real_harmless_base_loads_and_the_filter_report_adds_up() -> None:
    assert HARMLESS_TEST.is_file()
    examples, report = load_hh_rlhf(HARMLESS_TEST.parents[1], subsets=["harmless-base"], split="test")
    with gzip.open(HARMLESS_TEST, "rt", encoding="utf-8") as f:
        assert report.read == sum(1 for line in f if line.strip()) == 2312
    assert len(examples) == report.kept == report.read - sum(report.dropped.values())
    assert report.per_subset["harmless-base"]["kept"] == len(examples)
    assert set(report.dropped) <= set(FILTER_RULES) and report.malformed_skipped == 0
    assert f"kept {len(examples)}" in report.summary()
    for ex in examples:
        roles = [m.role for m in ex.prompt.messages]
        assert roles[-1] == "user" and roles[0] == "user"  # every context ends (and starts) with a Human turn
        assert all(a != b for a, b in itertools.pairwise(roles))  # turns alternate
        assert all(m.content for m in ex.prompt.messages)
        assert ex.chosen != ex.rejected and ex.chosen and ex.rejected
        assert "\n\nHuman:" not in ex.chosen and "\n\nAssistant:" not in ex.rejected
        assert ex.subset == "harmless-base" and ex.source == f"{HARMLESS_TEST}:{ex.id.rsplit('-', 1)[1]}"


def test_each_filter_rule_is_named_when_it_applies() -> None:
    ctx = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how to bake?"
    context, good, bad, merged = parse_pair(ctx + "\n\nAssistant: knead", ctx + "\n\nAssistant: no")
    assert (good, bad, merged) == ("knead", "no", False)
    assert context == [("Human", "hi"), ("Assistant", "hello"), ("Human", "how to bake?")]
    cases = {
        "no_assistant_turn": ("\n\nHuman: only a question", "\n\nHuman: only a question"),
        "not_human_first": ("Human: no leading break\n\nAssistant: a", ctx + "\n\nAssistant: b"),
        "turn_count_mismatch": (ctx + "\n\nAssistant: a", "\n\nHuman: how to bake?\n\nAssistant: b"),
        "ends_with_human": (ctx, ctx),
        "context_mismatch": (ctx + "\n\nAssistant: a", ctx.replace("hello", "hey") + "\n\nAssistant: b"),
        "empty_reply": (ctx + "\n\nAssistant:", ctx + "\n\nAssistant: no"),
        "identical_replies": (ctx + "\n\nAssistant: same", ctx + "\n\nAssistant: same"),
    }
    assert set(cases) == set(FILTER_RULES)
    for rule, (chosen, rejected) in cases.items():
        assert parse_pair(chosen, rejected) == rule, rule


def test_consecutive_turns_merge_and_untagged_paragraphs_stay() -> None:
    turns, merged = split_dialogue("\n\nHuman: a\n\nmore of a\n\nAssistant: b\n\nAssistant: c")
    assert merged and turns == [("Human", "a\n\nmore of a"), ("Assistant", "b\nc")]


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _pair(question: str, good: str = "a", bad: str = "b") -> str:
    return json.dumps(
        {
            "chosen": f"\n\nHuman: {question}\n\nAssistant: {good}",
            "rejected": f"\n\nHuman: {question}\n\nAssistant: {bad}",
        }
    )


def test_malformed_rows_name_file_and_line_or_are_counted_when_lenient(tmp_path: Path) -> None:
    path = tmp_path / "helpful-base" / "test.jsonl.gz"
    _write(path, [_pair("q"), "{not json", json.dumps({"chosen": 3}), _pair("r")])
    with pytest.raises(DataError, match=r"helpful-base/test\.jsonl\.gz:2: "):
        load_hh_rlhf(tmp_path)
    examples, report = load_hh_rlhf(tmp_path, lenient=True)
    assert [e.source.rsplit(":", 1)[1] for e in examples] == ["1", "4"] and report.malformed_skipped == 2
    assert "malformed rows skipped 2" in report.summary()


def test_stratified_sampling_spreads_over_subsets(tmp_path: Path) -> None:
    for i, subset in enumerate(SUBSETS):
        _write(tmp_path / subset / "train.jsonl.gz", [_pair(f"{subset} {k}") for k in range(10 + 5 * i)])
    examples, report = load_hh_rlhf(tmp_path, split="train")
    assert set(report.per_subset) == set(SUBSETS)
    sample = stratified_sample(examples, 21, seed=1)
    counts = {s: sum(ex.subset == s for ex in sample) for s in SUBSETS}
    assert len(sample) == 21 and sorted(counts.values()) == [5, 5, 5, 6]
    assert counts["helpful-rejection-sampled"] == 6  # the leftover goes to the largest subset
    assert [e.id for e in stratified_sample(examples, 21, seed=1)] == [e.id for e in sample]
    assert [e.id for e in stratified_sample(examples, 21, seed=2)] != [e.id for e in sample]
    prompts = load_prompts(DataConfig(source=f"hh-rlhf:{tmp_path}", max_prompts=8), seed=0)
    assert len(prompts) == 8 and all(p.messages[-1].role == "user" for p in prompts)
    assert len({p.messages[0].content.split()[0] for p in prompts}) == 4  # all four subsets


def test_context_renders_through_the_chat_template_and_converts_to_a_dataset() -> None:
    examples, _ = load_hh_rlhf(SHARED, subsets=["harmless-base"])
    multi = next(ex for ex in examples if len(ex.prompt.messages) >= 3)
    rendered = multi.render(tiny_tokenizer())
    assert rendered.startswith(f"<|user|>{multi.prompt.messages[0].content}</s><|assistant|>")
    assert rendered.endswith(f"{multi.prompt.messages[-1].content}</s><|assistant|>")
    ds = to_dataset(examples[:5])
    assert ds.column_names == ["id", "subset", "messages", "chosen", "rejected", "source"]
    assert ds[0]["messages"][-1]["role"] == "user" and ds[0]["chosen"] == examples[0].chosen


def test_missing_datasets_names_the_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match=r'pip install "cyclealign-core\[eval\]"'):
        load_hh_rlhf("hub", subsets=["helpful-base"])


def test_builtin_prompts_cover_the_three_kinds() -> None:
    prompts = builtin_prompts()
    assert len(prompts) >= 48 and len({p.id for p in prompts}) == len(prompts)
    assert sum("refuse" in p.id for p in prompts) == len(MUST_REFUSE) >= 10
    first = load_prompts(DataConfig(max_prompts=6), seed=0)
    assert len(first) == 6 and first == load_prompts(DataConfig(max_prompts=6), seed=0)


def test_jsonl_prompts_accept_both_shapes_and_name_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    rows = [
        {"prompt": "Plain question?"},
        {
            "id": "chat",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "and now?"},
            ],
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    prompts = load_prompts(DataConfig(source=str(path), max_prompts=None, shuffle=False))
    assert [p.id for p in prompts] == ["p-1", "chat"] and len(prompts[1].messages) == 3
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
    with pytest.raises(DataError, match=r"p\.jsonl:2: .*role"):
        load_prompts(DataConfig(source=str(path)))
    with pytest.warns(UserWarning, match="skipped 1 malformed rows"):
        kept = load_prompts(DataConfig(source=str(path), lenient=True))
    assert [p.text for p in kept] == ["Plain question?"]


def test_lenient_hh_rlhf_training_source_warns_with_the_count(tmp_path: Path) -> None:
    _write(tmp_path / "helpful-online" / "train.jsonl.gz", [_pair("q1"), "[1, 2]", _pair("q2")])
    with pytest.raises(DataError, match=r"helpful-online/train\.jsonl\.gz:2: "):
        load_prompts(DataConfig(source=f"hh-rlhf:{tmp_path}"))
    with pytest.warns(UserWarning, match="malformed rows skipped 1"):
        prompts = load_prompts(DataConfig(source=f"hh-rlhf:{tmp_path}", lenient=True), seed=0)
    assert sorted(p.text for p in prompts) == ["q1", "q2"]


def test_missing_hh_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no HH-RLHF subset found"):
        load_hh_rlhf(tmp_path)
    with pytest.raises(DataError, match="unknown HH-RLHF subset 'harmful'"):
        load_hh_rlhf(tmp_path, subsets=["harmful"])


def test_one_jsonl_reader_for_plain_and_gzip_files(tmp_path: Path) -> None:
    from cyclealign.jsonl import JsonlReader, read_jsonl

    plain, packed = tmp_path / "rows.jsonl", tmp_path / "rows.jsonl.gz"
    plain.write_text('{"a": 1}\n\n[2]\n')
    _write(packed, ['{"a": 1}', "", "[2]"])
    assert read_jsonl(plain) == read_jsonl(packed) == [{"a": 1}, [2]]
    assert list(JsonlReader(packed)) == [(1, {"a": 1}), (3, [2])]  # line numbers count blank lines too

    plain.write_text('{"a": 1}\n{oops\n[3]\n')
    with pytest.raises(DataError, match=r"rows\.jsonl:2: not valid JSON \(.* at column 2\) \(try lenient\)"):
        list(JsonlReader(plain, hint="try lenient"))
    reader = JsonlReader(plain, lenient=True)
    rows = [row for _, row in reader]
    reader.reject(3, "a row the caller cannot use")
    assert rows == [{"a": 1}, [3]] and reader.skipped == 2
    with pytest.raises(DataError, match=r"rows\.jsonl:3: a row the caller cannot use$"):
        JsonlReader(plain).reject(3, "a row the caller cannot use")

    packed.write_bytes(gzip.compress(b'{"a": 1}\n' * 100)[:-20])  # truncated
    with pytest.raises(DataError, match=r"rows\.jsonl\.gz: cannot be read"):
        read_jsonl(packed)
    with pytest.raises(DataError, match=r"nope\.jsonl: cannot be read"):
        read_jsonl(tmp_path / "nope.jsonl")
