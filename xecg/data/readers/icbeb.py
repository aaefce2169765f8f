"""The original ICBEB 2018 release: ``TrainingSet*/Axxxx.mat`` (MATLAB v5 struct ``ECG`` with
``sex``, ``age``, ``data`` 12 x N float mV); labels only in ``REFERENCE.csv``."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xecg.classes import NUM_LEADS
from xecg.data.readers.base import (
    DatasetError,
    DatasetReader,
    RawRecord,
    check_amplitude,
    error_detail,
    parse_age,
    parse_sex,
)
from xecg.data.readers.matfile import check_v5, read_bytes
from xecg.data.readers.reference import Reference
from xecg.data.record import RecordError

#: The ICBEB .mat files do not store their rate; the release documents 500 Hz for every record.
ICBEB_FS = 500.0


class ICBEBReader(DatasetReader):
    """The original ICBEB release: MATLAB v5 ``ECG`` structs, labels in REFERENCE.csv."""

    layout = "icbeb"
    suffixes = (".mat",)
    requires_reference = True

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.suffix.lower() == ".mat"

    @classmethod
    def from_files(cls, root: Path, files: Sequence[Path], reference: Reference | None,
                   require_reference: bool = True, problems: Sequence[tuple[str, str]] = ()
                   ) -> DatasetReader:
        if reference is None and require_reference:
            # Only xecg prepare has --reference; train and fit find the file in the folder.
            raise DatasetError(f"{root}: .mat files without .hea headers (the original ICBEB "
                               "layout) need a REFERENCE.csv with their labels; none was found "
                               "in the folder or its subfolders: put REFERENCE.csv in the "
                               "dataset folder (xecg prepare also takes one with --reference "
                               "FILE)")
        return super().from_files(root, files, reference, require_reference, problems)

    def sampling_rate(self, rec: str) -> float:
        return ICBEB_FS

    def _tokens(self, rec: str) -> list[str]:
        return []  # the struct holds no diagnosis

    def _read(self, rec: str) -> RawRecord:
        """``ECG.data`` as ``12 x N`` float32 mV, with the struct's age and sex."""
        from scipy.io import loadmat

        path = self.path_of(rec)
        buf = check_v5(path, read_bytes(path))  # before scipy, which a damaged file can crash
        try:
            mat = loadmat(io.BytesIO(buf), simplify_cells=True, variable_names=["ECG"])
        # scipy raises many exception types on damaged files; any of them means "unreadable".
        except Exception as e:
            raise RecordError(path, "unreadable signal: not a readable MATLAB file "
                                    f"({error_detail(e)})") from e
        ecg = mat.get("ECG")
        if not isinstance(ecg, dict) or "data" not in ecg:
            raise RecordError(path, "unreadable signal: no ECG struct with a data field "
                                    f"({_variables(path)})")
        raw = np.asarray(ecg["data"])
        if raw.dtype.kind not in "iuf":
            raise RecordError(path, f"unreadable signal: ECG.data holds {raw.dtype} values, "
                                    "expected real numbers")
        with np.errstate(over="ignore"):  # beyond float32: inf, counted just below
            data = raw.astype(np.float32)
        if data.ndim != 2 or data.shape[0] != NUM_LEADS:
            raise RecordError(path, f"wrong leads: ECG.data has shape {data.shape}, "
                                    f"expected {NUM_LEADS} x N")
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad:
            raise RecordError(path, f"non-finite: {bad} NaN/inf samples in ECG.data")
        check_amplitude(path, data, "is ECG.data in mV?")
        return RawRecord(signal=data, fs=ICBEB_FS, age=parse_age(ecg.get("age")),
                         sex=parse_sex(ecg.get("sex")), tokens=[])


def _variables(path: Path) -> str:
    """What a MATLAB file holds, for messages: ``variables: val (12 x 5000 int16)``."""
    from scipy.io import whosmat

    try:
        found = whosmat(io.BytesIO(check_v5(path, path.read_bytes())))
    except Exception:  # only for a message: whatever fails, say nothing more
        return "its variables cannot be listed"
    if not found:
        return "it holds no variables"
    return "variables: " + ", ".join(f"{name} ({' x '.join(map(str, shape))} {kind})"
                                     for name, shape, kind in found[:5])
