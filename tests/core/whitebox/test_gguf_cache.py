"""A GGUF white-box is converted once; later loads read the conversion, and it is the same model."""

from __future__ import annotations

import pytest
import torch

from cyclealign.config import WhiteboxConfig
from cyclealign.embedded import embedded_gguf_path
from cyclealign.protocols import Prompt
from cyclealign.whitebox import encode_prompt, load_whitebox
from cyclealign.whitebox.gguf_cache import converted_path

pytestmark = pytest.mark.slow


def test_the_cached_conversion_is_the_gguf_model_itself(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CYCLEALIGN_CACHE_DIR", str(tmp_path / "cache"))
    target = converted_path(embedded_gguf_path())
    assert not target.exists()
    cfg = WhiteboxConfig(device="cpu", finetune="full")
    cached = load_whitebox(cfg, seed=0)  # converts
    assert (target / "model.safetensors").is_file() and not list(target.parent.glob(".*"))  # no leftovers
    again = load_whitebox(cfg, seed=0)  # reads the conversion
    assert again.model.config._name_or_path == str(target)
    direct = load_whitebox(cfg.model_copy(update={"gguf_cache": False}), seed=0)
    want = direct.model.state_dict()
    got = again.model.state_dict()
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
    prompt = Prompt.from_text("p", "How do I bake bread? Ünïcödé, 数字 and emoji 🍞.")
    for wb in (cached, again):
        assert encode_prompt(wb.tokenizer, prompt, 512) == encode_prompt(direct.tokenizer, prompt, 512)
        assert (wb.tokenizer.eos_token_id, wb.tokenizer.pad_token_id) == (
            direct.tokenizer.eos_token_id,
            direct.tokenizer.pad_token_id,
        )
