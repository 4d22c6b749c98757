"""whitebox.prompt_format: the HH-RLHF layout for base models, and the cut at a turn the model invents.

A tiny llama is taught (in a second or two) to answer an HH-RLHF dialogue and then run
on into an invented "\\n\\nHuman:" turn, as base models do; the cycle's sampler, the
training encoding and evaluation must all keep only the answer.
"""

from __future__ import annotations

import pytest
import torch

from cyclealign.config import WhiteboxConfig
from cyclealign.data.hh_rlhf import _prompt, parse_pair
from cyclealign.errors import WhiteboxError
from cyclealign.protocols import Message, Prompt
from cyclealign.whitebox import HFSampler, encode_candidates, load_whitebox
from cyclealign.whitebox.prompt_format import cut_ids, cut_text, encode_prompt, render_prompt, resolve_format
from tests.support.paths import REPO
from tests.support.tiny_models import tiny_llama_dir, tiny_tokenizer

DIALOGUE = "\n\nHuman: Hi!\n\nAssistant: Hello, how can I help?\n\nHuman: How do I bake bread?"
HH_PROMPT = DIALOGUE + "\n\nAssistant:"
ANSWER = " Knead it well."
RUN_ON = ANSWER + "\n\nHuman: thanks\n\nAssistant: welcome"


def _hh_prompt() -> Prompt:
    parsed = parse_pair(DIALOGUE + "\n\nAssistant: a", DIALOGUE + "\n\nAssistant: b")
    assert not isinstance(parsed, str)
    return _prompt("bake", parsed[0])


@pytest.fixture(scope="module")
def run_on_model(tmp_path_factory: pytest.TempPathFactory):
    """A tiny llama in the hh format that answers, then invents the user's next turn (greedy and at T≈0)."""
    path = tiny_llama_dir(tmp_path_factory.mktemp("hh") / "llama")
    cfg = WhiteboxConfig(model=str(path), finetune="full", device="cpu", prompt_format="hh", max_new_tokens=48)
    cfg = cfg.model_copy(update={"temperature": 0.01, "top_p": 1.0})
    wb = load_whitebox(cfg)
    tok = wb.tokenizer
    prompt_ids, _ = encode_prompt(tok, _hh_prompt(), 384, "hh")
    target = tok(RUN_ON, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + target])
    labels = ids.clone()
    labels[0, : len(prompt_ids)] = -100
    opt = torch.optim.Adam(wb.model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(200):
        loss = wb.model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.05:  # every next token is then the argmax by a wide margin
            break
    wb.model.eval()
    return wb


def test_the_sampler_encodes_a_two_turn_hh_dialogue_in_hh_rlhf_layout(run_on_model) -> None:
    wb = run_on_model
    seen: list[torch.Tensor] = []
    hook = wb.model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["input_ids"]) if not seen else None, with_kwargs=True
    )
    try:
        HFSampler(wb).sample(_hh_prompt(), 2, key="k")
    finally:
        hook.remove()
    first = seen[0][0].tolist()
    first = first[next(i for i, t in enumerate(first) if t != wb.tokenizer.pad_token_id) :]
    assert wb.tokenizer.decode(first) == HH_PROMPT


