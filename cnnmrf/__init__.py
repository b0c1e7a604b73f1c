"""cnnmrf: Tompson et al. (NIPS 2014) ConvNet part detector + MRF spatial model for human pose on FLIC."""

__version__ = "0.1.0"
