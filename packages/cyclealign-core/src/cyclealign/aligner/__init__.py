"""Aligner: a small corrector model that rewrites another model's answer (question, answer) -> correction.

``prompt.py`` owns the corrector's prompt, ``corrector.py`` the trained model
(load, save, correct), ``training.py`` its supervised training on triples,
``correct.py`` upstream answers and their corrections, ``preferences.py`` corrections
as preference pairs; the ``cyclealign aligner`` commands are ``cyclealign/cli/aligner.py``.
Names are imported lazily, so the command line starts without torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_TEMPLATE", "Corrector", "CorrectorPrompt"]


def __getattr__(name: str) -> Any:
    if name == "Corrector":
        from cyclealign.aligner.corrector import Corrector

        return Corrector
    if name in ("CorrectorPrompt", "DEFAULT_TEMPLATE"):
        from cyclealign.aligner import prompt

        return getattr(prompt, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
