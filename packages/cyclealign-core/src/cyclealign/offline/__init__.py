"""Offline preference training (``cyclealign train``): ranked lists from files, trained with the cycle's losses.

``records.py`` reads the three input formats into one ``RankedExample``;
``settings.py`` is the config (the run's sections plus ``offline``);
``recipe.py`` is the unit of work (one optimizer step) the run lifecycle repeats;
``margin.py`` measures the held-out preference margin.
"""

from cyclealign.offline.records import RankedExample, read_examples

__all__ = ["RankedExample", "read_examples"]
