"""WFDB records as the PhysioNet/CinC Challenge 2020 ships CPSC 2018: ``Axxxx.hea`` +
``Axxxx.mat`` (MATLAB v4, key ``val``, int16 12 x N; also read when re-saved as MATLAB v5/v7 or
another numeric type).

v1.0.0 writes CPSC abbreviations in ``#Dx:`` (``AF,RBBB``), v1.0.2 SNOMED-CT codes
(``164889003``). Both are one format and their vocabularies do not overlap, so one reader with
one label mapping (:meth:`WFDBReader.label_map`) reads either, even mixed in one folder; a
layout with another vocabulary subclasses it and overrides ``label_map``. Records in other WFDB
signal formats (``.dat``: 212, 16, ...) are read through the wfdb package.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from xecg.classes import LEADS, NUM_LEADS, canonical_lead
from xecg.data.readers.base import (
    DatasetReader,
    RawRecord,
    check_amplitude,
    error_detail,
    parse_age,
    parse_sex,
)
from xecg.data.readers.header import FORMATS, MV_PER_UNIT, WfdbHeader, parse_header
from xecg.data.readers.matfile import (
    V4_INT16,
    check_int16_size,
    later_version,
    read_v4_header,
    read_val,
)
from xecg.data.record import RecordError


class WFDBReader(DatasetReader):
    """Challenge 2020 WFDB records (``.hea`` + ``.mat``); other WFDB formats go through wfdb."""

    layout = "wfdb"
    suffixes = (".hea", ".mat", ".dat")

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.suffix.lower() == ".hea"

    @classmethod
    def orphans_in(cls, files: Sequence[Path]) -> list[tuple[str, str]]:
        # Paired by folder and stem, the extension in any case (A0001.HEA + A0001.MAT).
        headers = {(f.parent, f.stem) for f in files if f.suffix.lower() == ".hea"}
        return [(str(m), "no header: a .mat file without a .hea next to it in a WFDB dataset")
                for m in files
                if m.suffix.lower() == ".mat" and (m.parent, m.stem) not in headers]

    def signal_path(self, header: Path, name: str) -> Path | None:
        """The signal file ``name`` that ``header`` names, in its folder: as written, else with
        its extension in another case (``A0001.MAT`` for ``A0001.mat``: copies from
        case-insensitive file systems, some mirrors) among the files found; None if neither."""
        exact = header.parent / name
        if exact.is_file():
            return exact
        if not hasattr(self, "_by_stem"):  # built once, from the scan: no listing per record
            self._by_stem = {(f.parent, f.stem, f.suffix.lower()): f for f in self.files}
        stem, suffix = os.path.splitext(name)
        return self._by_stem.get((header.parent, stem, suffix.lower()))

    def sampling_rate(self, rec: str) -> float:
        return parse_header(self.path_of(rec)).fs

    def _tokens(self, rec: str) -> list[str]:
        return parse_header(self.path_of(rec)).dx_tokens

    def _read(self, rec: str) -> RawRecord:
        """Samples ``12 x N`` float32 mV (a transposed view), leads put in standard order."""
        path = self.path_of(rec)
        header = parse_header(path)
        names = [s.name for s in header.signals]
        order = _lead_order(path, names)
        _check_calibrated(path, header)
        files: dict[str, Path] = {}
        for file in dict.fromkeys(s.file for s in header.signals):
            found = self.signal_path(path, file)
            if found is None:
                raise RecordError(path, f"missing file: signal file {file} named in the header "
                                        "does not exist")
            files[file] = found
        if header.fast:
            digital = _read_mat(files[header.signals[0].file], header)
        else:
            _check_file_sizes(path, header, files)
            digital = _read_with_wfdb(path, header, files)
        _check_invalid_samples(path, digital, header, files)
        _check_checksums(path, digital, header)
        mv = _to_millivolts(digital, header)
        check_amplitude(path, mv, "is the header's gain or unit wrong?")
        if order is not None:
            mv = mv[:, order]
        return RawRecord(signal=mv.T, fs=header.fs, age=parse_age(header.comments.get("Age")),
                         sex=parse_sex(header.comments.get("Sex")), tokens=header.dx_tokens)


def _lead_order(path: Path, names: list[str]) -> list[int] | None:
    """Column order that puts the header's leads in standard order (None if already so)."""
    canon = [canonical_lead(n) for n in names]
    missing = [lead for lead in LEADS if lead not in canon]
    if len(names) != NUM_LEADS or missing:
        detail = f"; missing {', '.join(missing)}" if missing else ""
        twice = sorted({n for n in canon if n is not None and canon.count(n) > 1},
                       key=LEADS.index)
        detail += f"; {', '.join(twice)} twice" if twice else ""
        raise RecordError(path, f"wrong leads: {len(names)} signals ({', '.join(names)}), "
                                f"expected the {NUM_LEADS} standard leads{detail}")
    order = [canon.index(lead) for lead in LEADS]
    return None if order == list(range(NUM_LEADS)) else order


