"""Training stage: configs, checkpoints and the one training loop shared by the three train commands."""
