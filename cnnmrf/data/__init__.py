"""Data stage: FLIC annotations, geometry and heatmap codecs, the HDF5 format, preprocessing and the dataset."""
