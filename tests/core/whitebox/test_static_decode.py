"""The static sampler (``whitebox.sampler=static``) is exact: it draws what a plain step-by-step loop draws.

The reference below runs the whole sequence so far through the unmerged model
at every step (no cache, no adapter merge, no buckets, no cadence), with the
same keyed noise.  Real tiny models of three families, LoRA adapters with
non-zero B, float64 so that only the decoding machinery can differ.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch

from cyclealign.config import WhiteboxConfig
from cyclealign.protocols import Prompt
from cyclealign.whitebox import HFSampler, WhiteboxError, load_whitebox
from cyclealign.whitebox.batching import token_logps
from cyclealign.whitebox.keyed_noise import (
    GOLDEN,
    MASK32,
    keyed_choice,
    keyed_uniform,
    outside_top_p,
    row_step_keys,
    sample_seed,
    seed_tensor,
)
from cyclealign.whitebox.merged_adapter import AdapterMerger
from cyclealign.whitebox.static_decode import StaticDecoder
from cyclealign.whitebox.static_sampling import (
    StaticSampling,
    bucket_length,
    bucket_rows,
    resolve_sampler,
    static_unsupported,
)
from tests.support.tiny_models import tiny_family_dir

PROMPT_LENGTHS = [3, 9, 6]  # ragged: left padding of 6, 0 and 3 tokens
N = 2  # samples per prompt: 6 rows, a bucket of 8 (two spare rows)


# ------------------------------------------------------------------ the plain reference
@torch.no_grad()
def reference_decode(
    model: Any,
    ids: torch.Tensor,
    att: torch.Tensor,
    seeds: torch.Tensor,
    cfg: WhiteboxConfig,
    eos: int,
    pad: int,
    stopped: Callable[[list[int]], bool] | None = None,
    check_every: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every step a full forward over the sequence so far; the same end rules as ``sampler.decode``."""
    ended = torch.zeros(ids.shape[0], dtype=torch.bool)
    tokens, logps = [], []
    for step in range(cfg.max_new_tokens):
        positions = (att.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=att, position_ids=positions, use_cache=False).logits[:, -1]
        chosen = keyed_choice(logits, seeds, torch.tensor(step), cfg.temperature, cfg.top_p)
        token = torch.where(ended, pad, chosen)
        tokens.append(token)
        logps.append(token_logps(logits, token))
        ended |= token == eos
        if stopped is not None and (step + 1) % check_every == 0:
            rows = torch.stack(tokens, 1).tolist()
            ended |= torch.tensor([not e and stopped(r) for e, r in zip(ended.tolist(), rows, strict=True)])
        if bool(ended.all()):
            break
        ids = torch.cat([ids, token[:, None]], 1)
        att = torch.cat([att, torch.ones_like(att[:, :1])], 1)
    return torch.stack(tokens, 1), torch.stack(logps, 1)


def lora_model(path, attn: str | None = None, dtype: torch.dtype = torch.float64) -> Any:
    """The tiny model with its LoRA adapter (B drawn at random, so the adapter matters), in eval mode."""
    cfg = WhiteboxConfig(model=str(path), lora_dropout=0.0, attn_implementation=attn)
    wb = load_whitebox(cfg, seed=0)
    with torch.no_grad():
        for name, p in wb.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    wb.model = copy.deepcopy(wb.model).to(dtype).eval()
    return wb


