"""The reader API every layout implements (torch_ecg style): ``records``, ``load_data``,
``load_ann``, ``load_record``, ``sampling_rate``, ``path_of``.

A layout is one :class:`DatasetReader` subclass: it says which files are its records
(:meth:`DatasetReader.claims`) and reads one record (``_read``) and its diagnosis tokens
(``_tokens``). Every signal comes back float32 ``12 x N`` millivolts in
:data:`xecg.classes.LEADS` order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from xecg.classes import LEADS, NUM_CLASSES, canonical_lead, names_of, parse_labels
from xecg.data.record import Record, RecordError
from xecg.errors import XECGError

if TYPE_CHECKING:
    from xecg.data.readers.reference import Reference

#: Record labels: multi-hot (9,) float32 over :data:`xecg.classes.CLASSES`, and the codes outside.
Labels = tuple[np.ndarray, list[str]]
_UNITS = ("mV", "uV")
#: Largest |signal| in mV a record may reach. ECG amplifiers saturate far below (CPSC's int16
#: at 1000/mV at 32.8 mV); beyond it the gain or units that turned samples into mV are wrong.
MAX_PLAUSIBLE_MV = 50.0


class DatasetError(XECGError):
    """A dataset that cannot be read as a whole: no records, no REFERENCE.csv, duplicate ids."""


@dataclass
class RawRecord:
    """What one record file holds: signal ``12 x N`` float32 mV (standard lead order), metadata
    and the diagnosis tokens of its own file (empty where labels live elsewhere)."""

    signal: np.ndarray
    fs: float
    age: float | None
    sex: str | None
    tokens: list[str]


class DatasetReader(ABC):
    """Base reader: ``records`` (sorted ids), ``load_data``, ``load_ann``, ``load_record``.

    ``files`` lists every data file found (for fingerprints); ``orphans`` lists ``(path, reason)``
    of inputs that are not records of this layout (files without a header, copies of one record
    id, symlink loops, malformed REFERENCE.csv rows). ``conflicts`` maps a record id to the
    problem of its labels (listed twice with different labels): loading it is a RecordError.

    ``reference_folders``: the folders whose records the REFERENCE.csv files label (each found
    file labels its own folder and subfolders); None where the reference labels every record
    (one given with ``--reference``). A record there without a row is skipped, not labelled by
    its header: one dataset's labels come from one source.
    """

    #: Name of the layout (stored in a prepared store's meta.json and its fingerprint).
    layout: ClassVar[str] = ""
    #: Suffixes (lower case) of this layout's data files; the scan collects all of them.
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: True where labels exist only in REFERENCE.csv (a record missing from it is unusable).
    requires_reference: ClassVar[bool] = False

    def __init__(self, root: Path, paths: dict[str, Path], reference: dict[str, Labels] | None,
                 reference_files: Sequence[Path] = (), files: Sequence[Path] = (),
                 orphans: Sequence[tuple[str, str]] = (), conflicts: dict[str, str] | None = None,
                 reference_folders: Sequence[Path] | None = None):
        self.root = Path(root)
        self._paths = paths
        self.records: list[str] = sorted(paths)
        self.reference = reference
        self.reference_files = list(reference_files)
        self.files = list(files)
        self.orphans = list(orphans)
        self.conflicts = dict(conflicts or {})
        self.reference_folders = None if reference_folders is None else list(reference_folders)

    # ---------------------------------------------------------------- detection (class level)

    @classmethod
    @abstractmethod
    def claims(cls, path: Path) -> bool:
        """True if ``path`` (a file found under the dataset root) is a record of this layout."""

    @classmethod
    def orphans_in(cls, files: Sequence[Path]) -> list[tuple[str, str]]:
        """``(path, reason)`` of data files that this layout cannot read as records."""
        return []

    @classmethod
    def record_named(cls, path: str | Path) -> str | None:
        """The record id an input names: the stem of a data file of this layout (an orphan
        ``.mat``, a copy of a duplicated id, a broken link); None for one that names no record
        (a folder, a REFERENCE.csv row)."""
        path = Path(path)
        return path.stem if path.suffix.lower() in cls.suffixes else None

    @classmethod
    def from_files(cls, root: Path, files: Sequence[Path], reference: Reference | None,
                   require_reference: bool = True, problems: Sequence[tuple[str, str]] = ()
                   ) -> DatasetReader:
        """The reader of the records among ``files`` (all data files found under ``root``);
        ``problems`` are ``(path, reason)`` the scan found (they join ``orphans``)."""
        orphans = [*problems, *cls.orphans_in(files)]
        refused = {Path(path) for path, _ in orphans}  # named already: no record of them
        paths, duplicates = split_duplicates([f for f in files
                                              if cls.claims(f) and f not in refused])
        orphans += duplicates
        if reference is None:
            return cls(root, paths, None, (), files, orphans)
        return cls(root, paths, reference.labels, reference.files, files,
                   [*orphans, *reference.problems], reference.conflicts, reference.folders)

    # ---------------------------------------------------------------------------- the API

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, {len(self)} records)"

    def listed_without_file(self) -> list[str]:
        """Record ids the reference lists that no data file found here names, sorted: a
        partial download (the ICBEB TrainingSet1 with the full REFERENCE.csv), or the
        reference of a larger set."""
        if not self.reference:
            return []
        named = {f.stem for f in self.files}
        return sorted(rec for rec in self.reference if rec not in named)

    @property
    def missing_reference(self) -> str | None:
        """Why records have no labels where that is a missing REFERENCE.csv (a layout whose
        labels live only there, opened without one by a checkpoint command), for the message
        that no record has labels; None otherwise."""
        return None

    def path_of(self, rec: str) -> Path:
        """The file that names record ``rec`` (the ``.hea`` for WFDB, the ``.mat`` for ICBEB)."""
        try:
            return self._paths[rec]
        except KeyError:
            raise KeyError(f"record {rec!r} is not in {self.root}") from None

    @abstractmethod
    def sampling_rate(self, rec: str) -> float:
        """Sampling rate of ``rec`` in Hz, without reading its samples."""

    def load_data(self, rec: str, leads: Sequence[str] | None = None,
                  units: str = "mV") -> np.ndarray:
        """Signal of ``rec``, float32 ``len(leads) x N`` (all 12 in standard order by default).

        WFDB signals are transposed views of the samples x leads data (no copy); use
        ``np.ascontiguousarray`` where contiguous rows matter.
        """
        if units not in _UNITS:
            raise ValueError(f"units must be one of {_UNITS}, got {units!r}")
        sig = self._read(rec).signal
        if leads is not None:
            rows = []
            for name in leads:
                lead = canonical_lead(name)
                if lead is None:
                    raise ValueError(f"unknown lead {name!r}; leads are {', '.join(LEADS)}")
                rows.append(LEADS.index(lead))
            sig = sig[rows]
        return sig * np.float32(1000.0) if units == "uV" else sig

    def load_ann(self, rec: str) -> list[str]:
        """Class names of ``rec`` in canonical order (REFERENCE.csv wins over the header)."""
        return names_of(self._labels(rec)[0])

    def load_record(self, rec: str, require_labels: bool = True) -> Record:
        """The whole record (signal ``12 x N`` float32 mV); raises :class:`RecordError` naming
        the file if it is unusable.

        ``require_labels=False`` (prediction) accepts a record without any of the nine classes
        or without a REFERENCE.csv row: its labels are then all zero.
        """
        raw = self._read(rec)
        if raw.signal.shape[1] == 0:
            raise RecordError(self.path_of(rec), "empty: the record has no samples")
        if (raw.signal == raw.signal[:, :1]).all():
            # A blank recording; single flat leads are kept (a lead off is common in real data).
            raise RecordError(self.path_of(rec), "flat: every lead holds a constant value; no "
                                                 "ECG was recorded")
        try:
            labels, ignored = self._labels(rec, raw.tokens)
        except RecordError:
            if require_labels:
                raise
            labels, ignored = np.zeros(NUM_CLASSES, dtype=np.float32), []
        return Record(id=rec, signal=raw.signal, fs=raw.fs, labels=labels, age=raw.age,
                      sex=raw.sex, source=str(self.path_of(rec)), ignored_codes=ignored)

    # ------------------------------------------------------------------------ per layout

    @abstractmethod
    def _read(self, rec: str) -> RawRecord:
        """Read one record's file(s)."""

    @abstractmethod
    def _tokens(self, rec: str) -> list[str]:
        """Diagnosis tokens of ``rec`` from its own file(s), without reading the samples."""

    def label_map(self, tokens: Sequence[str]) -> Labels:
        """Labels of diagnosis tokens (CPSC abbreviations, SNOMED-CT or CPSC codes 1-9)."""
        return parse_labels(tokens)

    def references_of(self, rec: str) -> list[Path]:
        """The REFERENCE.csv files that should label ``rec``: every one where they label the
        whole dataset, else those found in its folder or a folder above it."""
        if self.reference is None:
            return []
        if self.reference_folders is None:
            return list(self.reference_files)
        path = self.path_of(rec)
        return [ref for ref, folder in zip(self.reference_files, self.reference_folders)
                if path.is_relative_to(folder)]

    def header_labels_overridden(self, rec: str) -> list[str] | None:
        """The classes ``rec``'s own file (its header) names where its REFERENCE.csv row, which
        wins, gives other labels; None where they agree, or either names none."""
        if not self.reference or rec not in self.reference:
            return None
        try:
            tokens = self._tokens(rec)
        except RecordError:
            return None  # loading the record says what is wrong with its header
        if not tokens:
            return None
        own = self.label_map(tokens)[0]
        return None if np.array_equal(own, self.reference[rec][0]) else names_of(own)

    def _labels(self, rec: str, tokens: list[str] | None = None) -> Labels:
        path = self.path_of(rec)
        if rec in self.conflicts:
            raise RecordError(path, self.conflicts[rec])
        if self.reference is not None and rec in self.reference:
            labels, ignored = self.reference[rec]
            labels, ignored = labels.copy(), list(ignored)
        elif self.requires_reference:
            where = ", ".join(map(str, self.reference_files)) or "REFERENCE.csv"
            raise RecordError(path, f"not in REFERENCE.csv: no labels for {rec} in {where}")
        elif refs := self.references_of(rec):
            # The README promises this record skipped: labelling it from its header would mix
            # two label sources in one dataset without a word.
            where = ", ".join(map(str, refs))
            raise RecordError(path, f"not in REFERENCE.csv: {where} labels this folder but has "
                                    f"no row for {rec}; its header's labels are not used")
        else:
            labels, ignored = self.label_map(self._tokens(rec) if tokens is None else tokens)
        if not labels.any():
            raise RecordError(path, "no class: none of the nine classes "
                                    f"(codes: {', '.join(ignored) or 'none'})")
        return labels, ignored


