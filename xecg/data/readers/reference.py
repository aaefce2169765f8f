"""CPSC ``REFERENCE.csv`` label files: ``Recording,First_label,Second_label,Third_label``."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xecg.classes import parse_labels
from xecg.data.readers.base import DatasetError, Labels


def read_reference(path: str | os.PathLike) -> dict[str, Labels]:
    """Labels of a CPSC ``REFERENCE.csv``: record id -> (multi-hot (9,) float32, ignored codes).

    Rows may be in any order; repeated codes (``A0953``: ``6,6``) count once; codes outside 1-9
    are returned as ignored. A record listed twice with different labels is an error.
    """
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the reference file ({e})") from e
    labels: dict[str, Labels] = {}
    for row in rows:
        rec = row[0].strip() if row else ""
        if not rec or rec.lower() == "recording":
            continue
        y, ignored = parse_labels(row[1:])
        if rec in labels and not np.array_equal(labels[rec][0], y):
            raise DatasetError(f"{path}: {rec} is listed twice with different labels")
        labels[rec] = (y, ignored)
    if not labels:
        raise DatasetError(f"{path}: no records listed (expected Recording,First_label,...)")
    return labels


def merge_references(paths: Sequence[Path]) -> dict[str, Labels]:
    """Labels of several REFERENCE.csv files; a record they label differently is an error."""
    merged: dict[str, Labels] = {}
    for path in paths:
        for rec, (y, ignored) in read_reference(path).items():
            if rec in merged and not np.array_equal(merged[rec][0], y):
                raise DatasetError(f"{path}: {rec} has other labels than in "
                                   f"{', '.join(map(str, paths))}")
            merged[rec] = (y, ignored)
    return merged
