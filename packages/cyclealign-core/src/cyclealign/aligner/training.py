"""Training the corrector: supervised, on the correction tokens (and EOS) only, after an identity warm-up.

It is the offline recipe (:mod:`cyclealign.offline.recipe`) with the SFT loss and
one response per prompt: the prompt is the corrector's template filled with the
question and the answer, the target is the correction followed by EOS, and the
trainer's response mask leaves every prompt token out of the loss.  A warm-up
stage first trains on identity triples (correction = answer), so the model
starts by learning to copy a good answer before it learns to change a bad one,
as the Aligner paper does; the warm-up can be switched off (``warmup_epochs: 0``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from cyclealign.aligner.corrector import Corrector
from cyclealign.aligner.prompt import CorrectorPrompt
from cyclealign.aligner.settings import AlignerTrainConfig
from cyclealign.aligner.triples import Triple, read_triples, triples_from_run
from cyclealign.callbacks import Callback
from cyclealign.errors import ConfigError
from cyclealign.offline.recipe import OfflineWork, offline_lifecycle
from cyclealign.offline.records import RankedExample
from cyclealign.offline.schedule import Stage
from cyclealign.offline.sft import SftLoss
from cyclealign.run.assembly import NO_PARTS, Parts
from cyclealign.run.lifecycle import RunLifecycle, RunResult


def corrector_prompt(config: AlignerTrainConfig) -> CorrectorPrompt:
    return CorrectorPrompt(config.aligner.template, config.whitebox.max_prompt_tokens)


def examples(triples: Sequence[Triple], prompt: CorrectorPrompt, *, identity: bool = False) -> list[RankedExample]:
    """Each triple as one prompt with one target: the correction (or, for the warm-up, the answer itself)."""
    return [
        RankedExample(
            f"{'copy' if identity else 'fix'}-{k}",
            prompt.prompt(t.question, t.answer, id=f"triple-{k}"),
            (t.answer if identity else t.correction,),
            None,
            t.source,
        )
        for k, t in enumerate(triples)
    ]


def heldout_loss(trainer: Any, heldout: Sequence[RankedExample], batch_size: int = 8) -> dict[str, float] | None:
    """Token-mean NLL of the held-out corrections (lower is better), and how many tokens it covers."""
    if not heldout:
        return None
    model = trainer.wb.model
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, len(heldout), batch_size):
                chunk = [ex.loss_batch() for ex in heldout[start : start + batch_size]]
                enc = trainer.encode([b.prompt for b in chunk], [b.candidates for b in chunk])
                logps, lengths = trainer.logps(model, enc)
                total += -float(logps.sum())
                tokens += int(lengths.sum())
    finally:
        model.train(was_training)
    return {"loss": total / max(tokens, 1), "tokens": float(tokens), "examples": float(len(heldout))}


def load_triples(config: AlignerTrainConfig) -> list[Triple]:
    a = config.aligner
    if not a.data and not a.runs:
        raise ConfigError("aligner.data / aligner.runs: name at least one file of triples or one run directory")
    triples = [t for path in a.data for t in read_triples(path, lenient=a.lenient)]
    return triples + [t for run in a.runs for t in triples_from_run(run)]


def build_recipe(
    config: AlignerTrainConfig,
    *,
    console: Console | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    triples: list[Triple] | None = None,
    parts: Parts = NO_PARTS,
) -> RunLifecycle:
    """The corrector's training as a run lifecycle: the warm-up and correction stages, saved as a corrector."""
    a = config.aligner
    prompt = corrector_prompt(config)
    triples = load_triples(config) if triples is None else triples
    seed = config.run.seed if a.seed is None else a.seed
    order = list(range(len(triples)))
    random.Random(f"{seed}:heldout").shuffle(order)
    k = 0 if a.heldout_fraction <= 0 else max(1, round(a.heldout_fraction * len(triples)))
    if a.max_heldout is not None:
        k = min(k, a.max_heldout)
    held = [triples[i] for i in sorted(order[:k])]
    train = [triples[i] for i in sorted(order[k:])]
    if not train:
        raise ConfigError(f"aligner.heldout_fraction={a.heldout_fraction} leaves nothing to train on")
    stages = [
        Stage("warmup", examples(train, prompt, identity=True), a.warmup_epochs, a.warmup_max_steps),
        Stage("correct", examples(train, prompt), a.epochs, a.max_steps),
    ]
    output = config.output

    def save(whitebox: Any, trainer: Any, store: Any) -> None:
        with trainer.backend.full_weights():
            if trainer.lockstep.rank == 0:
                Corrector.from_whitebox(whitebox, prompt).save(output, store.path)

    work = OfflineWork(
        config,
        stages,
        examples(held, prompt),
        SftLoss(),
        batch_size=a.batch_size,
        seed=seed,
        shuffle=a.shuffle,
        evaluate=heldout_loss,
        save=save,
        kind="aligner",
        command="cyclealign aligner train",
        parts=parts,
    )
    return offline_lifecycle(work, console=console, resume=resume, callbacks=callbacks)


def train_corrector(
    config: AlignerTrainConfig,
    *,
    console: Console | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    **given: Any,
) -> RunResult:
    """Train and save a corrector as configured; ``Corrector.load(config.output)`` then uses it.

    ``callbacks`` watch the run (with the trackers of ``run.report_to``): start, steps, checkpoints, end.
    ``given``: ``triples`` and ``parts`` handed in from Python (``cyclealign.api.AlignerTrainer``).
    """
    result = build_recipe(config, console=console, resume=resume, callbacks=callbacks, **given).run()
    result.summary["corrector"] = str(config.output)
    return result


def resume_corrector(
    run_dir: Path,
    *,
    console: Console | None = None,
    changes: list[str] | None = None,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Continue a corrector's training in ``run_dir`` (``changes``: refused, by key)."""
    from cyclealign.run.resume_changes import load_resumed

    command = "cyclealign aligner train"
    config = load_resumed(Path(run_dir), list(changes or []), AlignerTrainConfig, command=command, allowed=())
    return train_corrector(config, console=console, resume=True, callbacks=callbacks)
