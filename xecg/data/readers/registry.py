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
from xecg.data.readers.reference import load_references

#: Reader classes in order of precedence: the first that claims a file found under the root
#: reads the dataset (a WFDB folder also holds .mat files, which ICBEB would claim).
READERS: list[type[DatasetReader]] = [
    WFDBReader,
    ICBEBReader,
]


def record_suffixes() -> set[str]:
    """The file suffixes of every registered layout (read at each call: a layout may be
    registered at run time)."""
    return {s for reader in READERS for s in reader.suffixes}


@dataclass
class Scan:
    """Files found under a dataset root, in walk order (sorted within each folder)."""

    files: list[Path]  # data files of any registered layout
    references: list[Path]  # REFERENCE.csv files
    problems: list[tuple[str, str]]  # (path, reason): loops, broken links, unreadable folders


def scan(root: Path) -> Scan:
    """Data files of every registered layout and REFERENCE.csv files under ``root`` (recursive).

    Hidden files and folders are skipped (they include interrupted stores' temporary folders).
    Symbolic links are followed, each folder once: a link back to a folder already scanned (a
    loop, or a second way in) is a problem, as are broken links and unreadable folders.
    """
    suffixes = record_suffixes()
    found = Scan([], [], [])
    seen = {_identity(root): root}

    def unreadable(e: OSError) -> None:
        found.problems.append((str(e.filename), f"unreadable folder: {e.strerror or e}"))

    for folder, dirs, names in os.walk(root, onerror=unreadable, followlinks=True):
        kept = []
        for d in sorted(d for d in dirs if not d.startswith(".")):
            path = Path(folder) / d
            try:
                key = _identity(path)
            except OSError as e:
                unreadable(e)
                continue
            if key in seen:
                kind = ("symlink loop" if seen[key] in (path.parent, *path.parent.parents)
                        else "already scanned")
                found.problems.append((str(path), f"{kind}: this link leads to {seen[key]}, "
                                                  "which is scanned once"))
                continue
            seen[key] = path
            kept.append(d)
        dirs[:] = kept
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            is_reference = name.upper() == "REFERENCE.CSV"
            if not is_reference and path.suffix.lower() not in suffixes:
                continue
            if not path.is_file():
                found.problems.append((str(path), _not_a_file(path)))
            elif is_reference:
                found.references.append(path)
            else:
                found.files.append(path)
    return found


def _not_a_file(path: Path) -> str:
    if path.is_symlink() and not path.exists():
        try:
            return f"broken link: points to {os.readlink(path)}, which does not exist"
        except OSError as e:
            return f"broken link: {e.strerror or e}"
    return "not a file: a named pipe, socket or device, not a regular file"


def _identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


#: How the datasets' archives end (PhysioNet's .tar.gz and .zip, ICBEB's TrainingSet1.zip).
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".7z", ".rar")


def folder_problem(root: Path) -> str | None:
    """Why ``root`` is no dataset folder, in words for the user, or None if it is a folder."""
    if root.is_dir():
        return None
    if not root.exists():
        return "no such folder"
    if root.name.lower().endswith(ARCHIVES):
        unpack = "unzip" if root.suffix.lower() == ".zip" else "tar xf"
        return (f"an archive, not a folder: unpack it first ({unpack} {root.name}) and give the "
                "folder it makes")
    return "not a folder (give the dataset's folder)"


def open_dataset(root: str | os.PathLike, reference: str | os.PathLike | None = None,
                 require_reference: bool = True) -> DatasetReader:
    """Reader for the dataset under ``root``, whatever its layout and folder depth.

    The first class in :data:`READERS` that claims one of the files found reads the dataset
    (``.hea`` files -> :class:`WFDBReader`; ``.mat`` files without headers ->
    :class:`ICBEBReader`, which needs a REFERENCE.csv). ``reference`` defaults to every
    REFERENCE.csv found under ``root``; its labels win over header labels for the records it
    lists, and a record in its folder (or below) that it does not list is not used (loading it
    is a RecordError). ``require_reference=False`` (prediction) opens ICBEB files without one.

    Problems that concern single inputs (a duplicated record id, a symlink loop, a malformed
    REFERENCE.csv row) do not stop the dataset: they are listed in the reader's ``orphans``.
    """
    root = Path(root)
    problem = folder_problem(root)
    if problem:
        raise DatasetError(f"{root}: {problem}")
    found = scan(root)
    if reference is not None:
        if not Path(reference).is_file():
            raise DatasetError(f"{reference}: reference file not found")
        ref_files = [Path(reference)]
    else:
        ref_files = found.references
    labels = load_references(ref_files) if ref_files else None
    if labels is not None and reference is None:
        # A file found in the tree labels its own folder and those below it: a REFERENCE.csv of
        # cpsc_2018/ says nothing of georgia/ beside it.
        labels.folders = [p.parent for p in ref_files]
    for reader in READERS:
        if any(reader.claims(f) for f in found.files):
            return reader.from_files(root, found.files, labels, require_reference,
                                     found.problems)
    raise DatasetError(f"{root}: no ECG records found (no .hea or .mat files in it or its "
                       "subfolders)")
