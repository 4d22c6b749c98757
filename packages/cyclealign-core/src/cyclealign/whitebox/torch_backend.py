"""The torch backend: AdamW on one device, with accumulation, clipping and an LR schedule."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import torch

from cyclealign.errors import ConfigError, RunDirError, WhiteboxError


def lr_factor(kind: str, update: int, warmup_steps: int = 0, total_steps: int | None = None) -> float:
    """The LR multiplier of optimizer update ``update`` (0-based), as transformers' ``get_*_schedule_with_warmup``.

    Linear warm-up from 0 over ``warmup_steps`` updates, then constant, or a
    linear/cosine decay reaching 0 at ``total_steps`` and staying there.
    """
    if update < warmup_steps:
        return update / warmup_steps
    if kind == "constant":
        return 1.0
    if total_steps is None:
        raise ConfigError(f"train.total_steps: lr_scheduler={kind} needs the number of updates")
    progress = min(1.0, (update - warmup_steps) / max(1, total_steps - warmup_steps))
    if kind == "linear":
        return 1.0 - progress
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ConfigError(f"train.lr_scheduler: unknown schedule {kind!r} (known: constant, linear, cosine)")


class TorchBackend:
    """AdamW over the trainable parameters on one device, with accumulation, clipping and an LR schedule.

    Every ``grad_accum``-th call of ``step`` makes one optimizer update from the
    mean of the accumulated gradients (each loss is divided by ``grad_accum``),
    clipped at the update; the LR schedule (``LambdaLR``) advances per update, so
    ``warmup_steps``/``total_steps`` count updates, not calls.  ``state_dict``
    holds the optimizer, the scheduler, the accumulation counter and, part-way
    through an accumulation, CPU copies of the accumulated gradients: a resume
    continues exactly.  ``flush`` applies a partial accumulation (e.g. at the end).
    """

    saves_weights = False  # the trainer saves the trainable weights beside the optimizer state

    def full_weights(self) -> Any:
        """All weights are here already (one device)."""
        return contextlib.nullcontext()

    def __init__(
        self,
        model: Any,
        lr: float,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = 1.0,
        *,
        grad_accum: int = 1,
        lr_scheduler: str = "constant",
        warmup_steps: int = 0,
        total_steps: int | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        self._params = [p for p in model.parameters() if p.requires_grad]
        if not self._params:
            raise WhiteboxError("the model has no trainable parameters (see whitebox.lora_target_modules)")
        if any(p.dtype == torch.float16 for p in self._params):
            raise ConfigError(
                "whitebox.dtype=float16: AdamW cannot update float16 weights directly (no loss scaling); "
                "use bfloat16, or finetune=lora (its adapters stay float32)"
            )
        if grad_accum < 1:
            raise ConfigError(f"train.grad_accum: must be at least 1 (got {grad_accum})")
        lr_factor(lr_scheduler, warmup_steps, warmup_steps, total_steps)  # a bad schedule fails here, not later
        if gradient_checkpointing:
            from cyclealign.whitebox.loading import enable_gradient_checkpointing

            enable_gradient_checkpointing(model)
        self.optimizer = torch.optim.AdamW(self._params, lr=lr, weight_decay=weight_decay)

        def factor(update: int) -> float:  # a plain function: LambdaLR then keeps it out of its state_dict
            return lr_factor(lr_scheduler, update, warmup_steps, total_steps)

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.max_grad_norm = max_grad_norm
        self.grad_accum = grad_accum
        self.accum_count = 0  # calls of step whose gradients await the next update

    @classmethod
    def from_config(cls, model: Any, train: Any) -> TorchBackend:
        """The backend ``train`` (a ``TrainConfig``) describes."""
        return cls(
            model,
            train.lr,
            train.weight_decay,
            train.max_grad_norm,
            grad_accum=train.grad_accum,
            lr_scheduler=train.lr_scheduler,
            warmup_steps=train.warmup_steps,
            total_steps=train.total_steps,
            gradient_checkpointing=train.gradient_checkpointing,
        )

    @property
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return self._params

    @property
    def lr(self) -> float:
        """The learning rate the next update uses."""
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, loss: torch.Tensor) -> None:
        """backward of ``loss / grad_accum``; on every ``grad_accum``-th call: clip, update, schedule, zero."""
        (loss / self.grad_accum).backward()
        self.accum_count += 1
        if self.accum_count >= self.grad_accum:
            self._update()

    def flush(self) -> bool:
        """Update now from a partial accumulation (rescaled to its own mean); False when nothing is pending."""
        if self.accum_count == 0:
            return False
        scale = self.grad_accum / self.accum_count
        for p in self._params:
            if p.grad is not None:
                p.grad.mul_(scale)
        self._update()
        return True

    def _update(self) -> None:
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self._params, self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.accum_count = 0

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "accum_count": self.accum_count,
        }
        if self.accum_count:
            state["accum_grads"] = [None if p.grad is None else p.grad.detach().cpu().clone() for p in self._params]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "optimizer" not in state:  # a checkpoint from before schedules and accumulation: the optimizer alone
            self.optimizer.load_state_dict(state)
            return
        count = int(state.get("accum_count", 0))
        grads = state.get("accum_grads") or [None] * len(self._params)
        if count >= self.grad_accum:
            raise ConfigError(f"train.grad_accum: the checkpoint is {count} steps into accumulating {self.grad_accum}")
        if len(grads) != len(self._params):
            raise RunDirError(f"the checkpoint holds {len(grads)} gradients for {len(self._params)} parameters")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for p, g in zip(self._params, grads, strict=True):
            p.grad = None if g is None else g.to(device=p.device, dtype=p.dtype)
        self.accum_count = count

    def save(self, directory: Path) -> None:
        torch.save(self.state_dict(), directory / "optimizer.pt")

    def load(self, directory: Path) -> None:
        self.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=True))
