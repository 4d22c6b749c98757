"""The optimisation step: one padded forward over all candidates, the loss, one backend step.

The backend is the only part that knows *how* parameters are updated (plain
PyTorch on one device here; another backend would slot in behind the same
methods), so the engine and the trainer never change when the backend does.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from cyclealign.errors import ConfigError, RunDirError
from cyclealign.infra.lockstep import Lockstep, Solo
from cyclealign.protocols import Candidate, LossBatch, Prompt, RankLoss
from cyclealign.whitebox.batching import encode_candidates, sequence_logps
from cyclealign.whitebox.loading import WhiteBox
from cyclealign.whitebox.packed import (
    FLEX,
    MASKABLE,
    PackedBatch,
    attention_implementation,
    attention_of,
    body_and_head,
    encode_packed,
    packed_candidate_logps,
    split_by_prompt,
    supports_flex,
)
from cyclealign.whitebox.prefix import SharedBatch, choose_sharing_path, encode_shared, shared_sequence_logps
from cyclealign.whitebox.torch_backend import TorchBackend


@runtime_checkable
class TrainingBackend(Protocol):
    """Applies a loss to the trainable parameters and owns the optimizer state.

    The trainer only computes the loss; how gradients are reduced, clipped and
    applied (on one device, or sharded across several) is the backend's
    business, so a new backend never touches the trainer or the engine.
    """

    @property
    def trainable_parameters(self) -> list[torch.nn.Parameter]: ...

    def step(self, loss: torch.Tensor) -> None:
        """backward, clip, optimizer step, zero the gradients."""
        ...

    saves_weights: bool  # True: ``save`` keeps the module's weights too

    def save(self, directory: Path) -> None:
        """Write the optimizer's state (and whatever else the backend owns) into ``directory``."""
        ...

    def full_weights(self) -> Any:
        """A context in which this process holds every weight (entered by all processes at once)."""
        ...

    def load(self, directory: Path) -> None: ...


