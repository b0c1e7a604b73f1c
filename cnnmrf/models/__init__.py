"""Model stage: the multi-resolution part detector, the FFT spatial model, their combination and checkpoints."""
