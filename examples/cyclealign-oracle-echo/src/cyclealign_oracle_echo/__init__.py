"""An example oracle plugin: ranks responses longest first and echoes the longest as its own answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pluggy

from cyclealign.protocols import OracleRequest, OracleVerdict

hookimpl = pluggy.HookimplMarker("cyclealign")


class EchoOracle:
    """Implements the ``Oracle`` protocol without any network: deterministic and free."""

    name = "echo"

    def __init__(self, config: Any = None) -> None:
        self.config = config
        self.calls = 0

    def rank_many(self, requests: Sequence[OracleRequest]) -> list[OracleVerdict]:
        verdicts = []
        for req in requests:
            self.calls += 1
            order = tuple(sorted(range(len(req.responses)), key=lambda i: (-len(req.responses[i]), i)))
            best = req.responses[order[0]] if req.responses else ""
            verdicts.append(OracleVerdict(order=order, response=best or "I am not sure.", raw=None))
        return verdicts

    def close(self) -> None:
        pass


@hookimpl
def register_oracles(register: Any) -> None:
    register("echo", EchoOracle, "example plugin: longest first, echoes the longest (offline)")
