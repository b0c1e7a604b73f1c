"""Evaluation stage: FLIC PCK, the test-split run of a checkpoint, and its reports (JSON, plots, tables)."""
