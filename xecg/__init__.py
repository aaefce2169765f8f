"""xecg: xECGNet experiments for multilabel 12-lead ECG classification."""

__version__ = "0.2.1"