def _check_calibrated(path: Path, header: WfdbHeader) -> None:
    """RecordError if a lead has no gain (0 or none): its samples have no known amplitude."""
    bad = [s.name or str(i + 1) for i, s in enumerate(header.signals) if not s.calibrated]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise RecordError(path, f"uncalibrated signal: gain 0 (or none) in the header, lead "
                                f"{bad[0]}{more}; WFDB marks such a signal uncalibrated, so its "
                                "amplitude in mV is unknown")


def _read_mat(path: Path, header: WfdbHeader) -> np.ndarray:
    """Digital samples ``N x C`` of the layout's MATLAB file: a view of a Challenge int16 v4
    file's bytes, else ``val`` as scipy reads it (MATLAB v5/v7, other numeric types)."""
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise RecordError(path, f"unreadable signal: {e.strerror or e}") from e
    version = later_version(buf)
    if version is None:
        m = read_v4_header(path, buf)
        if m.kind == V4_INT16 and not m.imaginary:
            _check_shape(path, header, m.rows, m.cols)
            if header.signals[0].byte_offset not in (0, m.data_offset):
                raise RecordError(path, f"shape mismatch: the header puts samples at byte "
                                        f"{header.signals[0].byte_offset}, the MATLAB header at "
                                        f"{m.data_offset}")
            check_int16_size(path, m)
            return m.int16()
        if not m.numeric:  # scipy would read VAX or Cray numbers with only a warning
            raise RecordError(path, f"unreadable signal: MATLAB v4 type {m.kind}, not a numeric "
                                    "matrix in IEEE little- or big-endian order")
    digital = read_val(path, version or "4", buf)
    _check_shape(path, header, digital.shape[1], digital.shape[0])
    return digital


def _check_shape(path: Path, header: WfdbHeader, rows: int, samples: int) -> None:
    """RecordError unless the header lists ``rows`` signals of ``samples`` samples."""
    if rows != len(header.signals):
        raise RecordError(path, f"shape mismatch: the matrix has {rows} rows, the header lists "
                                f"{len(header.signals)} signals")
    if header.n_samples is not None and samples != header.n_samples:
        raise RecordError(path, f"shape mismatch: the matrix has {samples} samples, the header "
                                f"says {header.n_samples}")


def _read_with_wfdb(path: Path, header: WfdbHeader, files: dict[str, Path]) -> np.ndarray:
    """Digital samples ``N x C`` of any other WFDB record, read by the wfdb package; ``files``
    maps each signal file the header names to the file found."""
    import wfdb

    try:
        with _wfdb_names(path, files) as record_name:
            record = wfdb.rdrecord(record_name, physical=False)
    # wfdb raises many exception types on damaged records; any of them means "unreadable".
    except Exception as e:
        raise RecordError(path, f"unreadable signal: wfdb could not read it "
                                f"({error_detail(e)})") from e
    digital = record.d_signal
    if digital is None or digital.ndim != 2 or digital.shape[1] != len(header.signals):
        shape = None if digital is None else digital.shape
        raise RecordError(path, f"shape mismatch: wfdb read {shape}, the header lists "
                                f"{len(header.signals)} signals")
    if header.n_samples is not None and digital.shape[0] != header.n_samples:
        raise RecordError(path, f"shape mismatch: {digital.shape[0]} samples read, the header "
                                f"says {header.n_samples}")
    return digital


