"""CPSC ``REFERENCE.csv`` label files: ``Recording,First_label,Second_label,Third_label`` (also
separated by ";" or tabs, as Excel writes it in some locales)."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xecg.classes import parse_labels
from xecg.data.readers.base import DatasetError, Labels

#: A record id as file stems spell it (``A0001``, ``Q0017``, ``HR00001``).
_RECORD_ID = re.compile(r"^[\w.-]+$")


@dataclass
class Reference:
    """Labels from one or more REFERENCE.csv files.

    labels: record id -> (multi-hot (9,) float32, ignored codes).
    conflicts: record id -> problem, for records listed twice with different labels.
    problems: ``(file, reason)`` of rows that name no usable record (one line each).
    folders: the folders whose records ``files`` label, one per file (each found file labels
    its own folder and subfolders); None where they label every record (``--reference``).
    """

    files: list[Path]
    labels: dict[str, Labels] = field(default_factory=dict)
    conflicts: dict[str, str] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)
    folders: list[Path] | None = None


def read_reference(path: str | os.PathLike) -> dict[str, Labels]:
    """Labels of a CPSC ``REFERENCE.csv``: record id -> (multi-hot (9,) float32, ignored codes).

    Rows may be in any order; repeated codes (``A0953``: ``6,6``) count once; codes outside 1-9
    are returned as ignored. A record listed twice with different labels is an error; malformed
    rows (no record id, an id that is no file name, no codes) are left out.
    """
    ref = load_references([Path(path)])
    if ref.conflicts:
        raise DatasetError(f"{path}: {next(iter(ref.conflicts.values()))}")
    return ref.labels


def merge_references(paths: Sequence[Path]) -> dict[str, Labels]:
    """Labels of several REFERENCE.csv files; a record they label differently is an error."""
    ref = load_references(paths)
    if ref.conflicts:
        raise DatasetError(next(iter(ref.conflicts.values())))
    return ref.labels


def load_references(paths: Sequence[Path]) -> Reference:
    """Labels of REFERENCE.csv files, with their conflicts and malformed rows.

    A file that cannot be read as text, or lists no record at all, is a :class:`DatasetError`:
    the labels it should give are unknown for every record.
    """
    ref = Reference(files=[Path(p) for p in paths])
    seen: dict[str, tuple[Path, int]] = {}  # record id -> (file, line) of its first row
    for path in ref.files:
        try:
            # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which would
            # otherwise begin the first id (or the header) and lose that row.
            with open(path, newline="", encoding="utf-8-sig") as f:
                text = f.read()
            rows = list(csv.reader(text.splitlines(), delimiter=_delimiter(text)))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DatasetError(f"{path}: cannot read the reference file ({e})") from e
        listed = 0
        for line, row in enumerate(rows, start=1):
            rec = row[0].strip() if row else ""
            if rec.lower() == "recording" or not any(cell.strip() for cell in row):
                continue  # the header row, blank lines
            problem = _row_problem(rec, row)
            if problem:
                ref.problems.append((str(path), f"bad reference row: line {line} "
                                                f"{','.join(row)!r}: {problem}"))
                continue
            listed += 1
            y, ignored = parse_labels(row[1:])
            if rec in ref.labels and not np.array_equal(ref.labels[rec][0], y):
                where = _where(*seen[rec], path, line)
                ref.conflicts.setdefault(rec, f"conflicting labels: {rec} is listed twice with "
                                              f"different labels ({where})")
            ref.labels.setdefault(rec, (y, ignored))
            seen.setdefault(rec, (path, line))
        if not listed:
            raise DatasetError(f"{path}: no records listed (expected Recording,First_label,...)")
    return ref


#: The separators a REFERENCE.csv is found with: Excel writes ";" where "," is the decimal mark
#: (German, French, ... locales), and a table pasted from a sheet has tabs.
DELIMITERS = (",", ";", "\t")


def _delimiter(text: str, lines: int = 20) -> str:
    """The separator of ``text``: of :data:`DELIMITERS`, the one in most of its first
    ``lines`` non-blank lines (a record id holds none of them); "," on a tie."""
    head = [line for line in text.splitlines() if line.strip()][:lines]
    return max(DELIMITERS, key=lambda d: sum(d in line for line in head))


def _where(first: Path, line1: int, second: Path, line2: int) -> str:
    if first == second:
        return f"lines {line1} and {line2} of {first}"
    return f"{first} line {line1} and {second} line {line2}"


def _row_problem(rec: str, row: list[str]) -> str | None:
    if not rec:
        return "no record id"
    if not _RECORD_ID.match(rec):
        return f"record id {rec!r} is not a file name (a wrong delimiter?)"
    if not any(cell.strip() for cell in row[1:]):
        return f"no label codes for {rec}"
    return None
