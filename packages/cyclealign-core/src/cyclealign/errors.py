"""One error hierarchy for everything a user can fix; the CLI renders any of them as one line.

``CycleAlignError`` is the base.  Each kind also derives from the builtin it
refines (``ValueError`` for bad input, ``RuntimeError`` for a state of the world),
so callers that caught the builtin keep working.  Any other exception that reaches
the command line is a bug of ours: it is shown with its traceback (``cli_common``).
The oracle's per-call errors (``oracle.backend.ChatError``, ``prompts.AnswerError``)
derive from ``CycleAlignError`` too.
"""

from __future__ import annotations


class CycleAlignError(Exception):
    """Something the user can fix; the message names what is wrong and where (file, line, key)."""


class ConfigError(CycleAlignError, ValueError):
    """A config file, key, ``--set`` override or command-line option is wrong; the message names it."""


class MissingPathError(ConfigError, FileNotFoundError):
    """A file or directory named by an option or key does not exist (or is not what it should be)."""


class SetupError(CycleAlignError, RuntimeError):
    """A part cannot be built as configured: a missing extra, key, model file or server."""


class PluginError(SetupError, LookupError):
    """A plugin name that is unknown, not installed, or registered twice."""


class WhiteboxError(SetupError):
    """The white-box model cannot be loaded as configured."""


class OracleSetupError(SetupError):
    """The oracle cannot be used as configured (missing key, unknown model, unreachable server, …)."""


class LocalServerError(SetupError):
    """A managed local model server could not be started or stopped."""


class DataError(CycleAlignError, ValueError):
    """Input data is malformed; the message names the file and line."""


class RunDirError(CycleAlignError, RuntimeError):
    """The run directory cannot be used as asked (occupied, missing, damaged, another config)."""


class CheckpointDamaged(RunDirError):
    """No generation of a run's checkpoint is intact; the message names the damaged files."""


class BudgetExceeded(CycleAlignError, RuntimeError):
    """A call would take the oracle's spend past ``oracle.budget_usd``; raised before it is sent."""


# How an oracle request can fail, as counted in summary.json (``oracle_failures_by_kind``).  The fatal
# kinds stop a run: no retry and no later call can fix a rejected key, an unknown model or an empty quota.
FATAL_KINDS = ("auth", "model_not_found", "quota", "fatal")
FAILURE_KINDS = (
    "timeout",  # no complete answer within oracle.timeout_s (after the retries)
    "unreachable",  # the connection failed (after the retries)
    "rate_limited",  # 429 after the retries
    "provider_error",  # 5xx after the retries, or a request the provider rejected
    "context_overflow",  # the prompt does not fit oracle.context_tokens (or the provider's window)
    "invalid_answer",  # answers came, but none valid after oracle.max_parse_retries re-asks
    *FATAL_KINDS,
)


class TransportError(CycleAlignError, RuntimeError):
    """An oracle call failed after every transport retry, or with an error that no retry can fix.

    ``kind`` is one of ``FAILURE_KINDS``; ``fatal`` when it is one of ``FATAL_KINDS``.
    """

    def __init__(self, message: str, *, attempts: int = 1, waited_s: float = 0.0, kind: str = "provider_error") -> None:
        super().__init__(message)
        self.attempts = attempts
        self.waited_s = waited_s
        self.kind = kind

    @property
    def fatal(self) -> bool:
        return self.kind in FATAL_KINDS


class OracleFatalError(CycleAlignError, RuntimeError):
    """The oracle failed in a way that stops the run (bad key, unknown model, no quota); fix it, then resume."""


__all__ = [
    "FAILURE_KINDS",
    "FATAL_KINDS",
    "BudgetExceeded",
    "CheckpointDamaged",
    "ConfigError",
    "CycleAlignError",
    "DataError",
    "LocalServerError",
    "MissingPathError",
    "OracleFatalError",
    "OracleSetupError",
    "PluginError",
    "RunDirError",
    "SetupError",
    "TransportError",
    "WhiteboxError",
]