def split_duplicates(paths: Sequence[Path]) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Record id (file stem) -> file, and ``(path, reason)`` for each copy of an id found more
    than once (no copy is read: which one holds the right record is unknown)."""
    found: dict[str, list[Path]] = {}
    for path in paths:
        found.setdefault(path.stem, []).append(path)
    unique = {rec: copies[0] for rec, copies in found.items() if len(copies) == 1}
    duplicates = [(str(p), f"duplicate id: record {rec} is also at "
                           f"{', '.join(str(q) for q in copies if q != p)}; no copy is read")
                  for rec, copies in found.items() if len(copies) > 1 for p in copies]
    return unique, duplicates


def check_amplitude(path: Path, signal: np.ndarray, hint: str) -> None:
    """RecordError if ``signal`` (mV) goes beyond :data:`MAX_PLAUSIBLE_MV`; ``hint`` says what
    to check (``is the header's gain or unit wrong?``)."""
    if signal.size == 0:
        return
    peak = max(float(signal.max()), -float(signal.min()))
    if peak > MAX_PLAUSIBLE_MV:
        raise RecordError(path, f"implausible amplitude: peak {peak:.4g} mV, beyond "
                                f"{MAX_PLAUSIBLE_MV:g} mV; {hint}")


def error_detail(e: BaseException, limit: int = 200) -> str:
    """A library exception as a short one-line detail for a RecordError."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def parse_age(value) -> float | None:
    """Age in years from a header comment or a MATLAB field; None where unknown or not an age
    (outside 0-150 years, as some writers put -1 or 999 for unknown)."""
    try:
        age = float(np.asarray(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None
    return age if 0 <= age <= 150 else None  # also None for NaN


def parse_sex(value) -> str | None:
    """Sex as written (``Male``, ``Female``); None where empty or unknown."""
    text = str(value).strip() if value is not None and np.size(value) else ""
    return None if text.lower() in ("", "unknown", "nan") else text
