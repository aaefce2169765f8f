"""Data layer: readers for the CPSC layouts, the prepared store, splits, synthetic data, DataModule."""
