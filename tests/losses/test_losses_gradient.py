"""One optimisation step with each loss on a tiny real llama widens the preferred candidate's margin.

Two levels: the pure functions on log-probs computed right here from a bare ``LlamaForCausalLM``
(no project code between the model and the loss), then the ``RankLoss`` plugins through the
project's own white-box trainer.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cyclealign.config import TrainConfig, WhiteboxConfig
from cyclealign.protocols import Candidate, LossBatch, Prompt
from cyclealign.whitebox import build_trainer, encode_candidates, load_whitebox, sequence_logps
from cyclealign_losses import DpoLoss, ProLoss, RrhfLoss, dpo_loss, pro_loss, rrhf_loss, sft_loss
from tests.support.tiny_models import tiny_llama_dir

# ---------------------------------------------------------------- the pure functions on a bare model

VOCAB, PAD = 64, 0


def bare_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=PAD,
    )
    return LlamaForCausalLM(config).double()


def random_sequences(seed: int, response_lengths: list[int]) -> tuple[list[int], list[list[int]]]:
    rng = random.Random(seed)
    prompt = [rng.randrange(1, VOCAB) for _ in range(5)]
    return prompt, [[rng.randrange(1, VOCAB) for _ in range(n)] for n in response_lengths]


def summed_response_logps(
    model: LlamaForCausalLM, prompt: list[int], responses: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[1, n]`` summed log-probs of each response's tokens given the prompt, and their true lengths."""
    width = len(prompt) + max(len(r) for r in responses)
    ids = torch.full((len(responses), width), PAD)
    attention = torch.zeros_like(ids)
    scored = torch.zeros(len(responses), width - 1, dtype=torch.bool)  # which next-token predictions count
    for i, response in enumerate(responses):
        seq = prompt + response
        ids[i, : len(seq)] = torch.tensor(seq)
        attention[i, : len(seq)] = 1
        scored[i, len(prompt) - 1 : len(seq) - 1] = True
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
    token_logps = torch.log_softmax(logits, dim=-1).gather(2, ids[:, 1:, None]).squeeze(2)
    logps = torch.where(scored, token_logps, torch.zeros_like(token_logps)).sum(dim=1)
    return logps[None], scored.sum(dim=1)[None]


LENGTHS = [6, 3, 9]  # unequal on purpose


def _one_step(
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
    rewards: torch.Tensor,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    best: int,
    worst: int,
    with_reference: bool = False,
) -> tuple[float, float]:
    model = bare_llama()
    prompt, responses = random_sequences(1, LENGTHS)
    reference = copy.deepcopy(model).eval().requires_grad_(False) if with_reference else None

    def margin() -> float:
        with torch.no_grad():
            s = score(*summed_response_logps(model, prompt, responses))[0]
        return float(s[best] - s[worst])

    before = margin()
    ref = None
    if reference is not None:
        with torch.no_grad():
            ref = summed_response_logps(reference, prompt, responses)[0]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    logps, lengths = summed_response_logps(model, prompt, responses)
    loss = loss_fn(logps, lengths, rewards, ref)
    assert float(loss.detach()) > 0
    loss.backward()
    optimizer.step()
    return before, margin()