@contextmanager
def _wfdb_names(path: Path, files: dict[str, Path]) -> Iterator[str]:
    """The record name to give wfdb, which opens ``NAME.hea`` and the signal files as the header
    spells them: the record's own where its files are so named, else links so named to them in
    a temporary folder (``A0001.HEA`` + ``A0001.DAT``)."""
    if path.suffix == ".hea" and all(found.name == name for name, found in files.items()):
        yield str(path.with_suffix(""))
        return
    with tempfile.TemporaryDirectory(prefix="xecg-wfdb-") as tmp:
        (Path(tmp) / f"{path.stem}.hea").symlink_to(path.resolve())
        for name, found in files.items():
            (Path(tmp) / name).symlink_to(found.resolve())
        yield str(Path(tmp) / path.stem)


def _check_file_sizes(path: Path, header: WfdbHeader, files: dict[str, Path]) -> None:
    """RecordError unless each signal file holds the samples the header declares.

    Checked before wfdb reads a record: a declared length far beyond the file would otherwise
    make it allocate that length, or fail with a message that names neither file nor field.
    """
    if header.n_samples is None:
        return
    by_file: dict[str, list[int]] = {}
    for i, s in enumerate(header.signals):
        by_file.setdefault(s.file, []).append(i)
    for file, channels in by_file.items():
        first = header.signals[channels[0]]
        per_sample = FORMATS[first.fmt].bytes_per_sample
        if per_sample == 0:  # FLAC: compressed, no size to expect
            continue
        data = files[file]
        size = data.stat().st_size
        if first.byte_offset > size or (first.byte_offset == size and header.n_samples):
            raise RecordError(path, f"bad header: lead {first.name or channels[0] + 1} byte "
                                    f"offset {first.byte_offset} is past the end of {file} "
                                    f"({size} bytes)")
        frame = sum(header.signals[i].samples_per_frame for i in channels)
        need = first.byte_offset + int(np.ceil(header.n_samples * frame * per_sample))
        if size < need:
            raise RecordError(data, f"truncated: {size} bytes, the header's {header.n_samples} "
                                    f"samples x {len(channels)} signals in format {first.fmt} "
                                    f"need {need}")


def _check_invalid_samples(path: Path, digital: np.ndarray, header: WfdbHeader,
                           files: dict[str, Path]) -> None:
    """RecordError if any sample holds its format's invalid value (WFDB's missing data, which
    wfdb turns into NaN): such a record is skipped, not read as a -32.768 mV spike."""
    invalid = [FORMATS[s.fmt].invalid for s in header.signals]
    if header.fast:  # one value for every lead; a minimum is much faster than a comparison
        if digital.size == 0 or int(digital.min()) != invalid[0]:
            return
        count = int(np.count_nonzero(digital == invalid[0]))
    else:
        count = sum(int(np.count_nonzero(digital[:, i] == v))
                    for i, v in enumerate(invalid) if v is not None)
    if count:
        where = next(iter(files.values())) if len(files) == 1 else path
        raise RecordError(where, f"invalid samples: {count} samples hold the format's invalid "
                                 f"value {invalid[0]} (missing data)")


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


def _to_millivolts(digital: np.ndarray, header: WfdbHeader) -> np.ndarray:
    """Physical ``N x C`` float32 mV = (digital - baseline) / gain, scaled by the units.

    int16 samples and baselines within 2**24 subtract exactly in float32; wider ones (formats 24
    and 32, large baselines) are subtracted in float64 first, so they keep float32 precision.
    """
    scale = np.array([s.gain / MV_PER_UNIT[s.units.lower()] for s in header.signals],
                     dtype=np.float64)
    baseline = np.array([s.baseline for s in header.signals], dtype=np.float64)
    if digital.dtype.itemsize <= 2 and np.abs(baseline).max(initial=0) < 2**24:
        out = digital.astype(np.float32)
        if baseline.any():
            out -= baseline.astype(np.float32)
        out /= scale.astype(np.float32)
        return out
    return ((digital - baseline) / scale).astype(np.float32)
