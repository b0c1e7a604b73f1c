"""Model stage: the multi-resolution part detector, the FFT spatial model and their combination."""
