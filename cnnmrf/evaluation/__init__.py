"""Evaluation stage: FLIC PCK, reports, and inference that maps predictions back to original pixels."""
