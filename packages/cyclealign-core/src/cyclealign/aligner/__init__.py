"""Aligner: a small corrector model that rewrites another model's answer (question, answer) -> correction.

``prompt.py`` owns the corrector's prompt, ``corrector.py`` the trained model
(load, save, correct), ``training.py`` its supervised training on triples,
``export.py`` corrections as preference pairs, ``cli.py`` the ``cyclealign aligner`` commands.
"""

from typing import Any

from cyclealign.aligner.prompt import DEFAULT_TEMPLATE, CorrectorPrompt

__all__ = ["DEFAULT_TEMPLATE", "Corrector", "CorrectorPrompt"]


def __getattr__(name: str) -> Any:
    """``Corrector`` on first use: `cyclealign --help` must not pay for importing torch."""
    if name == "Corrector":
        from cyclealign.aligner.corrector import Corrector

        return Corrector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
