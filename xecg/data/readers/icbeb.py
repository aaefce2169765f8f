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
from xecg.data.readers.matfile import V4_SNIFF, check_v5, looks_like_v4, read_bytes
from xecg.data.readers.reference import Reference
from xecg.data.record import RecordError
from xecg.errors import counted

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
        mats = [f for f in files if cls.claims(f)]
        headerless = [f for f in mats if _is_wfdb_signal_file(f)]
        if headerless and len(headerless) == len(mats):
            # Not the ICBEB release: the .mat files of a WFDB dataset whose .hea files are
            # missing. Asking for a REFERENCE.csv, then failing each file as "a MATLAB v4
            # file, where a v5 one belongs", would send the user the wrong way.
            first = headerless[0]
            raise DatasetError(f"{root}: no header: {counted(len(headerless), '.mat file')} "
                               f"without a .hea, each a WFDB record's signal file (MATLAB v4, "
                               f"e.g. {first}), not the original ICBEB layout (MATLAB v5): a "
                               f"WFDB record's .mat needs its .hea beside it ({first.stem}.hea)")
        problems = [*problems, *((str(f), no_header(f)) for f in headerless)]
        if reference is None and require_reference:
            # Only xecg prepare has --reference; train and fit find the file in the folder.
            raise DatasetError(f"{root}: .mat files without .hea headers (the original ICBEB "
                               "layout) need a REFERENCE.csv with their labels; none was found "
                               "in the folder or its subfolders: put REFERENCE.csv in the "
                               "dataset folder (xecg prepare also takes one with --reference "
                               "FILE)")
        return super().from_files(root, files, reference, require_reference, problems)

    @property
    def missing_reference(self) -> str | None:
        """Why no record has labels, for messages, where no REFERENCE.csv was found (the
        checkpoint commands open ICBEB files without one); None where one was."""
        if self.reference is not None:
            return None
        hint = ""
        for folder in list(self.root.resolve().parents)[:2]:
            if (folder / "REFERENCE.csv").is_file():
                hint = (f"; there is one in {folder}: give that folder (the whole release) "
                        "instead")
                break
        return (f"no REFERENCE.csv was found in {self.root} or its subfolders, and the ICBEB "
                f".mat files hold no labels{hint}")

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


def _is_wfdb_signal_file(path: Path) -> bool:
    """True if ``path`` is a MATLAB v4 matrix, as a WFDB record's .mat is (ICBEB's are v5)."""
    try:
        with open(path, "rb") as f:
            return looks_like_v4(f.read(V4_SNIFF))
    except OSError:
        return False  # reading the record says what is wrong with it


def no_header(mat: Path) -> str:
    """The skip reason of a WFDB record's .mat found without its header."""
    return (f"no header: {mat.stem}.hea is missing; a WFDB record's .mat (MATLAB v4, as this "
            "one is) needs its .hea beside it (the original ICBEB .mat files are MATLAB v5)")



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
