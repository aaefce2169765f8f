"""MATLAB v4 files as the Challenge 2020 writes them: one real int16 matrix ``val`` (C x N)."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
        version = later.group(1).decode().removesuffix(".0")
        raise RecordError(path, f"unreadable signal: a MATLAB v{version} file, not the MATLAB v4 "
                                "matrix a WFDB .mat holds (scipy.io.savemat writes v4 with "
                                "format='4')")
    if len(buf) < _V4_HEADER.size:
        raise RecordError(path, f"truncated: {len(buf)} bytes, shorter than a MATLAB v4 header")
    kind, rows, cols, imag, namelen = _V4_HEADER.unpack_from(buf)
    if min(rows, cols, namelen) < 0 or _V4_HEADER.size + namelen > len(buf):
        raise RecordError(path, f"unreadable signal: not a MATLAB v4 matrix ({rows} x {cols}, "
                                f"name of {namelen} bytes in a file of {len(buf)})")
    return V4Matrix(kind, rows, cols, imag, _V4_HEADER.size + namelen, buf)


def check_int16_size(path: Path, m: V4Matrix) -> None:
    """RecordError unless ``m`` is a real int16 matrix whose samples are all in the file."""
    need = m.data_offset + 2 * m.rows * m.cols
    if len(m.buf) < need:
        raise RecordError(path, f"truncated: {len(m.buf)} bytes, a {m.rows} x {m.cols} int16 "
                                f"matrix needs {need}")
