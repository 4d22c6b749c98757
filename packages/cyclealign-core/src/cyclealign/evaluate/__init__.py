"""Evaluation as in the paper: reward-model scores (Table 1), LLM-judge win rates (Tables 2–3),
oracle ranking accuracy and its ablations (Figure 4, Table 4)."""