def ragged_batch(vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts of ``PROMPT_LENGTHS``, each repeated for its ``N`` samples (row b·N + i)."""
    gen = torch.Generator().manual_seed(seed)
    width = max(PROMPT_LENGTHS)
    ids = torch.zeros(len(PROMPT_LENGTHS), width, dtype=torch.long)
    att = torch.zeros_like(ids)
    for b, n in enumerate(PROMPT_LENGTHS):
        ids[b, width - n :] = torch.randint(3, vocab, (n,), generator=gen)
        att[b, width - n :] = 1
    return ids.repeat_interleave(N, 0), att.repeat_interleave(N, 0)


@pytest.fixture(scope="module")
def family_model(request, tmp_path_factory):
    return lora_model(tiny_family_dir(tmp_path_factory.mktemp(request.param), request.param))


def frequent_token(tokens: torch.Tensor) -> int:
    """A token the rows draw often: as EOS it ends rows at different steps (some never)."""
    return Counter(tokens[:, 1:].flatten().tolist()).most_common(1)[0][0]


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize(
    ("family_model", "sampling"),
    [("llama", (1.0, 0.95)), ("qwen2", (1.0, 0.95)), ("mistral", (1.0, 0.95)), ("llama", (0.7, 0.8))],
    ids=["llama", "qwen2", "mistral", "llama-tempered"],
    indirect=["family_model"],
)
def test_static_path_draws_what_the_plain_loop_draws(family_model, sampling) -> None:
    """The default temperature and top-p in three families; another sampling in one."""
    temperature, top_p = sampling
    wb = family_model
    cfg = wb.config.model_copy(update={"max_new_tokens": 18, "temperature": temperature, "top_p": top_p})
    ids, att = ragged_batch(wb.model.config.vocab_size)
    seeds = seed_tensor(["p:a", "p:b", "p:c"], N)
    pad = 0
    short = cfg.model_copy(update={"max_new_tokens": 8})
    free, _ = reference_decode(wb.model, ids, att, seeds, short, eos=-1, pad=pad)
    eos = frequent_token(free)
    want, want_logps = reference_decode(wb.model, ids, att, seeds, cfg, eos=eos, pad=pad)
    got, got_logps = StaticSampling(cfg, torch.device("cpu")).decode(wb.model, ids, att, seeds, eos_id=eos, pad_id=pad)
    ends = [row.index(eos) if eos in row else None for row in want.tolist()]
    assert any(e is not None and e < 17 for e in ends), "some row must end early"
    assert got.shape == want.shape and torch.equal(got, want)
    torch.testing.assert_close(got_logps, want_logps, atol=1e-5, rtol=0)


def test_invented_turns_end_rows_at_the_plain_loops_steps(tmp_path) -> None:
    """``stopped`` is asked at the same steps as the eager loop asks it; the output is cut where that loop stops."""
    wb = lora_model(tiny_family_dir(tmp_path / "m", "llama"))
    cfg = wb.config.model_copy(update={"max_new_tokens": 20})
    ids, att = ragged_batch(wb.model.config.vocab_size, seed=1)
    seeds = seed_tensor(["q:a", "q:b", "q:c"], N)
    free, _ = reference_decode(wb.model, ids, att, seeds, cfg.model_copy(update={"max_new_tokens": 8}), -1, 0)
    marker = frequent_token(free)

    def stopped(row: list[int]) -> bool:
        return marker in row

    want, want_logps = reference_decode(wb.model, ids, att, seeds, cfg, -1, 0, stopped, check_every=8)
    got, got_logps = StaticSampling(cfg, torch.device("cpu")).decode(
        wb.model, ids, att, seeds, eos_id=-1, pad_id=0, stopped=stopped, check_every=8
    )
    stopped_rows = [r for r in want.tolist() if marker in r[:8] and all(t == 0 for t in r[8:])]
    assert stopped_rows, "some row must be stopped at the first check (step 8) and padded after"
    assert torch.equal(got, want)
    torch.testing.assert_close(got_logps, want_logps, atol=1e-5, rtol=0)


def test_eager_attention_takes_the_float_mask(tmp_path) -> None:
    """The eager attention adds a float mask.  (Its reference is sdpa: transformers' own eager masks let the
    left-padding positions of float64 rows turn NaN, which then reaches every row.)"""
    path = tiny_family_dir(tmp_path / "m", "llama")
    wb, reference = lora_model(path, attn="eager"), lora_model(path)
    assert wb.model.config._attn_implementation == "eager"
    cfg = wb.config.model_copy(update={"max_new_tokens": 12})
    ids, att = ragged_batch(wb.model.config.vocab_size)
    seeds = seed_tensor(["e:a", "e:b", "e:c"], N)
    want, want_logps = reference_decode(reference.model, ids, att, seeds, cfg, eos=-1, pad=0)
    got, got_logps = StaticSampling(cfg, torch.device("cpu")).decode(wb.model, ids, att, seeds, eos_id=-1, pad_id=0)
    assert torch.equal(got, want)
    torch.testing.assert_close(got_logps, want_logps, atol=1e-5, rtol=0)


def test_bfloat16_weights_decode_with_float32_log_probs(tmp_path) -> None:
    """The GPU's default dtype: merged in float32 and rounded once, scored in float32 near the float32 model."""
    path = tiny_family_dir(tmp_path / "m", "llama")
    wb, wide = lora_model(path, dtype=torch.bfloat16), lora_model(path, dtype=torch.float32)
    cfg = wb.config.model_copy(update={"max_new_tokens": 8})
    ids, att = ragged_batch(wb.model.config.vocab_size)
    seeds = seed_tensor(["h:a", "h:b", "h:c"], N)
    tokens, logps = StaticSampling(cfg, torch.device("cpu")).decode(wb.model, ids, att, seeds, eos_id=-1, pad_id=0)
    assert logps.dtype == torch.float32 and tokens.shape == (6, 8)
    full = torch.cat([ids, tokens], 1)
    full_att = torch.cat([att, torch.ones_like(tokens)], 1)
    with torch.no_grad():
        positions = (full_att.cumsum(-1) - 1).clamp(min=0)
        logits = wide.model(input_ids=full, attention_mask=full_att, position_ids=positions).logits
    want = token_logps(logits[:, ids.shape[1] - 1 : -1], tokens)
    torch.testing.assert_close(logps, want, atol=0.05, rtol=0)


def test_a_graph_warm_up_leaves_no_trace(tmp_path, monkeypatch) -> None:
    """What a capture does before its graph (steps run, then the state put back) changes nothing drawn after."""
    wb = lora_model(tiny_family_dir(tmp_path / "m", "llama"))
    cfg = wb.config.model_copy(update={"max_new_tokens": 10})
    ids, att = ragged_batch(wb.model.config.vocab_size)
    seeds = seed_tensor(["w:a", "w:b", "w:c"], N)
    plain = StaticSampling(cfg, torch.device("cpu")).decode(wb.model, ids, att, seeds, eos_id=-1, pad_id=0)
    step = StaticDecoder._step
    warmed = []

    def warm_then_step(self):
        if not warmed:
            warmed.append(1)
            self._warm_up(2)
        step(self)

    monkeypatch.setattr(StaticDecoder, "_step", warm_then_step)
    again = StaticSampling(cfg, torch.device("cpu")).decode(wb.model, ids, att, seeds, eos_id=-1, pad_id=0)
    assert warmed and torch.equal(again[0], plain[0]) and torch.equal(again[1], plain[1])


def test_a_failed_capture_warns_and_decodes_without_a_graph(tmp_path) -> None:
    """Here the capture fails at its first CUDA call; the wave goes on eagerly, draws the same, and says why."""
    wb = lora_model(tiny_family_dir(tmp_path / "m", "llama"))
    cfg = wb.config.model_copy(update={"max_new_tokens": 10})
    ids, att = ragged_batch(wb.model.config.vocab_size)
    seeds = seed_tensor(["c:a", "c:b", "c:c"], N)
    plain = StaticSampling(cfg, torch.device("cpu")).decode(wb.model, ids, att, seeds, eos_id=-1, pad_id=0)
    graphed = StaticSampling(cfg, torch.device("cpu"))
    graphed.use_graph = True
    with pytest.warns(UserWarning, match=r"whitebox\.cuda_graph: capturing the decoding step failed"):
        got = graphed.decode(wb.model, ids, att, seeds, eos_id=-1, pad_id=0)
    assert torch.equal(got[0], plain[0]) and torch.equal(got[1], plain[1])
    (decoder,) = graphed._decoders.values()
    assert decoder.graph_failed and decoder.graph is None


def test_decoders_are_reused_and_follow_the_adapters_training(tmp_path) -> None:
    """A bucket's decoder serves the next wave; its merged weights are refreshed in place when the adapter learns."""
    wb = lora_model(tiny_family_dir(tmp_path / "m", "llama"))
    cfg = wb.config.model_copy(update={"max_new_tokens": 8})
    ids, att = ragged_batch(wb.model.config.vocab_size)
    seeds = seed_tensor(["r:a", "r:b", "r:c"], N)
    kept = StaticSampling(cfg, torch.device("cpu"))
    first = kept.decode(wb.model, ids, att, seeds, eos_id=-1, pad_id=0)
    decoders = dict(kept._decoders)
    with torch.no_grad():  # an optimizer step: in place, as torch and DeepSpeed update parameters
        for name, p in wb.model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.5)
    second = kept.decode(wb.model, ids, att, seeds, eos_id=-1, pad_id=0)
    fresh = StaticSampling(cfg, torch.device("cpu")).decode(wb.model, ids, att, seeds, eos_id=-1, pad_id=0)
    assert kept._decoders == decoders, "the same decoder (and on CUDA its graph) serves the second wave"
    assert not torch.equal(second[1], first[1])
    assert torch.equal(second[0], fresh[0]) and torch.equal(second[1], fresh[1])


