"""DeepSpeed ZeRO-2 behind the `TrainingBackend` interface (the paper's backend).

Not part of this release: multi-process training also needs rank-0-only oracle
calls and broadcast rankings, which the engine does not do yet.  Selecting it
fails before any work with an explanation instead of a half-working run.
"""

from __future__ import annotations

from typing import Any


class DeepSpeedBackend:
    def __init__(self, model: Any, train: Any) -> None:
        raise NotImplementedError(
            "train.backend=deepspeed is not available in this release (ZeRO-2 across processes needs rank-0 "
            "oracle calls, planned); use train.backend=torch, which runs the same step on one device"
        )
