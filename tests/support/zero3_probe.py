"""Started by tests under the ``deepspeed`` launcher: load a model for ZeRO-3, then sample and train one step.

Each rank writes ``rank{N}.json`` into OUT_DIR: how many base-weight elements
it holds right after loading (before DeepSpeed's engine exists) against the
model's full count, what it sampled for the probe prompt (weights gathered by
the backend's ``full_weights``), and the loss of one training step.

    deepspeed --num_gpus 2 tests/support/zero3_probe.py MODEL_DIR OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROMPT, KEY, SAMPLES = "How do I bake bread?", "probe", 2


def overrides(model_dir: str) -> list[str]:
    """The probe's settings; the test loads the same model without DeepSpeed from these too."""
    return [
        f"whitebox.model={model_dir}",
        "whitebox.max_new_tokens=8",
        "whitebox.device=cpu",
        "train.backend=deepspeed",
        "train.zero_stage=3",
        "train.lr=0.01",
        "cycle.num_samples=2",
    ]


def main(model_dir: str, out_dir: str) -> None:
    import torch

    from cyclealign.config import load_config
    from cyclealign.infra import process_group
    from cyclealign.infra.lockstep import lockstep_for
    from cyclealign.protocols import LossBatch, Prompt
    from cyclealign.run import assembly
    from cyclealign.run.checkpoint import reseed_all
    from cyclealign.whitebox import build_trainer, load_whitebox
    from cyclealign.whitebox.deepspeed_backend import zero3_load_config
    from cyclealign.whitebox.sampler import HFSampler

    config = load_config(overrides=overrides(model_dir))
    lockstep = lockstep_for(config.train.backend)
    reseed_all(f"{config.run.seed}:init")
    wb = load_whitebox(config.whitebox, seed=config.run.seed, zero3=zero3_load_config(config.train, config.whitebox))
    base = [p for name, p in wb.model.named_parameters() if "lora_" not in name]
    held = {
        "partitioned": all(hasattr(p, "ds_id") for p in base),
        "local": sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in base),
        "full": sum(getattr(p, "ds_numel", p.numel()) for p in base),
        "visible": sum(p.numel() for p in base),  # what a plain tensor op sees outside a gather
    }
    trainer = build_trainer(wb, assembly.build_loss(config), config.train, lockstep)
    prompt = Prompt.from_text("p0", PROMPT)
    with trainer.backend.full_weights():
        cands = HFSampler(wb, config.whitebox).sample_many([prompt], SAMPLES, [KEY])[0]
    parts = trainer.step([LossBatch(prompt, tuple(cands), (2, 1), 0)])
    result = {
        "rank": lockstep.rank,
        "world": lockstep.world_size,
        **held,
        "samples": [list(c.token_ids) for c in cands],
        "loss": float(parts["total"]),
        "finite": bool(torch.isfinite(torch.tensor(parts["total"]))),
    }
    Path(out_dir, f"rank{lockstep.rank}.json").write_text(json.dumps(result))
    process_group.leave(together=True)


if __name__ == "__main__":
    main(*[a for a in sys.argv[1:] if not a.startswith("--local_rank")])