# ------------------------------------------------------------------ the sampler on the static path
def test_a_prompt_draws_the_same_alone_and_in_a_wave_of_four(tmp_path) -> None:
    wb = lora_model(tiny_family_dir(tmp_path / "m", "llama"))
    wb.config = wb.config.model_copy(update={"sampler": "static", "max_new_tokens": 8})
    sampler = HFSampler(wb)
    assert sampler.mode == "static"
    prompts = [Prompt.from_text(f"p{i}", q) for i, q in enumerate(["Why is the sky blue?", "Bake bread?", "Hi", "Run"])]
    keys = [f"k:{p.id}" for p in prompts]
    wave = sampler.sample_many(prompts, 3, keys)
    alone = [sampler.sample(p, 3, k) for p, k in zip(prompts, keys, strict=True)]
    assert len({c.token_ids for cands in wave for c in cands}) > 1
    for in_wave, by_itself in zip(wave, alone, strict=True):
        assert [c.token_ids for c in in_wave] == [c.token_ids for c in by_itself]
        assert [c.sum_logp for c in in_wave] == pytest.approx([c.sum_logp for c in by_itself], abs=1e-9)


def test_sampler_setting_resolves_per_device() -> None:
    assert resolve_sampler("auto", "cpu") == "eager"
    assert resolve_sampler("auto", "cuda") == "static"
    assert resolve_sampler("eager", "cuda") == "eager" and resolve_sampler("static", "cpu") == "static"
    with pytest.raises(ValueError, match=r"whitebox\.sampler"):
        resolve_sampler("fast", "cpu")
    assert WhiteboxConfig().sampler == "auto" and WhiteboxConfig().cuda_graph is True


