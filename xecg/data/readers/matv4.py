"""The MATLAB files of the WFDB layout: ``val`` (C x N digital samples).

The Challenge 2020 writes one real int16 matrix in MATLAB v4, read here from its bytes (the fast
path). A record re-saved by MATLAB's ``save`` or scipy.io.savemat's default (v5, v7) or saved
as another numeric type holds the same samples: :func:`read_val` reads it through scipy."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xecg.data.readers.base import error_detail
from xecg.data.record import RecordError

#: MATLAB v4 type code of a little-endian int16 full numeric matrix (the Challenge 2020 ``val``).
V4_INT16 = 30
_V4_HEADER = struct.Struct("<5i")  # type, rows, columns, imaginary flag, name length
#: The text that opens a MATLAB v5 (and v7.3) file's 116-byte descriptive header.
_LATER_FORMAT = re.compile(rb"MATLAB (\d+\.\d+) MAT-file")


@dataclass
class V4Matrix:
    """Header of the first matrix of a MATLAB v4 file and the bytes that hold it."""

    kind: int
    rows: int
    cols: int
    imaginary: int
    data_offset: int  # byte where the samples start
    buf: bytes

    @property
    def numeric(self) -> bool:
        """A full numeric matrix in IEEE little- or big-endian order: type ``MOPT`` with machine
        M 0 or 1, O 0, precision P 0-5 (double to uint8) and T 0 (not text or sparse)."""
        machine, rest = divmod(self.kind, 1000)
        return self.kind >= 0 and machine <= 1 and rest // 100 == 0 and rest // 10 % 10 <= 5 \
            and rest % 10 == 0

    def int16(self) -> np.ndarray:
        """The samples as ``cols x rows`` int16 (a view of the bytes: ``N x C`` for ``val``).

        MATLAB stores column-major: consecutive int16 are the leads of one sample.
        """
        return np.frombuffer(self.buf, dtype="<i2", count=self.rows * self.cols,
                             offset=self.data_offset).reshape(self.cols, self.rows)


def read_v4_header(path: Path) -> V4Matrix:
    """Read ``path`` and the header of its first matrix; RecordError if there is none."""
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise RecordError(path, f"unreadable signal: {e.strerror or e}") from e
    later = _LATER_FORMAT.match(buf[:116])
    if later:  # its text header would read as a v4 matrix of absurd size
        raise LaterFormat(path, later.group(1).decode().removesuffix(".0"))
    if len(buf) < _V4_HEADER.size:
        raise RecordError(path, f"truncated: {len(buf)} bytes, shorter than a MATLAB v4 header")
    kind, rows, cols, imag, namelen = _V4_HEADER.unpack_from(buf)
    if min(rows, cols, namelen) < 0 or _V4_HEADER.size + namelen > len(buf):
        raise RecordError(path, f"unreadable signal: not a MATLAB v4 matrix ({rows} x {cols}, "
                                f"name of {namelen} bytes in a file of {len(buf)})")
    return V4Matrix(kind, rows, cols, imag, _V4_HEADER.size + namelen, buf)


class LaterFormat(RecordError):
    """A MATLAB v5 or later file where :func:`read_v4_header` expected v4 (``version``:
    ``"5"`` for v5 to v7, ``"7.3"`` for HDF5)."""

    def __init__(self, path: Path, version: str):
        super().__init__(path, f"unreadable signal: a MATLAB v{version} file, not MATLAB v4")
        self.version = version


def read_val(path: Path, version: str) -> np.ndarray:
    """The matrix ``val`` of a MATLAB file (``version``: ``"4"``, ``"5"``) as integer digital
    samples ``N x C`` (int16 where they fit), read by scipy; RecordError naming what is wrong.

    The header's gain and baseline turn these into mV, so values that are not whole numbers
    (samples saved in mV) are refused rather than read a thousand times too small."""
    if version == "7.3":  # HDF5: scipy reads up to v7
        raise RecordError(path, "unreadable signal: a MATLAB v7.3 (HDF5) file; save it with "
                                "save(..., '-v7') or '-v4'")
    from scipy.io import loadmat, whosmat

    try:
        val = loadmat(path, variable_names=["val"]).get("val")
        held = [name for name, *_ in whosmat(path)] if val is None else []
    # scipy raises many exception types on damaged files; any of them means "unreadable".
    except Exception as e:
        raise RecordError(path, f"unreadable signal: scipy could not read this MATLAB "
                                f"v{version} file ({error_detail(e)})") from e
    if val is None:
        raise RecordError(path, f"unreadable signal: no matrix 'val' in this MATLAB v{version} "
                                f"file (it holds {', '.join(held) or 'nothing'})")
    if val.ndim != 2 or val.dtype.kind not in "iuf":
        raise RecordError(path, f"unreadable signal: 'val' is a {' x '.join(map(str, val.shape))}"
                                f" {val.dtype} array, not a real numeric matrix")
    if val.dtype.kind == "f":
        bad = ~np.isfinite(val) | (val != np.round(val))
        if bad.any():
            raise RecordError(path, f"not digital samples: {int(bad.sum())} values of 'val' are "
                                    f"not whole numbers (e.g. {val[bad][0]:g}); a WFDB .mat holds "
                                    "the digital samples that the header's gain turns into mV")
    fits = val.size == 0 or (val.min() >= -32768 and val.max() <= 32767)
    return val.astype(np.int16 if fits else np.int64).T


def check_int16_size(path: Path, m: V4Matrix) -> None:
    """RecordError unless ``m`` is a real int16 matrix whose samples are all in the file."""
    need = m.data_offset + 2 * m.rows * m.cols
    if len(m.buf) < need:
        raise RecordError(path, f"truncated: {len(m.buf)} bytes, a {m.rows} x {m.cols} int16 "
                                f"matrix needs {need}")
