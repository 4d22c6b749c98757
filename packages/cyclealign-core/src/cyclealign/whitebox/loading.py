"""Load the white-box model: an HF directory, a GGUF file, or the embedded SmolLM2; LoRA on top."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cyclealign import embedded
from cyclealign.config import IN_MEMORY, WhiteboxConfig
from cyclealign.errors import WhiteboxError
from cyclealign.infra.process_group import bind_local_gpu, device_name
from cyclealign.whitebox.known_warnings import quiet_known_warnings

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def resolve_model(model: str, gguf_file: str | None) -> tuple[str, str | None]:
    """(directory or hub id, GGUF file name or None) for a configured model."""
    if model.startswith(IN_MEMORY):
        raise WhiteboxError(
            f"whitebox.model: {model!r} names a model that was handed in from Python; resume this run from Python "
            "with the same model: CycleAlignTrainer(model=..., resume_from=RUN_DIR)"
        )
    path = Path(model)
    if model == embedded.EMBEDDED or path.suffix == ".gguf":
        path = embedded.resolve_gguf(model, key="whitebox.model", error=WhiteboxError, needs_gguf=True)
        return str(path.parent), path.name
    if gguf_file is not None and not (path / gguf_file).is_file():
        raise WhiteboxError(f"whitebox.gguf_file: {path / gguf_file} does not exist")
    looks_local = path.is_absolute() or model.startswith((".", "~")) or path.exists()
    if looks_local and not path.is_dir():
        raise WhiteboxError(f"whitebox.model: {model!r} is not a model directory")
    if path.is_dir() and gguf_file is None and not (path / "config.json").is_file():
        raise WhiteboxError(f"whitebox.model: {path} holds no config.json (set whitebox.gguf_file for a GGUF file)")
    if not path.is_dir():
        check_hub_id(model, gguf_file)
    return model, gguf_file


def check_hub_id(model: str, gguf_file: str | None, key: str = "whitebox.model") -> None:
    """A name that is not a local directory must be a hub id transformers can load, here and now.

    ``embedded:`` names other than the one we carry, ids the hub would refuse, and (with
    ``HF_HUB_OFFLINE=1``) ids not in the local cache fail with the key named, not with a traceback.
    """
    if model.startswith("embedded:"):
        raise WhiteboxError(f"{key}: unknown embedded model {model!r}; the one embedded model is {embedded.EMBEDDED}")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        raise WhiteboxError(f"{key}: {model!r} is neither a local directory nor a valid hub id") from None
    if not _hub_offline():
        return
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(model, gguf_file or "config.json"), str):
        raise WhiteboxError(
            f"{key}: {model!r} is not a local directory and the hub is offline (HF_HUB_OFFLINE=1), "
            "and it is not in the local hub cache; give a model directory or download it first"
        )


def _hub_offline() -> bool:
    import os

    flags = (os.environ.get(v, "").upper() for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f in ("1", "ON", "YES", "TRUE") for f in flags)


def pick_device(name: str) -> torch.device:
    """``"auto"``: this process's GPU (``cuda:LOCAL_RANK`` under a launcher), else the CPU; else as torch spells it."""
    return torch.device(device_name(name, torch.cuda.is_available(), os.environ))


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 on CUDA, float32 elsewhere; any other name as torch spells it."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def _has_package(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def check_attn_implementation(name: str | None, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse what ``from_pretrained`` would only fail on later: flash-attn missing, on a CPU, or in float32."""
    if name != "flash_attention_2":
        return
    key = "whitebox.attn_implementation=flash_attention_2"
    if not _has_package("flash_attn"):
        raise WhiteboxError(f"{key} needs the flash-attn package: pip install flash-attn (or use sdpa)")
    if device.type != "cuda":
        raise WhiteboxError(f"{key} runs on CUDA only (whitebox.device resolves to {device})")
    if dtype not in (torch.bfloat16, torch.float16):
        raise WhiteboxError(f"{key} needs half-precision weights: set whitebox.dtype to bfloat16, float16 or auto")


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute activations in backward (``train.gradient_checkpointing``); LoRA also needs input grads."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise WhiteboxError(f"train.gradient_checkpointing: {type(base).__name__} does not support it")
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x; the older name is deprecated there
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if base is not model:  # a peft model: the frozen embeddings' output must carry gradients into checkpoints
        model.enable_input_require_grads()


@dataclass
class WhiteBox:
    """The trainable model, its tokenizer and where they live."""

    model: Any
    tokenizer: Any
    device: torch.device
    config: WhiteboxConfig

    @property
    def uses_lora(self) -> bool:
        return self.config.finetune == "lora"

    @property
    def padding_side(self) -> str:
        """The tokenizer's own padding side; batching honours it instead of forcing one."""
        return getattr(self.tokenizer, "padding_side", "right")


def lora_targets(model: Any, configured: list[str] | None) -> list[str]:
    """The configured modules, else the attention projections present, else every Linear but ``lm_head``."""
    if configured:
        return list(configured)
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    found = [t for t in DEFAULT_LORA_TARGETS if t in names]
    if found:
        return found
    from transformers.pytorch_utils import Conv1D  # GPT-2-style models use it where others use Linear

    linear = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, Conv1D)) and not name.endswith("lm_head")
    }
    if not linear:
        raise WhiteboxError("whitebox.lora_target_modules: the model has no Linear layers; name the modules to adapt")
    return sorted(linear)


