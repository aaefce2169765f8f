"""Readers for the three on-disk layouts of CPSC 2018, in the style of torch_ecg's database readers.

- ``icbeb``: the original release, ``TrainingSet*/Axxxx.mat`` (MATLAB v5 struct ``ECG`` with
  ``sex``, ``age``, ``data`` 12 x N float mV); labels only in ``REFERENCE.csv``.
- ``wfdb``: the PhysioNet/CinC Challenge 2020 release, ``Axxxx.hea`` + ``Axxxx.mat`` (MATLAB
  v4, key ``val``, int16 12 x N); ``#Dx:`` holds CPSC abbreviations (v1.0.0) or SNOMED-CT codes
  (v1.0.2). Other WFDB signal formats are read through the wfdb package.

:func:`open_dataset` detects the layout. Every record comes back as a :class:`Record` with its
signal as float32 ``12 x N`` millivolts in :data:`xecg.classes.LEADS` order; a record that cannot
be used raises :class:`RecordError` whose problem reads ``"<kind>: <detail>"`` (the kind groups
exclusion reasons in summaries).
"""

from __future__ import annotations

import csv
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xecg.classes import LEADS, NUM_CLASSES, NUM_LEADS, canonical_lead, names_of, parse_labels
from xecg.data.record import Record, RecordError

#: The ICBEB .mat files do not store their rate; the release documents 500 Hz for every record.
ICBEB_FS = 500.0
#: MATLAB v4 type code of a little-endian int16 full numeric matrix (the Challenge 2020 ``val``).
_V4_INT16 = 30
_V4_HEADER = struct.Struct("<5i")  # type, rows, columns, imaginary flag, name length
#: Millivolts per physical unit named in a WFDB header.
_MV_PER_UNIT = {"mv": 1.0, "uv": 1e-3, "μv": 1e-3, "µv": 1e-3, "v": 1e3}
_UNITS = ("mV", "uV")

Labels = tuple[np.ndarray, list[str]]


class DatasetError(Exception):
    """A dataset that cannot be read as a whole: no records, no REFERENCE.csv, duplicate ids."""


# --------------------------------------------------------------------------------- labels


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


def _merge_references(paths: Sequence[Path]) -> dict[str, Labels]:
    merged: dict[str, Labels] = {}
    for path in paths:
        for rec, (y, ignored) in read_reference(path).items():
            if rec in merged and not np.array_equal(merged[rec][0], y):
                raise DatasetError(f"{path}: {rec} has other labels than in "
                                   f"{', '.join(map(str, paths))}")
            merged[rec] = (y, ignored)
    return merged


# ------------------------------------------------------------------------------- readers


@dataclass
class _Raw:
    """What one record file holds: signal 12 x N float32 mV (standard lead order) and metadata."""

    signal: np.ndarray
    fs: float
    age: float | None
    sex: str | None
    tokens: list[str]


