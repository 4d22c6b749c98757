"""The run configuration: YAML validated by pydantic, plus dotted ``--set`` overrides.

Every decision the paper leaves open is a field here (see docs/method.md).
Unknown or ill-typed keys are errors that name the full dotted key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cyclealign.errors import ConfigError

# How the config names a part handed in as a Python object (the object API): ``in-memory:<digest>``.
# A resume needs the same object again, and the digest tells whether it is the same.
IN_MEMORY = "in-memory:"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WhiteboxConfig(Section):
    """The trainable model (Hugging Face transformers + peft)."""

    model: str = Field("embedded:smollm2", description="HF model dir/id, or 'embedded:smollm2' for the bundled GGUF")
    gguf_file: str | None = Field(None, description="GGUF file name inside `model` (loaded by transformers)")
    gguf_cache: bool = Field(
        True, description="keep a GGUF model converted to HF format in CYCLEALIGN_CACHE_DIR: later loads take seconds"
    )
    finetune: Literal["lora", "full"] = "lora"
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lora_target_modules: list[str] | None = Field(None, description="None: q_proj/k_proj/v_proj/o_proj where present")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights' dtype; auto: bfloat16 on CUDA, float32 elsewhere (log-probs are float32)"
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', …")
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_prompt_tokens: int = Field(384, ge=8, description="longer prompts are handled by data.overlong")
    prompt_format: Literal["auto", "chat_template", "hh", "alpaca"] = Field(
        "auto",
        description="prompt layout: the chat template, HH-RLHF turns (answers cut at an invented Human:/Assistant: "
        "turn), or Alpaca's; auto: chat_template when the tokenizer has one, else hh",
    )
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        None, description="None: transformers' default; flash_attention_2 needs pip install flash-attn and CUDA"
    )
    sampler: Literal["auto", "eager", "static"] = Field(
        "auto",
        description="decoding path: eager (dynamic cache, a torch.Generator per sample), static (LoRA merged for "
        "the wave, static cache, CUDA graph, keyed counter-based noise); auto: static on CUDA, eager elsewhere",
    )
    cuda_graph: bool = Field(True, description="static sampler on CUDA: replay each decoding step from a CUDA graph")


class OracleConfig(Section):
    """The black-box ranker (a registered oracle plugin) and the framework's policy around every call.

    What only one backend understands (an endpoint, a key's location, a managed server)
    is that plugin's own option, under ``oracle.options`` (``cyclealign plugins --options NAME``).
    """

    name: str = Field("local", description="registered oracle: local, chatgpt, gpt-4, or a plugin's")
    model: str | None = Field(None, description="the backend's model name; None: the backend's default")
    options: dict[str, Any] = Field(
        default_factory=dict, description="the oracle plugin's own options, checked against what it declares"
    )
    temperature: float = Field(0.0, ge=0.0)
    max_tokens: int = Field(256, ge=16)
    timeout_s: float = Field(60.0, gt=0.0, description="per-call timeout; a call past it is abandoned and retried")
    max_retries: int = Field(3, ge=0, description="transport retries (429/5xx/timeout) per call")
    max_parse_retries: int = Field(2, ge=0, description="re-asks after an invalid answer, feeding the error back")
    backoff_base_s: float = Field(1.0, ge=0.0, description="first retry waits about this long, doubling after")
    backoff_max_s: float = Field(60.0, ge=0.0, description="ceiling of one backoff, Retry-After included")
    concurrency: int = Field(8, ge=1, description="oracle calls in flight at once")
    requests_per_minute: float | None = Field(None, gt=0.0, description="space call starts across the whole run")
    cache: bool = Field(True, description="keep every answer in SQLite so no call is paid twice")
    cache_path: Path | None = Field(None, description="None: <run.dir>/oracle_cache.sqlite")
    budget_usd: float | None = Field(None, ge=0.0, description="stop cleanly before spending more than this")
    context_tokens: int = Field(
        4096, ge=512, description="oracle context window; demos are left out so prompt + max_tokens fit"
    )
    instruction_file: Path | None = Field(
        None,
        description="a text file replacing the ranking instruction (system message) of cyclealign.oracle.prompts",
    )
    static_demo_file: Path | None = Field(
        None, description="a YAML/JSON file (question, answers, ranking) replacing the built-in static demonstration"
    )
    shuffle_answers: bool = Field(True, description="show answers (and demos') in a seeded random order, mapped back")


class CycleConfig(Section):
    """The interaction loop of the paper's Figure 2."""

    num_samples: int = Field(3, ge=2, description="l: responses sampled per interaction")
    max_interactions: int = Field(5, ge=1, description="N: interactions per prompt at most")
    early_stop: bool = Field(True, description="stop a prompt's loop when both rankings are identical")
    include_oracle_response: bool = Field(True, description="prepend the oracle's own answer as the best candidate")
    reward_scheme: Literal["linear", "exponential", "reciprocal"] = "linear"
    icl: bool = Field(True, description="False: no demonstrations at all (the paper's 'w/o ICL')")
    dynamic_demos: bool = Field(True, description="False: static demonstration only (the paper's 'w/o D2')")
    max_dynamic_demos: int | None = Field(
        3, ge=0, description="dynamic demos shown at most (null: no count cap; demo_token_budget still applies)"
    )
    demo_selection: Literal["recent", "similar"] = "recent"
    demo_token_budget: int = Field(1200, ge=0, description="approximate tokens all dynamic demos may take")
    self_rank: Literal["mean_logp", "sum_logp"] = Field(
        "mean_logp", description="the white-box's own ranking: mean token log-prob, or the whole answer's log-prob"
    )
    agreement: Literal["lcs"] = "lcs"
    min_agreement: int = Field(2, ge=1, description="shortest agreement worth keeping as a demonstration")
    prompt_batch: int = Field(1, ge=1, description="prompts whose oracle calls run concurrently")
    sample_ahead: bool = Field(
        False,
        description="opt-in, one step off-policy: draw a prompt's next samples while the oracle ranks these, "
        "from the weights before this tick's step (docs/method.md)",
    )
    on_oracle_failure: Literal["skip", "self_rank"] = Field(
        "skip", description="skip: no loss for that interaction (recorded); self_rank: train on own ranking"
    )


class LossConfig(Section):
    """The ranking objective (a registered loss plugin) plus SFT."""

    name: str = Field("pro", description="registered loss: pro, rrhf, dpo, dpo-pl, lipo, or a plugin's")
    sft_weight: float | Literal["auto"] = Field("auto", description="λ; 'auto' = (l−1)² as in the paper")
    sft_reduction: Literal["mean", "sum"] = Field(
        "mean", description="SFT term: mean token log-prob (the paper's equation) or sum (PRO's released code)"
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the loss plugin's own options (dpo: beta, pairs; dpo-pl, lipo: beta; rrhf: length_penalty)",
    )


class DataConfig(Section):
    """Where the training prompts come from."""

    source: str = Field("builtin", description="'builtin', a .jsonl file of prompts, or 'hh-rlhf:<dir>'")
    max_prompts: int | None = Field(
        6, ge=1, description="prompts to train on (null: all); the default keeps the embedded demo under 10 minutes"
    )
    shuffle: bool = True
    overlong: Literal["truncate", "reject"] = "truncate"
    lenient: bool = Field(False, description="skip (and count) malformed rows instead of stopping at the first")


class TrainConfig(Section):
    """The optimisation step."""

    backend: Literal["torch", "deepspeed"] = Field(
        "torch", description="how parameters are updated: torch (one device) or deepspeed (data parallel, ZeRO)"
    )
    lr: float = Field(5e-5, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    max_length: int = Field(512, ge=16, description="prompt + response tokens in a training sequence")
    zero_stage: int = Field(2, ge=0, le=3, description="ZeRO stage with backend=deepspeed (the paper: 2)")
    collective_timeout_s: float = Field(
        1800.0, gt=0.0, description="backend=deepspeed: a process waiting longer on the others fails (one died)"
    )
    deepspeed_config: Path | None = Field(
        None, description="your own DeepSpeed JSON; our train.* settings fill what it leaves out"
    )
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward: less memory")
    prefix_sharing: bool | Literal["auto", "cache", "packed"] = Field(
        "auto",
        description="encode each prompt once for all its candidates: cache (a key/value cache expanded per "
        "candidate; no checkpointing), packed (prompt and candidates as one sequence with a sharing mask; "
        "FlexAttention on CUDA), true (packed on CUDA or with checkpointing, else cache), auto (as true for the "
        "families proven exact: llama, mistral, qwen2, gpt2), false (padded rows)",
    )
    compile: bool = Field(False, description="torch.compile the model body of the packed training step")
    grad_accum: int = Field(1, ge=1, description="optimizer update every k-th training step, gradients averaged")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="LR after warm-up: constant, or decaying to 0 at train.total_steps"
    )
    warmup_steps: int = Field(0, ge=0, description="optimizer updates of linear LR warm-up from 0")
    total_steps: int | None = Field(
        None, ge=1, description="optimizer updates (after grad_accum) the LR decays over; linear/cosine need it"
    )

    @model_validator(mode="after")
    def _schedule_needs_total_steps(self) -> TrainConfig:
        if self.lr_scheduler != "constant" and self.total_steps is None:
            raise ValueError(f"train.total_steps: lr_scheduler={self.lr_scheduler} needs the number of updates")
        if self.total_steps is not None and self.warmup_steps > self.total_steps:
            raise ValueError(f"train.warmup_steps: {self.warmup_steps} exceeds train.total_steps={self.total_steps}")
        return self


class RunConfig(Section):
    """Where results go, and reproducibility."""

    dir: Path = Path("runs/default")
    seed: int = 0
    overwrite: bool = False
    checkpoint_every: int = Field(1, ge=1, description="prompts between checkpoints")
    checkpoint_interval_s: float = Field(
        30.0, ge=0.0, description="seconds at least between checkpoints (the last prompt and a stop always save)"
    )
    progress: bool = True
    report_to: list[str] = Field(
        default_factory=list, description="experiment trackers fed live (tensorboard, mlflow, wandb, trackio, plugins)"
    )


class RootConfig(Section):
    """A whole config file (a run's, ``train``'s, ``aligner train``'s): what is saved with the run."""

    def public_dict(self) -> dict[str, Any]:
        """The resolved config as plain data; never contains secrets (keys live in env/files only)."""
        return self.model_dump(mode="json")


class Config(RootConfig):
    whitebox: WhiteboxConfig = WhiteboxConfig()
    oracle: OracleConfig = OracleConfig()
    cycle: CycleConfig = CycleConfig()
    loss: LossConfig = LossConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    run: RunConfig = RunConfig()


Schema = TypeVar("Schema", bound=BaseModel)


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"{origin}: unknown key `{key}`")
        else:
            got = e.get("input")
            lines.append(f"{origin}: `{key}`: {e['msg']} (got {got!r})")
    return "; ".join(lines)