def _partitioned_loading(ds_config: dict[str, Any] | None) -> Any:
    """Under ZeRO-3, a context in which ``from_pretrained`` loads each process's shard only (``HfDeepSpeedConfig``).

    transformers reads the live ``HfDeepSpeedConfig`` and creates every weight
    under ``deepspeed.zero.Init``, filling the shards from the checkpoint; no
    process ever holds the whole model.  Outside ZeRO-3, nothing.
    """
    if ds_config is None:
        return contextlib.nullcontext()
    from transformers.integrations import HfDeepSpeedConfig

    @contextlib.contextmanager
    def live() -> Iterator[None]:
        keep = HfDeepSpeedConfig(ds_config)  # transformers holds a weak reference only: it lives while we load
        try:
            yield
        finally:
            del keep

    return live()


def _with_lora(model: Any, cfg: WhiteboxConfig) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise WhiteboxError("whitebox.finetune=lora needs peft: pip install peft") from None

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=lora_targets(model, cfg.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    with quiet_known_warnings():  # peft reads a property transformers deprecated
        return get_peft_model(model, lora)


def _to_device(model: Any, device: torch.device, partitioned: bool) -> None:
    """Move the model; under ZeRO-3 only what is not a shard (the shards already sit where DeepSpeed put them)."""
    if not partitioned:
        model.to(device)
        return
    for p in model.parameters():
        if not hasattr(p, "ds_id"):
            p.data = p.data.to(device)
    for b in model.buffers():
        b.data = b.data.to(device)


def load_whitebox(cfg: WhiteboxConfig, seed: int = 0, *, zero3: dict[str, Any] | None = None) -> WhiteBox:
    """Load model and tokenizer; wrap with LoRA unless ``finetune == "full"`` (seeded init).

    ``zero3``: the run's DeepSpeed config when it partitions parameters (ZeRO-3):
    each process then loads only its shard of the base weights.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, gguf = resolve_model(cfg.model, cfg.gguf_file)
    kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    if gguf and importlib.util.find_spec("gguf") is None:
        raise WhiteboxError(
            'loading a GGUF model needs the gguf package: pip install gguf (or pip install "cyclealign-core[local]")'
        )
    if gguf and cfg.gguf_cache:
        from cyclealign.whitebox.gguf_cache import converted_dir

        source, kwargs = str(converted_dir(Path(source) / gguf)), {}
    bind_local_gpu()  # before anything lands on a GPU: this process's own (cuda:LOCAL_RANK)
    device = pick_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    check_attn_implementation(cfg.attn_implementation, device, dtype)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    if cfg.attn_implementation is not None:
        kwargs["attn_implementation"] = cfg.attn_implementation
    _check_tokenizer(tokenizer, cfg.model)
    with _partitioned_loading(zero3):
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
        torch.manual_seed(seed)
        if cfg.finetune == "lora":
            model = _with_lora(model, cfg)
    _to_device(model, device, zero3 is not None)
    if zero3 is None:
        _own_memory(model)
    model.train()
    return WhiteBox(model=model, tokenizer=tokenizer, device=device, config=cfg)


def _own_memory(model: Any) -> None:
    """Weights still mapped from the model file (on the CPU) get memory of their own, aligned as torch allocates.

    A mapped file that changes under a running job changes (or crashes) the run, and the CPU's
    matrix kernels round differently on a misaligned buffer: with its own memory a model loaded
    from disk trains exactly as the same model handed in from Python (the object API).
    """
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.device.type == "cpu" and tensor.data_ptr() % 64:
                tensor.data = tensor.data.clone()


def _check_tokenizer(tokenizer: Any, name: str) -> None:
    if tokenizer.eos_token is None:
        raise WhiteboxError(f"whitebox.model: the tokenizer of {name!r} has no EOS token, so responses cannot end")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # only ever used under attention_mask=0 or after EOS


def wrap_whitebox(model: Any, tokenizer: Any, cfg: WhiteboxConfig, seed: int = 0) -> WhiteBox:
    """A model and tokenizer handed in as objects, made ready as :func:`load_whitebox` makes a loaded one.

    The model is used in place (trained in place, as transformers' ``Trainer`` does). It keeps
    its dtype unless ``whitebox.dtype`` names one; a ``PeftModel`` keeps its adapter, any other
    model gets LoRA with the same seeded initialisation as a loaded one (``finetune: lora``).
    """
    bind_local_gpu()
    device = pick_device(cfg.device)
    _check_tokenizer(tokenizer, cfg.model)
    if cfg.dtype != "auto":
        model.to(resolve_dtype(cfg.dtype, device))
    is_peft = hasattr(model, "get_base_model") and hasattr(model, "peft_config")
    if is_peft and cfg.finetune != "lora":
        raise WhiteboxError("whitebox.finetune=full: the model given is a PeftModel; give its base model instead")
    torch.manual_seed(seed)
    if cfg.finetune == "lora" and not is_peft:
        model = _with_lora(model, cfg)
    _to_device(model, device, False)
    _own_memory(model)
    model.train()
    return WhiteBox(model=model, tokenizer=tokenizer, device=device, config=cfg)