class DatasetReader:
    """Base reader: ``records`` (sorted ids), ``load_data``, ``load_ann``, ``load_record``.

    Subclasses read one record's file(s) in ``_read`` and its diagnosis tokens in ``_tokens``.
    ``files`` lists every data file found (for fingerprints); ``orphans`` lists ``(path, reason)``
    of files that look like records but cannot be read as one in this layout.
    """

    layout = ""
    #: True where labels exist only in REFERENCE.csv (a record missing from it is unusable).
    requires_reference = False

    def __init__(self, root: Path, paths: dict[str, Path], reference: dict[str, Labels] | None,
                 reference_files: Sequence[Path] = (), files: Sequence[Path] = (),
                 orphans: Sequence[tuple[str, str]] = ()):
        self.root = Path(root)
        self._paths = paths
        self.records: list[str] = sorted(paths)
        self.reference = reference
        self.reference_files = list(reference_files)
        self.files = list(files)
        self.orphans = list(orphans)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, {len(self)} records)"

    def path_of(self, rec: str) -> Path:
        """The file that names record ``rec`` (the ``.hea`` for WFDB, the ``.mat`` for ICBEB)."""
        try:
            return self._paths[rec]
        except KeyError:
            raise KeyError(f"record {rec!r} is not in {self.root}") from None

    def sampling_rate(self, rec: str) -> float:
        """Sampling rate of ``rec`` in Hz, without reading its samples."""
        raise NotImplementedError

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
        """The whole record; raises :class:`RecordError` naming the file if it is unusable.

        ``require_labels=False`` (prediction) accepts a record without any of the nine classes
        or without a REFERENCE.csv row: its labels are then all zero.
        """
        raw = self._read(rec)
        if raw.signal.shape[1] == 0:
            raise RecordError(self.path_of(rec), "empty: the record has no samples")
        try:
            labels, ignored = self._labels(rec, raw.tokens)
        except RecordError:
            if require_labels:
                raise
            labels, ignored = np.zeros(NUM_CLASSES, dtype=np.float32), []
        return Record(id=rec, signal=raw.signal, fs=raw.fs, labels=labels, age=raw.age,
                      sex=raw.sex, source=str(self.path_of(rec)), ignored_codes=ignored)

    def _labels(self, rec: str, tokens: list[str] | None = None) -> Labels:
        path = self.path_of(rec)
        if self.reference is not None and rec in self.reference:
            labels, ignored = self.reference[rec]
            labels, ignored = labels.copy(), list(ignored)
        elif self.requires_reference:
            where = ", ".join(map(str, self.reference_files)) or "REFERENCE.csv"
            raise RecordError(path, f"not in REFERENCE.csv: no labels for {rec} in {where}")
        else:
            labels, ignored = parse_labels(self._tokens(rec) if tokens is None else tokens)
        if not labels.any():
            raise RecordError(path, "no class: none of the nine classes "
                                    f"(codes: {', '.join(ignored) or 'none'})")
        return labels, ignored

    def _read(self, rec: str) -> _Raw:
        raise NotImplementedError

    def _tokens(self, rec: str) -> list[str]:
        raise NotImplementedError


