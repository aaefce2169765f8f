"""Data layer: CPSC readers, the prepared store, splits, synthetic data and the DataModule."""