def test_an_invented_human_turn_is_cut_in_the_cycle_the_training_step_and_evaluation(run_on_model) -> None:
    from cyclealign.whitebox.greedy import generate_answers

    wb = run_on_model
    tok = wb.tokenizer
    steps: list[int] = []
    hook = wb.model.register_forward_pre_hook(lambda *_: steps.append(1))
    try:
        cands = HFSampler(wb).sample(_hh_prompt(), 2, key="k")
    finally:
        hook.remove()
    to_turn = len(tok(ANSWER + "\n\nHuman:", add_special_tokens=False)["input_ids"])
    # decoding ended at the first check (every 8 tokens) after both samples began a Human: turn
    assert len(steps) == -(-to_turn // 8) * 8 < wb.config.max_new_tokens
    full = tok.decode(tok(RUN_ON, add_special_tokens=False)["input_ids"])
    assert "\n\nHuman:" in full  # what the model would have run on to, uncut
    for cand in cands:
        assert cand.text == ANSWER.strip()
        assert tok.decode(list(cand.token_ids)).strip() == cand.text  # the ids are the cut text's
    enc = encode_candidates(tok, [_hh_prompt()], [cands], 512, prompt_format="hh")
    trained = enc.input_ids[0][enc.response_mask[0]].tolist()
    assert trained == list(cands[0].token_ids) and "Human" not in tok.decode(trained)
    assert generate_answers(wb, [_hh_prompt()], max_new_tokens=24) == [ANSWER.strip()]


def test_cut_ids_keep_a_prefix_whose_text_is_the_cut_text() -> None:
    tok = tiny_tokenizer()
    ids = tok(" Mix flour, water.\n\nHuman: and then?", add_special_tokens=False)["input_ids"]
    kept, cut = cut_ids(tok, ids, "hh")
    assert cut and tok.decode(kept).strip() == "Mix flour, water." and kept == ids[: len(kept)]
    assert cut_ids(tok, ids, "chat_template") == (ids, False)
    assert cut_text(" Sure.\nAssistant: more", "hh") == " Sure."
    assert cut_text("Human: hi", "hh") == ""
    assert cut_text("The word Human: stays mid-line.", "hh") == "The word Human: stays mid-line."
    assert cut_text("Bake it.\n\n### Instruction:\nnext", "alpaca") == "Bake it."


def test_alpaca_layout_and_format_resolution() -> None:
    tok = tiny_tokenizer()
    single = Prompt.from_text("q", "Why is the sky blue?")
    text = render_prompt(tok, single, "alpaca")
    assert text.endswith("### Instruction:\nWhy is the sky blue?\n\n### Response:\n")
    assert text.startswith("Below is an instruction")
    dialogue = Prompt("d", (Message("user", "hi"), Message("assistant", "hello"), Message("user", "bake?")))
    assert "### Instruction:\nHuman: hi\nAssistant: hello\nHuman: bake?\n\n" in render_prompt(tok, dialogue, "alpaca")
    assert resolve_format(tok, "auto") == "chat_template"
    tok.chat_template = None
    assert resolve_format(tok, "auto") == "hh"
    with pytest.raises(WhiteboxError, match="no chat template"):
        resolve_format(tok, "chat_template")


def test_paper_configs_set_the_hh_format() -> None:
    import yaml

    from cyclealign.config import Config, load_config
    from cyclealign.offline.settings import OfflineTrainConfig

    root = REPO / "configs" / "paper"
    paths = sorted(root.rglob("*.yaml"))
    assert len(paths) >= 14  # the cycle's, the ablations', the human-label baselines' and the N sweep's
    for path in paths:
        schema = OfflineTrainConfig if "offline" in yaml.safe_load(path.read_text()) else Config
        assert load_config(path, schema=schema).whitebox.prompt_format == "hh", path.name


def test_raw_formats_start_with_bos_where_the_tokenizer_adds_one() -> None:
    tok = tiny_tokenizer()
    prompt = Prompt.from_text("a", "Hi there")
    plain, _ = encode_prompt(tok, prompt, 100, "hh")
    assert plain[0] != tok.bos_token_id
    tok.add_bos_token = True  # as LLaMA's tokenizer does
    ids, cut = encode_prompt(tok, prompt, 100, "hh")
    assert ids == [tok.bos_token_id, *plain] and not cut
    short, cut = encode_prompt(tok, prompt, 5, "hh")
    assert cut and short == [tok.bos_token_id, *plain[-4:]]  # BOS survives the cut to the most recent tokens
    assert encode_prompt(tok, prompt, 100, "chat_template")[0][0] != tok.bos_token_id  # the template decides