def _mean(logps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return logps / lengths


def _summed(logps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return logps


def test_pro_step_widens_the_preferred_mean_logp_margin() -> None:
    rewards = torch.tensor([[1.0, 2.0, 0.0]], dtype=torch.float64)  # shuffled: candidate 1 best, 2 worst
    before, after = _one_step(lambda lp, ln, rw, ref: pro_loss(lp, ln, rw), rewards, _mean, best=1, worst=2)
    assert after > before


def test_rrhf_step_widens_the_preferred_margin_when_misordered() -> None:
    # RRHF only acts on mis-ordered pairs: prefer the candidate the fresh model scores lowest.
    prompt, responses = random_sequences(1, LENGTHS)
    with torch.no_grad():
        p = _mean(*summed_response_logps(bare_llama(), prompt, responses))[0]
    best, worst = int(p.argmin()), int(p.argmax())
    rewards = torch.ones(1, 3, dtype=torch.float64)
    rewards[0, best], rewards[0, worst] = 2.0, 0.0
    before, after = _one_step(lambda lp, ln, rw, ref: rrhf_loss(lp, ln, rw), rewards, _mean, best=best, worst=worst)
    assert before < 0 < after - before


@pytest.mark.parametrize("pairs", ["all", "best_worst"])
def test_dpo_step_against_a_frozen_copy_widens_the_summed_margin(pairs: str) -> None:
    rewards = torch.tensor([[0.0, 2.0, 1.0]], dtype=torch.float64)
    before, after = _one_step(
        lambda lp, ln, rw, ref: dpo_loss(lp, ln, rw, ref, beta=0.5, pairs=pairs),
        rewards,
        _summed,
        best=1,
        worst=0,
        with_reference=True,
    )
    assert after > before


def test_sft_step_raises_the_best_candidates_mean_logp() -> None:
    rewards = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64)

    def best_only(logps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.cat([logps / lengths, torch.zeros(1, 1, dtype=logps.dtype)], dim=1)

    before, after = _one_step(lambda lp, ln, rw, ref: sft_loss(lp, ln, rw), rewards, best_only, best=2, worst=3)
    assert after > before


# ---------------------------------------------------------------- the plugins through the project's trainer

PROMPT = Prompt.from_text("p", "How do I bake bread?")
CANDIDATES = (
    Candidate("Mix flour, water, salt and yeast, knead, let it rise, then bake."),
    Candidate("Bread is bread."),
    Candidate("I do not know how to help with that at all."),
)
REWARDS = (2.0, 1.0, 0.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("grad"))


def _margins(wb) -> tuple[float, float]:
    enc = encode_candidates(wb.tokenizer, [PROMPT], [CANDIDATES], 512)
    with torch.no_grad():
        logps, lengths = sequence_logps(wb.model, enc)
    mean = (logps / lengths)[0]
    return float(logps[0, 0] - logps[0, 2]), float(mean[0] - mean[2])


@pytest.mark.parametrize("loss", [ProLoss(sft_weight=0.0), RrhfLoss(sft_weight=0.0), DpoLoss(sft_weight=0.0)])
def test_one_step_increases_the_preferred_margin(model_dir: Path, loss) -> None:
    wb = load_whitebox(WhiteboxConfig(model=str(model_dir)), seed=0)
    if isinstance(loss, RrhfLoss):
        # RRHF only penalises mis-ordered pairs: make sure the initial order is wrong, else there is nothing to fix.
        rewards = (0.0, 1.0, 2.0) if _margins(wb)[1] > 0 else REWARDS
    else:
        rewards = REWARDS
    best, worst = (0, 2) if rewards == REWARDS else (2, 0)
    enc = encode_candidates(wb.tokenizer, [PROMPT], [CANDIDATES], 512)

    def margin() -> float:
        with torch.no_grad():
            logps, lengths = sequence_logps(wb.model, enc)
        mean = (logps / lengths)[0]
        return float(mean[best] - mean[worst])

    before = margin()
    trainer = build_trainer(wb, loss, TrainConfig(lr=1e-3, max_grad_norm=None))
    parts = trainer.step([LossBatch(PROMPT, CANDIDATES, rewards, sft_index=rewards.index(max(rewards)))])
    after = margin()
    assert parts["rank"] > 0
    assert after > before, f"{loss.name}: margin {before:.5f} -> {after:.5f}"


def test_sft_term_alone_raises_the_best_candidates_likelihood(model_dir: Path) -> None:
    wb = load_whitebox(WhiteboxConfig(model=str(model_dir)), seed=0)
    enc = encode_candidates(wb.tokenizer, [PROMPT], [CANDIDATES], 512)
    with torch.no_grad():
        before = sequence_logps(wb.model, enc)[0][0, 0].item()
    build_trainer(wb, ProLoss(sft_weight=4.0), TrainConfig(lr=1e-3)).step([LossBatch(PROMPT, CANDIDATES, REWARDS, 0)])
    with torch.no_grad():
        after = sequence_logps(wb.model, enc)[0][0, 0].item()
    assert after > before