def _parse_value(raw: str) -> Any:
    """``--set`` values are YAML scalars: 3, 0.5, true, null, [a, b], text."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def apply_overrides(
    data: dict[str, Any], overrides: list[str], schema: type[BaseModel] | None = None
) -> dict[str, Any]:
    """``section.key=value`` items into ``data``; ``schema`` (default ``Config``) names the sections.

    A plugin's option is one level deeper: ``oracle.options.api_base=…``.
    """
    sections = (schema or Config).model_fields
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set `{item}`: expected section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        nested = len(parts) == 3 and parts[1] == "options"
        if not (len(parts) == 2 or nested) or not all(parts):
            raise ConfigError(f"--set `{key}`: expected section.key (e.g. cycle.num_samples=4)")
        section, field = parts[0], parts[-1]
        if section not in sections:
            raise ConfigError(f"--set: unknown key `{key}` (sections: {', '.join(sections)})")
        node = data.setdefault(section, {})
        if nested and isinstance(node, dict):
            node = node.setdefault("options", {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set `{key}`: `{'.'.join(parts[:-1])}` is not a mapping")
        node[field] = _parse_value(raw)
    return data


# Keys that moved (most to a plugin's own options): refused with the new key, never silently dropped.
MOVED = {
    **{("oracle", k): f"oracle.options.{k}" for k in ("api_base", "api_key_env", "api_key_file", "serve_gguf")},
    **{("oracle", k): f"oracle.options.{k}" for k in ("server_ctx", "json_schema")},
    ("cycle", "shuffle"): "oracle.shuffle_answers",
    ("loss", "beta"): "loss.options.beta",
    ("loss", "dpo_pairs"): "loss.options.pairs",
    ("loss", "length_penalty"): "loss.options.length_penalty",
}
SECRET_OPTION = re.compile(r"(api_?key|secret|token|password)$", re.IGNORECASE)


def refuse_moved_and_secrets(data: dict[str, Any], origin: str) -> None:
    """Old keys name their new place; a key itself in ``oracle.options`` is refused (config.yaml is kept)."""
    for (section, key), new in MOVED.items():
        node = data.get(section)
        if isinstance(node, dict) and key in node:
            raise ConfigError(f"{origin}: {section}.{key} moved: use {new}")
    options = data.get("oracle", {}).get("options") if isinstance(data.get("oracle"), dict) else None
    for key in options if isinstance(options, dict) else ():
        if SECRET_OPTION.search(str(key)):
            raise ConfigError(
                f"{origin}: oracle.options.{key}: a key never goes into a config (it is saved with the run); "
                "put it in an environment variable or a file and name that (api_key_env / api_key_file)"
            )


def config_from_dict(data: dict[str, Any], schema: type[Schema] = Config, origin: str = "args") -> Schema:
    """A config from a mapping of sections (the object API's ``args={...}``), checked as a YAML file is."""
    refuse_moved_and_secrets(data, origin)
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, origin)) from None


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, schema: type[Schema] = Config
) -> Schema:
    """Read YAML (optional), apply ``section.key=value`` overrides, validate (against ``schema``: a run's ``Config``
    by default; ``cyclealign train`` and ``aligner train`` pass their own)."""
    data: dict[str, Any] = {}
    origin = "--set"
    if path is not None:
        from cyclealign.user_files import read_text

        p = Path(path)
        origin = str(p)
        text = read_text(p, "config file", ConfigError)
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(loaded).__name__}")
        data = loaded
    apply_overrides(data, list(overrides or []), schema)
    refuse_moved_and_secrets(data, f"{origin} (with --set)" if path is not None and overrides else origin)
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        raise ConfigError(
            _format_errors(e, f"{origin} (with --set)" if path is not None and overrides else origin)
        ) from None