def test_auto_samples_eagerly_on_the_cpu_and_static_refuses_what_it_cannot_do(tmp_path) -> None:
    path = tiny_family_dir(tmp_path / "m", "mistral")
    wb = load_whitebox(WhiteboxConfig(model=str(path), device="cpu"), seed=0)
    assert HFSampler(wb).mode == "eager" and HFSampler(wb).static is None
    wb.model.config.sliding_window = 16  # shorter than max_prompt_tokens + max_new_tokens
    assert "sliding window of 16" in static_unsupported(wb.model, 432)
    with pytest.raises(WhiteboxError, match=r"whitebox\.sampler=static: a sliding window"):
        HFSampler(wb, wb.config.model_copy(update={"sampler": "static"}))


def test_buckets() -> None:
    assert [bucket_rows(r) for r in (1, 3, 4, 6, 12, 24, 33)] == [1, 4, 4, 8, 16, 32, 64]
    assert [bucket_length(n) for n in (1, 64, 65, 432)] == [64, 64, 128, 448]


# ------------------------------------------------------------------ the merged adapter
def test_merged_adapter_scores_as_the_adapter_and_restores_every_weight_bit_for_bit(tmp_path) -> None:
    wb = lora_model(tiny_family_dir(tmp_path / "m", "llama"), dtype=torch.float32)
    model = wb.model
    ids, att = ragged_batch(model.config.vocab_size)
    positions = (att.cumsum(-1) - 1).clamp(min=0)
    before = {k: (v, v.clone()) for k, v in model.state_dict(keep_vars=True).items()}
    merger = AdapterMerger()
    with torch.no_grad():
        unmerged = model(input_ids=ids, attention_mask=att, position_ids=positions).logits.log_softmax(-1)
        with merger.merged(model) as merged:
            inner = model.get_base_model()
            assert merged and not any("lora" in n for n, _ in inner.named_parameters())
            logps = inner(input_ids=ids, attention_mask=att, position_ids=positions).logits.log_softmax(-1)
    real = att.bool()
    assert (logps[real] - unmerged[real]).abs().max() > 0  # the merge really ran
    torch.testing.assert_close(logps[real], unmerged[real], atol=1e-4, rtol=0)
    after = model.state_dict(keep_vars=True)
    assert after.keys() == before.keys()
    for k, (tensor, value) in before.items():
        assert after[k] is tensor and torch.equal(after[k], value), k
    model.train()  # training goes on with the adapter: gradients reach B
    model(input_ids=ids, attention_mask=att, labels=ids).loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_B" in n)


