"""Training stage: the run configuration and the one training loop shared by the three train commands."""
