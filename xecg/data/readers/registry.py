"""Layout detection: the registry of reader classes and :func:`open_dataset`.

Adding a layout is one module with a :class:`~xecg.data.readers.base.DatasetReader` subclass and
one line in :data:`READERS`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from xecg.data.readers.base import DatasetError, DatasetReader
from xecg.data.readers.challenge import WFDBReader
from xecg.data.readers.icbeb import ICBEBReader
from xecg.data.readers.reference import merge_references

#: Reader classes in order of precedence: the first that claims a file found under the root
#: reads the dataset (a WFDB folder also holds .mat files, which ICBEB would claim).
READERS: list[type[DatasetReader]] = [
    WFDBReader,
    ICBEBReader,
]


@dataclass
class Scan:
    """Files found under a dataset root, in walk order (sorted within each folder)."""

    files: list[Path]  # data files of any registered layout
    references: list[Path]  # REFERENCE.csv files


def scan(root: Path) -> Scan:
    """Data files of every registered layout and REFERENCE.csv files under ``root`` (recursive).

    Hidden files and folders are skipped (they include interrupted stores' temporary folders).
    """
    suffixes = {s for reader in READERS for s in reader.suffixes}
    found = Scan([], [])
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            if name.upper() == "REFERENCE.CSV":
                found.references.append(path)
            elif path.suffix.lower() in suffixes:
                found.files.append(path)
    return found


def open_dataset(root: str | os.PathLike, reference: str | os.PathLike | None = None,
                 require_reference: bool = True) -> DatasetReader:
    """Reader for the dataset under ``root``, whatever its layout and folder depth.

    The first class in :data:`READERS` that claims one of the files found reads the dataset
    (``.hea`` files -> :class:`WFDBReader`; ``.mat`` files without headers ->
    :class:`ICBEBReader`, which needs a REFERENCE.csv). ``reference`` defaults to every
    REFERENCE.csv found under ``root``; its labels win over header labels for the records it
    lists. ``require_reference=False`` (prediction) opens ICBEB files without one.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    found = scan(root)
    if reference is not None:
        if not Path(reference).is_file():
            raise DatasetError(f"{reference}: reference file not found")
        ref_files = [Path(reference)]
    else:
        ref_files = found.references
    labels = merge_references(ref_files) if ref_files else None
    for reader in READERS:
        if any(reader.claims(f) for f in found.files):
            return reader.from_files(root, found.files, labels, ref_files, require_reference)
    raise DatasetError(f"{root}: no ECG records found (no .hea or .mat files in it or its "
                       "subfolders)")