class PolicyTrainer:
    """``L_rank + λ·L_sft`` over ranked candidates, as the engine's ``Trainer``.

    The DPO reference: with LoRA it is the same model with its adapter switched
    off (``disable_adapter``), so no second copy exists.  Full fine-tuning has
    no adapter to switch off, so a frozen copy is unavoidable; it is made here,
    before any update and only if the loss asks for a reference -- making it
    later (say at the first step) would freeze a model already restored from a
    checkpoint, i.e. the wrong reference.
    """

    def __init__(
        self,
        whitebox: WhiteBox,
        loss: RankLoss,
        backend: TrainingBackend,
        max_length: int = 512,
        lockstep: Lockstep | None = None,
        prefix_sharing: bool | str = False,
        compile: bool = False,
    ) -> None:
        self.wb = whitebox
        self.loss = loss
        self.backend = backend
        self.max_length = max_length
        self.lockstep = lockstep or Solo()
        self.forward_passes = 0
        # The layout: padded rows, the prompt's key/value cache shared (prefix.py), or packed (packed.py).
        path = {True: "cache", False: "padded"}.get(prefix_sharing, prefix_sharing)  # type: ignore[call-overload]
        if path not in ("padded", "cache", "packed"):
            raise ConfigError(f"train.prefix_sharing: unknown path {prefix_sharing!r}")
        self.sharing_path: str = path
        self.prefix_sharing = path != "padded"
        # FlexAttention for the packed step where its fused kernels exist (CUDA; it has no backward on the CPU).
        on_gpu = torch.device(whitebox.device).type == "cuda"
        self.attention = FLEX if path == "packed" and on_gpu and supports_flex(whitebox.model) else None
        if path == "packed" and self.attention is None and attention_of(whitebox.model) not in MASKABLE:
            raise ConfigError(
                f"train.prefix_sharing=packed: whitebox.attn_implementation={attention_of(whitebox.model)} takes no "
                f"sharing mask here (use one of {', '.join(MASKABLE)}, or prefix_sharing=cache/false)"
            )
        self.compile = compile
        self._compiled: dict[int, Any] = {}
        self._frozen_reference: Any = None
        if loss.needs_reference and not whitebox.uses_lora:
            self._frozen_reference = copy.deepcopy(whitebox.model).eval().requires_grad_(False)

    def encode(
        self, prompts: Sequence[Prompt], candidates: Sequence[Sequence[Candidate]], max_length: int | None = None
    ) -> Any:
        """The candidates laid out for this trainer's path: ``SharedBatch`` (cache), ``PackedBatch`` or padded rows."""
        encode = {"padded": encode_candidates, "cache": encode_shared, "packed": encode_packed}[self.sharing_path]
        tok, cfg = self.wb.tokenizer, self.wb.config
        limit = max_length or self.max_length
        return encode(tok, prompts, candidates, limit, cfg.max_prompt_tokens, cfg.prompt_format).to(self.wb.device)

    def logps(self, model: Any, enc: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed response log-probs and lengths by ``enc``'s layout: ``[B, n]``, or flat ``[C]`` when packed."""
        if isinstance(enc, PackedBatch):
            return packed_candidate_logps(model, enc, self._body(model))
        return shared_sequence_logps(model, enc) if isinstance(enc, SharedBatch) else sequence_logps(model, enc)

    def _body(self, model: Any) -> Any:
        """The model's body under ``torch.compile`` (``train.compile``), compiled once per model; None: as it is."""
        if not self.compile:
            return None
        if id(model) not in self._compiled:
            self._compiled[id(model)] = torch.compile(body_and_head(model)[0])
        return self._compiled[id(model)]

    def _attention(self) -> Any:
        """The step's attention kernel (FlexAttention for the packed step on CUDA), held over forward and backward."""
        stack = contextlib.ExitStack()
        for model in (self.wb.model, self._frozen_reference):
            if model is not None:
                stack.enter_context(attention_implementation(model, self.attention))
        return stack

    def reference_logps(self, enc: Any) -> torch.Tensor:
        """The frozen reference's summed log-probs, in eval mode (no dropout) and without gradients."""
        self.forward_passes += 1
        with torch.no_grad():
            if self._frozen_reference is not None:
                return self.logps(self._frozen_reference, enc)[0]
            model = self.wb.model
            was_training = model.training
            model.eval()
            try:
                with model.disable_adapter():
                    return self.logps(model, enc)[0]
            finally:
                model.train(was_training)

    def _group_loss(self, batches: Sequence[LossBatch]) -> tuple[torch.Tensor, dict[str, float], int]:
        """One forward over every candidate of ``batches`` (all with the same n), then the loss."""
        enc = self.encode([b.prompt for b in batches], [b.candidates for b in batches])
        logps, lengths = self.logps(self.wb.model, enc)
        self.forward_passes += 1
        ref = self.reference_logps(enc) if self.loss.needs_reference else None
        return self._loss_of(batches, logps, lengths, ref)

    def _loss_of(
        self, batches: Sequence[LossBatch], logps: torch.Tensor, lengths: torch.Tensor, ref: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, float], int]:
        rewards = torch.tensor([list(b.rewards) for b in batches], dtype=logps.dtype, device=logps.device)
        out = self.loss(logps, lengths, rewards, ref)
        return out.total, dict(out.parts), int(lengths.sum())

    def _packed_losses(self, groups: dict[int, list[LossBatch]]) -> list[tuple[torch.Tensor, dict[str, float], int]]:
        """Every group in ONE packed forward (counts may differ), then each group's loss on its rows."""
        order = [b for group in groups.values() for b in group]
        enc = self.encode([b.prompt for b in order], [b.candidates for b in order])
        flat, lengths = self.logps(self.wb.model, enc)
        self.forward_passes += 1
        columns = [flat, lengths] + ([self.reference_logps(enc)] if self.loss.needs_reference else [])
        per_prompt = [split_by_prompt(c, enc.counts) for c in columns]
        results, at = [], 0
        for group in groups.values():
            rows = [torch.stack(c[at : at + len(group)]) for c in per_prompt]
            at += len(group)
            results.append(self._loss_of(group, rows[0], rows[1], rows[2] if len(rows) > 2 else None))
        return results

    def _group_losses(self, groups: dict[int, list[LossBatch]]) -> list[tuple[torch.Tensor, dict[str, float], int]]:
        if self.sharing_path == "packed" and groups:
            return self._packed_losses(groups)
        return [self._group_loss(group) for group in groups.values()]

    def step(self, batches: Sequence[LossBatch]) -> dict[str, float]:
        """One optimisation step over ``batches``; returns the loss parts plus token count and wall time.

        Batches with the same number of candidates share one forward pass.  Mixed
        counts (e.g. the oracle's answer missing for one prompt) are grouped by
        n, one pass per group (on the packed path all groups share one pass), and
        the group losses weighted by their share of prompts, so the step equals
        the loss's own batch mean.
        """
        world = self.lockstep.world_size
        if not batches and world == 1:
            raise ValueError("a training step needs at least one LossBatch")
        for b in batches:
            if len(b.rewards) != len(b.candidates):
                raise ValueError(f"prompt {b.prompt.id}: {len(b.candidates)} candidates but {len(b.rewards)} rewards")
        t0 = time.perf_counter()
        groups: dict[int, list[LossBatch]] = {}
        for b in batches:
            groups.setdefault(len(b.candidates), []).append(b)
        self.wb.model.train()
        with self._attention():
            return self._step(batches, groups, t0)

    def _step(self, batches: Sequence[LossBatch], groups: dict[int, list[LossBatch]], t0: float) -> dict[str, float]:
        world = self.lockstep.world_size
        # Every process makes as many forward passes as the busiest one (ZeRO-3 gathers weights in each).
        passes = min(len(groups), 1) if self.sharing_path == "packed" else len(groups)
        busiest = max(self.lockstep.gather(max(passes, 1))) if world > 1 else passes
        padding = [self._zero_loss() for _ in range(busiest - passes)]  # zero-weight passes
        total: torch.Tensor | None = sum(padding[1:], start=padding[0]) if padding else None
        parts: dict[str, float] = {}
        tokens = 0
        for group, (loss, group_parts, n_tokens) in zip(groups.values(), self._group_losses(groups), strict=True):
            weight = len(group) / len(batches)
            total = loss * weight if total is None else total + loss * weight
            for key, value in group_parts.items():
                parts[key] = parts.get(key, 0.0) + weight * float(value)
            tokens += n_tokens
        assert total is not None
        if not torch.isfinite(total):
            raise FloatingPointError(f"non-finite loss {float(total)} (parts {parts})")
        # Data parallel: the backend averages gradients over processes, so each weighs its loss by its share
        # of the step's prompts; the step then equals one process's over all of them.
        shares = self.lockstep.gather((len(batches), parts, tokens))
        n_all = sum(n for n, _, _ in shares)
        self.backend.step(total * (world * len(batches) / n_all))
        merged: dict[str, float] = {}
        for n, part, _ in shares:
            for key, value in part.items():
                merged[key] = merged.get(key, 0.0) + value * n / n_all
        return {**merged, "train_tokens": float(sum(t for _, _, t in shares)), "step_s": time.perf_counter() - t0}

    def _zero_loss(self) -> torch.Tensor:
        """A loss of zero that still reaches every trainable parameter: a process with nothing to train keeps step.

        It takes the same path (and so the same number of forward calls) as a real group: ZeRO-3 gathers per call.
        """
        enc = self.encode([Prompt.from_text("-", "hi")], [(Candidate("ok"),)], max_length=16)
        loss = self.logps(self.wb.model, enc)[0].sum() * 0.0
        if self.loss.needs_reference:  # the reference pass of a real group, matched too
            loss = loss + self.reference_logps(enc).sum() * 0.0
        return loss

    # ------------------------------------------------------------ checkpoints (no pickles)
    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.wb.model.named_parameters() if p.requires_grad}

    def save_state(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        if self.lockstep.rank == 0 and not self.backend.saves_weights:
            save_file(self.trainable_state(), str(directory / "trainable.safetensors"))
        self.backend.save(directory)

    def load_state(self, directory: Path) -> None:
        if self.backend.saves_weights:
            self.backend.load(directory)
            return
        from safetensors.torch import load_file

        saved = load_file(str(directory / "trainable.safetensors"))
        params = dict(self.wb.model.named_parameters())
        missing = [n for n, p in params.items() if p.requires_grad and n not in saved]
        if missing:
            raise RunDirError(f"{directory}: checkpoint lacks trainable tensors, e.g. {missing[:3]}")
        with torch.no_grad():
            for name, tensor in saved.items():
                params[name].copy_(tensor.to(params[name].device))
        self.backend.load(directory)


def build_trainer(whitebox: WhiteBox, loss: RankLoss, train: Any, lockstep: Lockstep | None = None) -> PolicyTrainer:
    """The trainer with the backend ``train.backend`` names."""
    backend: TrainingBackend
    if train.backend == "torch":
        backend = TorchBackend.from_config(whitebox.model, train)
    elif train.backend == "deepspeed":
        from cyclealign.whitebox.deepspeed_backend import DeepSpeedBackend

        backend = DeepSpeedBackend(whitebox.model, train)
    else:
        raise ConfigError(f"train.backend: unknown backend {train.backend!r} (known: torch, deepspeed)")
    path = choose_sharing_path(whitebox.model, train.prefix_sharing, train.gradient_checkpointing, whitebox.device)
    return PolicyTrainer(
        whitebox, loss, backend, train.max_length, lockstep, prefix_sharing=path, compile=train.compile
    )


def save_trainable(whitebox: WhiteBox, directory: Path, trainer: PolicyTrainer | None = None) -> None:
    """The trained weights, atomically: the LoRA adapter (``save_pretrained``) or the full model, with its card.

    With a data-parallel ``trainer`` every process must call this (ZeRO-3 gathers the weights); the first writes.
    The model card (README.md) is built from the run directory around ``directory``.
    """
    from cyclealign.infra.store import atomic_replace_dir
    from cyclealign.whitebox.model_card import write_model_card

    def fill(tmp: Path) -> None:
        whitebox.model.save_pretrained(tmp)
        if not whitebox.uses_lora:
            whitebox.tokenizer.save_pretrained(tmp)
        write_model_card(tmp, Path(directory).parent, kind="adapter" if whitebox.uses_lora else "model")

    with trainer.backend.full_weights() if trainer is not None else contextlib.nullcontext():
        if trainer is None or trainer.lockstep.rank == 0:
            atomic_replace_dir(Path(directory), fill)


def weights_digest(whitebox: WhiteBox, trainer: PolicyTrainer) -> str:
    """A hash of this process's full trainable weights (every process calls it): equal digests, equal weights."""
    import hashlib

    digest = hashlib.sha256()
    with trainer.backend.full_weights():
        for name, p in whitebox.model.named_parameters():
            if p.requires_grad:
                digest.update(name.encode())
                digest.update(p.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