def test_merged_adapter_is_undone_when_the_wave_fails(tmp_path) -> None:
    wb = lora_model(tiny_family_dir(tmp_path / "m", "qwen2"), dtype=torch.float32)
    before = {k: (v, v.clone()) for k, v in wb.model.state_dict(keep_vars=True).items()}
    with pytest.raises(RuntimeError, match="mid-wave"), AdapterMerger().merged(wb.model):
        raise RuntimeError("mid-wave")
    after = wb.model.state_dict(keep_vars=True)
    assert after.keys() == before.keys()
    assert all(after[k] is t and torch.equal(after[k], v) for k, (t, v) in before.items())


# ------------------------------------------------------------------ keyed noise
def _fmix32(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & MASK32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & MASK32
    return x ^ (x >> 16)


def test_keyed_uniforms_equal_the_hash_in_plain_integers() -> None:
    """The 32-bit lanes in int64 (split products, masked shifts) compute the hash exactly, negative seeds included."""
    keys = ["a", "seed:7:3", "x"]
    seeds = seed_tensor(keys, 2)
    assert (seeds < 0).any() and (seeds > 0).any()
    step, vocab = 5, 300
    got = keyed_uniform(seeds, torch.tensor(step), vocab)
    k1, k2 = row_step_keys(seeds, torch.tensor(step))
    for r, key_index in enumerate([(k, i) for k in keys for i in range(2)]):
        seed = sample_seed(*key_index) & (2**64 - 1)
        lo, hi = seed & MASK32, seed >> 32
        want_k1 = _fmix32(lo ^ (((step + 1) * GOLDEN) & MASK32))
        want_k2 = _fmix32(hi ^ want_k1 ^ 0x68E31DA4)
        assert (int(k1[r]), int(k2[r])) == (want_k1, want_k2)
        for v in (0, 1, 17, vocab - 1):
            h = _fmix32(_fmix32(((v * GOLDEN) & MASK32) ^ want_k1) ^ want_k2)
            assert float(got[r, v]) == ((h >> 9) + 0.5) / 2**23
    assert float(got.min()) > 0.0 and float(got.max()) < 1.0
    top = torch.tensor([2**32 - 1, 0], dtype=torch.int64)  # the extreme hashes stay inside (0, 1) in float32
    assert torch.equal(((top >> 9).float() + 0.5) * (1.0 / (1 << 23)) < 1.0, torch.tensor([True, True]))


def test_keyed_noise_depends_on_key_step_and_token_only() -> None:
    seeds = seed_tensor(["a", "b", "c"], 3)
    step = torch.tensor(4)
    full = keyed_uniform(seeds, step, 500)
    order = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(keyed_uniform(seeds[order], step, 500), full[order])  # the row's place is invisible
    assert torch.equal(keyed_uniform(seeds[:1], step, 500), full[:1])
    assert not torch.equal(keyed_uniform(seeds, torch.tensor(5), 500), full)
    assert full.unique().numel() == full.numel()


def test_keyed_draws_have_the_frequencies_of_the_top_p_renormalised_softmax() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])
    temperature, top_p, draws = 0.8, 0.9, 4000
    probs = (logits / temperature).softmax(-1)[0]
    top = probs.sort(descending=True)
    kept = top.indices[(top.values.cumsum(0) - top.values) < top_p]
    want = torch.zeros(5)
    want[kept] = probs[kept] / probs[kept].sum()
    seeds = seed_tensor([f"g{i}" for i in range(draws)], 1)
    picks = keyed_choice(logits.expand(draws, 5), seeds, torch.tensor(0), temperature, top_p)
    freq = torch.bincount(picks, minlength=5).float() / draws
    assert float(want[-1]) == 0.0 and int((picks == 4).sum()) == 0
    torch.testing.assert_close(freq, want, atol=0.03, rtol=0)
    # and over steps of one stream, as a sample meets them
    steps = torch.stack([keyed_choice(logits, seeds[:1], torch.tensor(t), temperature, top_p) for t in range(draws)])
    torch.testing.assert_close(torch.bincount(steps.flatten(), minlength=5).float() / draws, want, atol=0.03, rtol=0)


@pytest.mark.parametrize("flat", [False, True], ids=["peaked", "flat"])
def test_graph_safe_top_p_equals_the_eager_windowed_search(flat: bool) -> None:
    from cyclealign.whitebox.sampler import GumbelSampling

    torch.manual_seed(0)
    logits = torch.randn(4, 5000) * (0.01 if flat else 4.0)
    assert torch.equal(outside_top_p(logits, 0.9), GumbelSampling([], 1.0, 0.9)._outside_top_p(logits))
