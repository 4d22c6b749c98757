"""The white-box side on Hugging Face transformers + peft."""

from cyclealign.whitebox.batching import EncodedBatch, encode_candidates, sequence_logps
from cyclealign.whitebox.loading import (
    WhiteBox,
    WhiteboxError,
    load_whitebox,
)
from cyclealign.whitebox.prompt_format import encode_prompt, render_prompt
from cyclealign.whitebox.sampler import HFSampler
from cyclealign.whitebox.selfrank import LogProbRanker, MeanLogProbRanker, SumLogProbRanker
from cyclealign.whitebox.torch_backend import TorchBackend
from cyclealign.whitebox.trainer import PolicyTrainer, TrainingBackend, build_trainer, save_trainable

__all__ = [
    "EncodedBatch",
    "HFSampler",
    "LogProbRanker",
    "MeanLogProbRanker",
    "PolicyTrainer",
    "SumLogProbRanker",
    "TorchBackend",
    "TrainingBackend",
    "WhiteBox",
    "WhiteboxError",
    "build_trainer",
    "encode_candidates",
    "encode_prompt",
    "load_whitebox",
    "render_prompt",
    "save_trainable",
    "sequence_logps",
]
