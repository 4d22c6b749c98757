"""Evaluation as in the paper: reward-model scores (Tables 1 and 4, Figure 5), LLM-judge win rates (Table 2),
human evaluation sheets (Table 3), the oracle's ranking accuracy during training (Figure 4).

One module per ``cyclealign eval`` command (``reward``, ``judge``, ``generate``, ``human``,
``run_accuracy``, ``pair_accuracy``); ``sample.py`` is what they share.  The commands
themselves are ``cyclealign/cli/evaluate.py``.
"""
