"""Aligner: a small corrector model that rewrites another model's answer (question, answer) -> correction.

``prompt.py`` owns the corrector's prompt, ``corrector.py`` the trained model
(load, save, correct), ``training.py`` its supervised training on triples,
``export.py`` corrections as preference pairs, ``cli.py`` the ``cyclealign aligner`` commands.
"""

from cyclealign.aligner.corrector import Corrector
from cyclealign.aligner.prompt import DEFAULT_TEMPLATE, CorrectorPrompt

__all__ = ["DEFAULT_TEMPLATE", "Corrector", "CorrectorPrompt"]
