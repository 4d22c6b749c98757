"""Turn a config into the parts of a run: pure wiring, no policy.

Each ``build_*`` makes one part from its config section; what a run does with
them (status, checkpoints, resume, stop) is :mod:`cyclealign.run.lifecycle`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from cyclealign import plugins
from cyclealign.config import Config
from cyclealign.cycle.agreement import make_agreement
from cyclealign.cycle.engine import Cycle
from cyclealign.cycle.rewards import ranks_to_rewards
from cyclealign.cycle.state import CycleSettings, CycleTotals
from cyclealign.errors import ConfigError, DataError
from cyclealign.infra.lockstep import Lockstep
from cyclealign.infra.store import RunDir
from cyclealign.oracle.demos import DemoPool
from cyclealign.oracle.static_demo import load_static_demo
from cyclealign.protocols import Oracle, Prompt, RankLoss
from cyclealign.run.checkpoint import reseed_all
from cyclealign.usage import Usage

_AHEAD_ALONE = (
    "cycle.sample_ahead=true runs in a single torch process (train.backend=torch, no launcher): "
    "draws made while waiting would not stay in step across processes"
)


@dataclass(frozen=True)
class Parts:
    """Parts handed in as Python objects (the object API, :mod:`cyclealign.api`) instead of built from names.

    Each one given replaces what its config section would build; the config then names it
    ``in-memory:<digest>`` (``config.IN_MEMORY``). Nothing given: everything comes from the config.
    """

    model: Any = None  # a PreTrainedModel or PeftModel, used in place
    tokenizer: Any = None
    oracle: Any = None  # an Oracle, a ChatBackend, or a function (prompt, answers) -> ranking
    loss: RankLoss | None = None
    prompts: list[Prompt] | None = None

    def given(self) -> tuple[str, ...]:
        """The plugin kinds handed in (no plugin is looked up for them)."""
        return tuple(k for k in ("oracle", "loss") if getattr(self, k) is not None)


NO_PARTS = Parts()


def load_training_prompts(config: Config, parts: Parts = NO_PARTS) -> list[Prompt]:
    from cyclealign.data import load_prompts

    return load_prompts(config.data, seed=config.run.seed, given=parts.prompts)


def build_loss(config: Config, parts: Parts = NO_PARTS) -> RankLoss:
    if parts.loss is not None:
        return parts.loss
    return plugins.create_loss(config.loss, num_samples=config.cycle.num_samples)


def check_cheaply(config: Config, parts: Parts = NO_PARTS) -> tuple[list[Prompt], RankLoss]:
    """What can be checked in a second, before the run directory is touched: prompts, loss, model, oracle name."""
    from cyclealign.oracle.prompts import load_instruction
    from cyclealign.whitebox.loading import resolve_model

    prompts = load_training_prompts(config, parts)
    loss = build_loss(config, parts)
    if parts.model is None:
        resolve_model(config.whitebox.model, config.whitebox.gguf_file)
    plugins.check_options(config, skip=parts.given())  # the oracle's name and options (the loss's: built above)
    load_instruction(config.oracle.instruction_file)  # a missing or empty file fails before the run starts
    load_static_demo(config.oracle.static_demo_file)  # so does a malformed static demonstration
    if config.cycle.sample_ahead and config.train.backend == "deepspeed":
        raise ConfigError(_AHEAD_ALONE)
    return prompts, loss


def build_oracle(
    config: Config, store: RunDir, spent: Usage | None = None, *, share: float = 1.0, parts: Parts = NO_PARTS
) -> Oracle:
    """The configured oracle (or the one handed in), caching into the run directory unless told otherwise.

    ``share`` of ``oracle.budget_usd`` is this process's (each of K data-parallel
    processes may spend 1/K of it, so together they never exceed it).
    """
    oracle_cfg = config.oracle
    if oracle_cfg.cache and oracle_cfg.cache_path is None:
        oracle_cfg = oracle_cfg.model_copy(update={"cache_path": store.cache_path})
    if oracle_cfg.budget_usd is not None and share != 1.0:
        oracle_cfg = oracle_cfg.model_copy(update={"budget_usd": oracle_cfg.budget_usd * share})
    if parts.oracle is not None:
        return plugins.as_oracle(parts.oracle, oracle_cfg, spent=spent)
    return plugins.create_oracle(oracle_cfg, spent=spent)


def fit_prompts(prompts: list[Prompt], tokenizer: Any, config: Config, console: Console) -> list[Prompt]:
    """Prompts longer than ``whitebox.max_prompt_tokens``: keep their tail (counted) or reject the run."""
    from cyclealign.whitebox import encode_prompt

    limit = config.whitebox.max_prompt_tokens
    too_long = [p for p in prompts if encode_prompt(tokenizer, p, limit, config.whitebox.prompt_format)[1]]
    if too_long and config.data.overlong == "reject":
        ids = ", ".join(p.id for p in too_long[:5])
        raise DataError(
            f"{len(too_long)} prompt(s) exceed whitebox.max_prompt_tokens={limit} (e.g. {ids}); "
            "shorten them, raise the limit, or set data.overlong=truncate"
        )
    if too_long:
        console.print(f"[yellow]{len(too_long)} prompt(s) longer than {limit} tokens keep their last {limit}[/yellow]")
    return prompts


def build_whitebox(
    config: Any, loss: RankLoss, lockstep: Lockstep | None = None, parts: Parts = NO_PARTS
) -> tuple[Any, Any]:
    """The white-box model (seeded: the same initial weights in every process), or the one handed in; its trainer."""
    from cyclealign.whitebox import build_trainer, load_whitebox
    from cyclealign.whitebox.deepspeed_backend import zero3_load_config
    from cyclealign.whitebox.loading import wrap_whitebox

    reseed_all(f"{config.run.seed}:init")
    zero3 = zero3_load_config(config.train, config.whitebox)  # ZeRO-3: each process loads its shard only
    if parts.model is None:
        whitebox = load_whitebox(config.whitebox, seed=config.run.seed, zero3=zero3)
    elif zero3 is not None:
        raise ConfigError("train.zero_stage=3 loads each shard from disk; give the model by name, not in memory")
    else:
        whitebox = wrap_whitebox(parts.model, parts.tokenizer, config.whitebox, seed=config.run.seed)
    return whitebox, build_trainer(whitebox, loss, config.train, lockstep)


def build_pool(config: Config, store: RunDir) -> DemoPool:
    """The demonstration pool over the run directory's journal of demonstrations."""
    c = config.cycle
    return DemoPool(
        load_static_demo(config.oracle.static_demo_file),
        use_static=c.icl,
        use_dynamic=c.icl and c.dynamic_demos,
        max_dynamic=c.max_dynamic_demos,
        selection=c.demo_selection,
        token_budget=c.demo_token_budget,
        journal=store,
    )


