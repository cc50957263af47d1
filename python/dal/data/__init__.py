"""Data: NIfTI I/O, preprocessing with an exact way back, data set layouts, slice data sets, and
the synthetic population."""
