"""The DeepSpeed training backend: ZeRO-2 (the paper's) or 3, across processes, GPUs and nodes.

It meets the same ``TrainingBackend`` interface as the torch one, so the
trainer and the engine do not change.  Our settings (``train.*``) become a
DeepSpeed config; a user's own JSON (``train.deepspeed_config``) wins wherever
it says something.  Gradients are averaged over the data-parallel processes by
DeepSpeed itself.  Without a launcher the backend runs as a world of one.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch

from cyclealign.errors import ConfigError, WhiteboxError
from cyclealign.infra.process_group import init_distributed

DS_TAG = "deepspeed"  # the sub-directory of a checkpoint holding DeepSpeed's own files


def _merge(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """``theirs`` wins; nested sections are merged key by key."""
    out = dict(ours)
    for key, value in theirs.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def deepspeed_config(train: Any, dtype: torch.dtype, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config for ``train`` (one micro-batch per step and process; AdamW as the torch backend)."""
    ours: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": world_size,
        "zero_optimization": {"stage": train.zero_stage},
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": train.lr, "weight_decay": train.weight_decay, "torch_adam": True},
        },
        "bf16": {"enabled": dtype == torch.bfloat16},
        "fp16": {"enabled": dtype == torch.float16},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if train.max_grad_norm is not None:
        ours["gradient_clipping"] = train.max_grad_norm
    if train.deepspeed_config is None:
        return ours
    path = Path(train.deepspeed_config).expanduser()
    try:
        theirs = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"train.deepspeed_config: cannot read {path} ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"train.deepspeed_config: {path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(theirs, dict):
        raise ConfigError(f"train.deepspeed_config: {path} must hold a JSON object")
    return _merge(ours, theirs)


def zero3_load_config(train: Any, whitebox: Any) -> dict[str, Any] | None:
    """The run's DeepSpeed config when it partitions parameters (ZeRO-3): the model is then loaded partitioned."""
    if train.backend != "deepspeed":
        return None
    from cyclealign.whitebox.loading import pick_device, resolve_dtype

    init_distributed()
    dtype = resolve_dtype(whitebox.dtype, pick_device(whitebox.device))
    config = deepspeed_config(train, dtype, torch.distributed.get_world_size())
    return config if int(config["zero_optimization"].get("stage", 0)) == 3 else None


class DeepSpeedBackend:
    """``deepspeed.initialize`` over the trainable parameters; ``step`` is backward + step of the engine.

    Its checkpoints hold the module's weights too (``saves_weights``).  Under ZeRO-3
    each process holds a slice of every weight: :meth:`full_weights` gathers them
    (every process at once) for generation and saving, as one collective per use
    instead of one per layer and decoding step, which would need every process to
    decode exactly as many tokens as the others.
    """

    saves_weights = True

    def __init__(self, model: Any, train: Any) -> None:
        init_distributed()  # first: without DeepSpeed installed, a SetupError with the install hint
        import deepspeed

        self.rank = torch.distributed.get_rank()
        self.world_size = torch.distributed.get_world_size()
        self._params = [p for p in model.parameters() if p.requires_grad]
        if not self._params:
            raise WhiteboxError("the model has no trainable parameters (see whitebox.lora_target_modules)")
        dtype = next(model.parameters()).dtype
        self.config = deepspeed_config(train, dtype, self.world_size)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, model_parameters=self._params, config=self.config
        )
        self.zero_stage = int(self.config["zero_optimization"].get("stage", 0))
        self.module = model

    def full_weights(self) -> Any:
        """A context in which every process holds all weights (ZeRO-3); otherwise nothing to do."""
        if self.zero_stage < 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None)

    @property
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return self._params

    @property
    def lr(self) -> float:
        """The learning rate the next update uses."""
        return float(self.engine.get_lr()[0])

    def step(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)
        self.engine.step()

    def save(self, directory: Path) -> None:
        """Every process writes its part (optimizer partitions; ZeRO-3: parameter partitions too)."""
        self.engine.save_checkpoint(str(directory), tag=DS_TAG, save_latest=False)

    def load(self, directory: Path) -> None:
        self.engine.load_checkpoint(str(directory), tag=DS_TAG, load_module_strict=False)
