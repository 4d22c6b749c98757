"""HH-RLHF through the real loader on the real harmless-base test split, plus prompt sources."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from cyclealign.config import DataConfig
from cyclealign.data import DataError, load_prompts
from cyclealign.data.builtin import MUST_REFUSE, builtin_prompts
from cyclealign.data.hh_rlhf import SUBSETS, load_hh_rlhf, parse_pair, stratified_sample

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh-rlhf"


def test_real_harmless_base_loads_and_the_filter_report_adds_up() -> None:
    examples, report = load_hh_rlhf(SHARED, subsets=["harmless-base"], split="test")
    assert report.read == 2312
    assert len(examples) == report.kept == report.read - sum(report.dropped.values())
    assert report.per_subset["harmless-base"]["kept"] == len(examples)
    assert set(report.dropped) <= {"unparsable", "context_mismatch", "empty_reply", "identical_replies"}
    for ex in examples:
        assert ex.prompt.messages[-1].role == "user"  # every context ends with a Human turn
        assert ex.prompt.messages[0].role == "user"
        assert all(m.content for m in ex.prompt.messages)
        assert ex.chosen != ex.rejected and ex.chosen and ex.rejected
        assert ex.subset == "harmless-base" and ex.source.endswith(ex.id.rsplit("-", 1)[1])


def test_parse_pair_rules() -> None:
    ctx = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how to bake?"
    assert parse_pair(ctx + "\n\nAssistant: knead", ctx + "\n\nAssistant: no")[1:] == ("knead", "no")
    assert parse_pair(ctx + "\n\nAssistant: same", ctx + "\n\nAssistant: same") == "identical_replies"
    assert parse_pair(ctx + "\n\nAssistant:", ctx + "\n\nAssistant: no") == "empty_reply"
    assert parse_pair(ctx + "\n\nAssistant: a", "\n\nHuman: other\n\nAssistant: b") == "context_mismatch"
    assert parse_pair("Human: no leading break\n\nAssistant: a", ctx + "\n\nAssistant: b") == "unparsable"


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def test_malformed_rows_name_file_and_line_or_are_counted_when_lenient(tmp_path: Path) -> None:
    good = json.dumps({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"})
    path = tmp_path / "helpful-base" / "test.jsonl.gz"
    _write(path, [good, "{not json", json.dumps({"chosen": 3}), good])
    with pytest.raises(DataError, match=r"helpful-base/test\.jsonl\.gz:2"):
        load_hh_rlhf(tmp_path)
    examples, report = load_hh_rlhf(tmp_path, lenient=True)
    assert len(examples) == 2 and report.malformed_skipped == 2


def test_stratified_sampling_spreads_over_subsets(tmp_path: Path) -> None:
    for i, subset in enumerate(SUBSETS):
        rows = [
            json.dumps(
                {
                    "chosen": f"\n\nHuman: {subset} {k}\n\nAssistant: a",
                    "rejected": f"\n\nHuman: {subset} {k}\n\nAssistant: b",
                }
            )
            for k in range(10 + 5 * i)
        ]
        _write(tmp_path / subset / "train.jsonl.gz", rows)
    examples, _ = load_hh_rlhf(tmp_path, split="train")
    sample = stratified_sample(examples, 20, seed=1)
    assert len(sample) == 20 and {ex.subset for ex in sample} == set(SUBSETS)
    assert all(sum(ex.subset == s for ex in sample) == 5 for s in SUBSETS)
    assert [e.id for e in stratified_sample(examples, 20, seed=1)] == [e.id for e in sample]
    prompts = load_prompts(DataConfig(source=f"hh-rlhf:{tmp_path}", max_prompts=8), seed=0)
    assert len(prompts) == 8 and all(p.messages[-1].role == "user" for p in prompts)


def test_builtin_prompts_cover_the_three_kinds() -> None:
    prompts = builtin_prompts()
    assert len(prompts) >= 48 and len({p.id for p in prompts}) == len(prompts)
    assert sum("refuse" in p.id for p in prompts) == len(MUST_REFUSE) >= 10
    first = load_prompts(DataConfig(max_prompts=6), seed=0)
    assert len(first) == 6 and first == load_prompts(DataConfig(max_prompts=6), seed=0)


def test_missing_hh_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no HH-RLHF subset found"):
        load_hh_rlhf(tmp_path)
