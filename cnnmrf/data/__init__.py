"""Data stage: FLIC annotations, geometry and heatmap codecs, HDF5 preprocessing and the training dataset."""