class ICBEBReader(DatasetReader):
    """The original ICBEB release: MATLAB v5 ``ECG`` structs, labels in REFERENCE.csv."""

    layout = "icbeb"
    requires_reference = True

    def sampling_rate(self, rec: str) -> float:
        return ICBEB_FS

    def _tokens(self, rec: str) -> list[str]:
        return []  # the struct holds no diagnosis

    def _read(self, rec: str) -> _Raw:
        from scipy.io import loadmat

        path = self.path_of(rec)
        try:
            mat = loadmat(path, simplify_cells=True, variable_names=["ECG"])
        except FileNotFoundError as e:
            raise RecordError(path, "missing file: gone since the folder was scanned") from e
        # scipy raises many exception types on damaged files; any of them means "unreadable".
        except Exception as e:
            raise RecordError(path, f"unreadable signal: not a readable MATLAB file ({e})") from e
        ecg = mat.get("ECG")
        if not isinstance(ecg, dict) or "data" not in ecg:
            raise RecordError(path, "unreadable signal: no ECG struct with a data field")
        try:
            data = np.asarray(ecg["data"], dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise RecordError(path, f"unreadable signal: ECG.data is not numeric ({e})") from e
        if data.ndim != 2 or data.shape[0] != NUM_LEADS:
            raise RecordError(path, f"wrong leads: ECG.data has shape {data.shape}, "
                                    f"expected {NUM_LEADS} x N")
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad:
            raise RecordError(path, f"non-finite: {bad} NaN/inf samples in ECG.data")
        return _Raw(signal=data, fs=ICBEB_FS, age=_age(ecg.get("age")), sex=_sex(ecg.get("sex")),
                    tokens=[])


# ------------------------------------------------------------------------------ WFDB


@dataclass
class _WfdbSignal:
    file: str
    fmt: str
    byte_offset: int
    plain: bool  # one sample per frame, no skew: the layout the fast path reads
    gain: float
    baseline: int
    units: str
    checksum: int | None
    name: str


@dataclass
class WfdbHeader:
    """The parts of a WFDB ``.hea`` that xecg uses; ``comments`` maps ``Age``/``Sex``/``Dx``."""

    record: str
    fs: float
    n_samples: int | None
    signals: list[_WfdbSignal]
    comments: dict[str, str]
    multi_segment: bool

    @property
    def fast(self) -> bool:
        """True for the Challenge 2020 layout: every lead int16 (fmt 16) in one MATLAB v4 file."""
        files = {s.file for s in self.signals}
        return (not self.multi_segment and len(files) == 1 and files.pop().lower().endswith(".mat")
                and all(s.fmt == "16" and s.plain for s in self.signals))


_FMT = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
_GAIN = re.compile(r"^([-+]?[\d.]+(?:[eE][-+]?\d+)?)(?:\(([-+]?\d+)\))?(?:/(\S+))?$")


def parse_header(path: str | os.PathLike) -> WfdbHeader:
    """Parse a WFDB header file; raises :class:`RecordError` if it is not one."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise RecordError(path, f"unreadable header: {e.strerror or e}") from e
    try:
        return _parse_header_text(text)
    except (ValueError, IndexError) as e:
        raise RecordError(path, f"unreadable header: {e}") from e


def _parse_header_text(text: str) -> WfdbHeader:
    comments: dict[str, str] = {}
    lines: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep:
                comments[key.strip()] = value.strip()
        elif line:
            lines.append(line.split("#", 1)[0].strip())
    if not lines:
        raise ValueError("no record line")
    fields = lines[0].split()
    name, n_sig = fields[0], int(fields[1])
    fs = float(fields[2].split("/")[0].split("(")[0]) if len(fields) > 2 else 250.0
    n_samples = int(fields[3]) if len(fields) > 3 else None
    multi_segment = "/" in name
    signals = [] if multi_segment else [_parse_signal_line(s) for s in lines[1:1 + n_sig]]
    if not multi_segment and len(signals) != n_sig:
        raise ValueError(f"the record line says {n_sig} signals, {len(signals)} are listed")
    return WfdbHeader(record=name, fs=fs, n_samples=n_samples, signals=signals, comments=comments,
                      multi_segment=multi_segment)


def _parse_signal_line(line: str) -> _WfdbSignal:
    f = line.split()
    fmt = _FMT.match(f[1])
    if fmt is None:
        raise ValueError(f"bad format field {f[1]!r}")
    gain, baseline, units = 200.0, None, "mV"  # WFDB's defaults
    if len(f) > 2:
        g = _GAIN.match(f[2])
        if g is None:
            raise ValueError(f"bad gain field {f[2]!r}")
        gain = float(g.group(1)) or 200.0
        baseline = int(g.group(2)) if g.group(2) else None
        units = g.group(3) or units
    adc_zero = int(f[4]) if len(f) > 4 else 0
    return _WfdbSignal(
        file=f[0], fmt=fmt.group(1), byte_offset=int(fmt.group(4) or 0),
        plain=fmt.group(2) in (None, "1") and fmt.group(3) in (None, "0"),
        gain=gain, baseline=adc_zero if baseline is None else baseline, units=units,
        checksum=int(f[6]) if len(f) > 6 else None, name=" ".join(f[8:]) if len(f) > 8 else "")


class WFDBReader(DatasetReader):
    """Challenge 2020 WFDB records (``.hea`` + ``.mat``); other WFDB formats go through wfdb."""

    layout = "wfdb"

    def sampling_rate(self, rec: str) -> float:
        return parse_header(self.path_of(rec)).fs

    def _tokens(self, rec: str) -> list[str]:
        return _dx_tokens(parse_header(self.path_of(rec)))

    def _read(self, rec: str) -> _Raw:
        path = self.path_of(rec)
        header = parse_header(path)
        names = [s.name for s in header.signals]
        order = _lead_order(path, names)
        for file in {s.file for s in header.signals}:
            if not (path.parent / file).is_file():
                raise RecordError(path, f"missing file: signal file {file} named in the header "
                                        "does not exist")
        if header.fast:
            digital = _read_v4_int16(path.parent / header.signals[0].file, header)
        else:
            digital = _read_with_wfdb(path, header)
        _check_checksums(path, digital, header)
        mv = _to_millivolts(path, digital, header)
        if order is not None:
            mv = mv[:, order]
        return _Raw(signal=mv.T, fs=header.fs, age=_age(header.comments.get("Age")),
                    sex=_sex(header.comments.get("Sex")), tokens=_dx_tokens(header))


def _dx_tokens(header: WfdbHeader) -> list[str]:
    return [t for t in header.comments.get("Dx", "").split(",") if t.strip()]


def _lead_order(path: Path, names: list[str]) -> list[int] | None:
    """Column order that puts the header's leads in standard order (None if already so)."""
    canon = [canonical_lead(n) for n in names]
    missing = [lead for lead in LEADS if lead not in canon]
    if len(names) != NUM_LEADS or missing:
        detail = f"; missing {', '.join(missing)}" if missing else ""
        raise RecordError(path, f"wrong leads: {len(names)} signals ({', '.join(names)}), "
                                f"expected the {NUM_LEADS} standard leads{detail}")
    order = [canon.index(lead) for lead in LEADS]
    return None if order == list(range(NUM_LEADS)) else order


def _read_v4_int16(path: Path, header: WfdbHeader) -> np.ndarray:
    """Digital samples ``N x C`` int16 of a Challenge MATLAB v4 file (a view of its bytes)."""
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise RecordError(path, f"unreadable signal: {e.strerror or e}") from e
    if len(buf) < _V4_HEADER.size:
        raise RecordError(path, f"truncated: {len(buf)} bytes, shorter than a MATLAB v4 header")
    kind, rows, cols, imag, namelen = _V4_HEADER.unpack_from(buf)
    if kind != _V4_INT16 or imag:
        raise RecordError(path, f"unreadable signal: MATLAB v4 type {kind} (imaginary {imag}), "
                                "expected a real little-endian int16 matrix")
    start = _V4_HEADER.size + namelen
    n_sig = len(header.signals)
    if rows != n_sig:
        raise RecordError(path, f"shape mismatch: the matrix has {rows} rows, the header lists "
                                f"{n_sig} signals")
    if header.n_samples is not None and cols != header.n_samples:
        raise RecordError(path, f"shape mismatch: the matrix has {cols} samples, the header says "
                                f"{header.n_samples}")
    if header.signals[0].byte_offset not in (0, start):
        raise RecordError(path, f"shape mismatch: the header puts samples at byte "
                                f"{header.signals[0].byte_offset}, the MATLAB header at {start}")
    need = start + 2 * rows * cols
    if len(buf) < need:
        raise RecordError(path, f"truncated: {len(buf)} bytes, a {rows} x {cols} int16 matrix "
                                f"needs {need}")
    # MATLAB stores column-major: consecutive int16 are the leads of one sample.
    return np.frombuffer(buf, dtype="<i2", count=rows * cols, offset=start).reshape(cols, rows)


def _read_with_wfdb(path: Path, header: WfdbHeader) -> np.ndarray:
    """Digital samples ``N x C`` of any other WFDB record, read by the wfdb package."""
    import wfdb

    try:
        record = wfdb.rdrecord(str(path.with_suffix("")), physical=False)
    # wfdb raises many exception types on damaged records; any of them means "unreadable".
    except Exception as e:
        raise RecordError(path, f"unreadable signal: wfdb could not read it ({e})") from e
    digital = record.d_signal
    if digital is None or digital.ndim != 2 or digital.shape[1] != len(header.signals):
        shape = None if digital is None else digital.shape
        raise RecordError(path, f"shape mismatch: wfdb read {shape}, the header lists "
                                f"{len(header.signals)} signals")
    if header.n_samples is not None and digital.shape[0] != header.n_samples:
        raise RecordError(path, f"shape mismatch: {digital.shape[0]} samples read, the header "
                                f"says {header.n_samples}")
    return digital


def _check_checksums(path: Path, digital: np.ndarray, header: WfdbHeader) -> None:
    """Compare each signal's WFDB checksum (16-bit sum of its samples) with the header's."""
    listed = [i for i, s in enumerate(header.signals) if s.checksum is not None]
    actual = _wrapped_column_sums(digital)
    # Modulo 2**16: writers differ on signed (Challenge 2020) or unsigned (wfdb.wrsamp) checksums.
    bad = [i for i in listed if (int(actual[i]) - header.signals[i].checksum) % 65536]
    if bad:
        s = header.signals[bad[0]]
        raise RecordError(path, f"checksum mismatch: {len(bad)} lead(s) corrupt, e.g. "
                                f"{s.name or bad[0]}: header {s.checksum}, data {actual[bad[0]]}")


def _wrapped_column_sums(digital: np.ndarray, rows: int = 256) -> np.ndarray:
    """Column sums modulo 2**16, as int16, of ``N x C`` samples."""
    # int16 accumulation wraps exactly like the checksum. Summing ``rows`` samples as one wide
    # row keeps numpy's inner loop long: an axis-0 sum over 12-wide rows is about 10x slower.
    n, c = digital.shape
    m = n - n % rows
    head = digital[:m].reshape(-1, rows * c).sum(axis=0, dtype=np.int16).reshape(rows, c)
    return head.sum(axis=0, dtype=np.int16) + digital[m:].sum(axis=0, dtype=np.int16)


def _to_millivolts(path: Path, digital: np.ndarray, header: WfdbHeader) -> np.ndarray:
    """Physical ``N x C`` float32 mV = (digital - baseline) / gain, scaled by the units."""
    scale = []
    for s in header.signals:
        mv = _MV_PER_UNIT.get(s.units.lower())
        if mv is None:
            raise RecordError(path, f"units: lead {s.name} is in {s.units!r}, not a voltage")
        scale.append(s.gain / mv)
    out = digital.astype(np.float32)
    baseline = np.array([s.baseline for s in header.signals], dtype=np.float32)
    if baseline.any():
        out -= baseline
    out /= np.array(scale, dtype=np.float32)
    return out


def _age(value) -> float | None:
    try:
        age = float(np.asarray(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None
    return None if np.isnan(age) else age


def _sex(value) -> str | None:
    text = str(value).strip() if value is not None and np.size(value) else ""
    return None if text.lower() in ("", "unknown", "nan") else text


# ------------------------------------------------------------------------------ detection


def _scan(root: Path) -> tuple[list[Path], list[Path], list[Path], list[Path]]:
    """Headers, MATLAB files, REFERENCE.csv files and all data files under ``root`` (recursive).

    Hidden files and folders are skipped (they include interrupted stores' temporary folders).
    """
    headers, mats, references, files = [], [], [], []
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            suffix = path.suffix.lower()
            if name.upper() == "REFERENCE.CSV":
                references.append(path)
            elif suffix in (".hea", ".mat", ".dat"):
                files.append(path)
                if suffix == ".hea":
                    headers.append(path)
                elif suffix == ".mat":
                    mats.append(path)
    return headers, mats, references, files


def _by_id(paths: Sequence[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        if path.stem in found:
            raise DatasetError(f"record {path.stem} appears twice: {found[path.stem]} and {path}")
        found[path.stem] = path
    return found


def open_dataset(root: str | os.PathLike, reference: str | os.PathLike | None = None,
                 require_reference: bool = True) -> DatasetReader:
    """Reader for the dataset under ``root``, whatever its layout and folder depth.

    ``.hea`` files -> :class:`WFDBReader`; ``.mat`` files without headers -> :class:`ICBEBReader`
    (needs a REFERENCE.csv). ``reference`` defaults to every REFERENCE.csv found under ``root``;
    its labels win over header labels for the records it lists. ``require_reference=False``
    (prediction) opens ICBEB files without one.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    headers, mats, found_refs, files = _scan(root)
    if reference is not None:
        if not Path(reference).is_file():
            raise DatasetError(f"{reference}: reference file not found")
        ref_files = [Path(reference)]
    else:
        ref_files = found_refs
    labels = _merge_references(ref_files) if ref_files else None
    if headers:
        paths = _by_id(headers)
        orphans = [(str(m), "no header: a .mat file without a .hea next to it in a WFDB dataset")
                   for m in mats if not m.with_suffix(".hea").is_file()]
        return WFDBReader(root, paths, labels, ref_files, files, orphans)
    if mats:
        if labels is None and require_reference:
            raise DatasetError(f"{root}: .mat files without .hea headers (the original ICBEB "
                               "layout) need a REFERENCE.csv with their labels; none was found "
                               "under the folder (pass --reference)")
        return ICBEBReader(root, _by_id(mats), labels, ref_files, files)
    raise DatasetError(f"{root}: no ECG records found (no .hea or .mat files in it or its "
                       "subfolders)")
