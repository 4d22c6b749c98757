"""One optimisation step with each real loss on a tiny real llama widens the preferred candidate's margin."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cyclealign.config import TrainConfig, WhiteboxConfig
from cyclealign.protocols import Candidate, LossBatch, Prompt
from cyclealign.whitebox import build_trainer, encode_candidates, load_whitebox, sequence_logps
from cyclealign_losses import DpoLoss, ProLoss, RrhfLoss
from tests.support.tiny_models import tiny_llama_dir

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