def build_cycle(
    config: Config,
    *,
    whitebox: Any,
    oracle: Oracle,
    trainer: Any,
    store: RunDir,
    totals: CycleTotals,
    should_stop: Callable[[], bool],
    lockstep: Lockstep | None = None,
    on_step: Callable[[dict[str, Any]], None] = lambda record: None,
) -> Cycle:
    """The engine of Figure 2, wired to the real parts and journalling into ``store``."""
    from cyclealign.whitebox import LogProbRanker
    from cyclealign.whitebox.sampler import HFSampler

    c = config.cycle
    if c.sample_ahead and lockstep is not None and lockstep.world_size > 1:
        raise ConfigError(_AHEAD_ALONE)
    return Cycle(
        sampler=HFSampler(whitebox, config.whitebox),
        oracle=oracle,
        self_ranker=LogProbRanker(c.self_rank),
        agreement=make_agreement(c.agreement),
        trainer=trainer,
        demos=build_pool(config, store),
        rewards=lambda order: ranks_to_rewards(order, c.reward_scheme),
        settings=CycleSettings.from_config(c, seed=config.run.seed, shuffle=config.oracle.shuffle_answers),
        on_record=store.add_interaction,
        on_step=on_step,
        reseed=reseed_all,
        should_stop=should_stop,
        totals=totals,
        lockstep=lockstep,
        full_weights=trainer.backend.full_weights,
    )
