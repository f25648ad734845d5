"""Evaluation: the crops and end-to-end protocols, NME / failure rate / AUC / CED per subset, the ``evaluate`` stage."""
