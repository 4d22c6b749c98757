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


class BudgetExceeded(CycleAlignError, RuntimeError):
    """A call would take the oracle's spend past ``oracle.budget_usd``; raised before it is sent."""


class TransportError(CycleAlignError, RuntimeError):
    """An oracle call failed after every transport retry, or with an error that no retry can fix."""

    def __init__(self, message: str, *, attempts: int = 1, waited_s: float = 0.0) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.waited_s = waited_s


__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "CycleAlignError",
    "DataError",
    "LocalServerError",
    "MissingPathError",
    "OracleSetupError",
    "PluginError",
    "RunDirError",
    "SetupError",
    "TransportError",
    "WhiteboxError",
]
