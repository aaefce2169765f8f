"""MATLAB files: the WFDB layout's ``val`` (C x N digital samples) and the checks that make
scipy safe to call on damaged files.

The Challenge 2020 writes one real int16 matrix in MATLAB v4, read here from its bytes (the fast
path). A record re-saved by MATLAB's ``save`` or scipy.io.savemat's default (v5, v7) or saved
as another numeric type holds the same samples: :func:`read_val` reads it through scipy.

scipy's v5 reader trusts the element types and sizes it finds: a damaged file can crash the
whole process (a segmentation fault) instead of raising. :func:`check_v5` walks every element
first, so that such a file is one RecordError like any other bad record."""

from __future__ import annotations

import io
import re
import struct
import zlib
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


def later_version(buf: bytes) -> str | None:
    """The version of a MATLAB v5 or later file from its text header (``"5"`` for v5 to v7,
    ``"7.3"`` for HDF5), or None: a v4 file, whose first matrix starts at byte 0."""
    later = _LATER_FORMAT.match(buf[:116])
    return later.group(1).decode().removesuffix(".0") if later else None


def read_v4_header(path: Path, buf: bytes) -> V4Matrix:
    """The header of the first matrix of ``buf``, the bytes of the MATLAB v4 file at ``path``
    (see :func:`later_version`); RecordError if there is none."""
    if len(buf) < _V4_HEADER.size:
        raise RecordError(path, f"truncated: {len(buf)} bytes, shorter than a MATLAB v4 header")
    kind, rows, cols, imag, namelen = _V4_HEADER.unpack_from(buf)
    if min(rows, cols, namelen) < 0 or _V4_HEADER.size + namelen > len(buf):
        raise RecordError(path, f"unreadable signal: not a MATLAB v4 matrix ({rows} x {cols}, "
                                f"name of {namelen} bytes in a file of {len(buf)})")
    return V4Matrix(kind, rows, cols, imag, _V4_HEADER.size + namelen, buf)


#: Bytes enough to tell a MATLAB v4 file by its first matrix's header and name.
V4_SNIFF = _V4_HEADER.size + 64


def looks_like_v4(head: bytes) -> bool:
    """True if ``head``, the first :data:`V4_SNIFF` bytes of a file, open a MATLAB v4 matrix
    as a WFDB record's .mat does (``val``): a type code, sizes, and a short printable name
    ending in a NUL. The original ICBEB files are MATLAB v5; random or damaged bytes almost
    never pass."""
    if len(head) < _V4_HEADER.size or later_version(head) is not None:
        return False
    for order in "<>":  # v4 headers are in the writing machine's byte order
        kind, rows, cols, imag, namelen = struct.unpack_from(order + "5i", head)
        if not (0 <= kind <= 4052 and rows >= 0 and cols >= 0 and imag in (0, 1)
                and 2 <= namelen <= 64 and _V4_HEADER.size + namelen <= len(head)):
            continue
        name = head[_V4_HEADER.size:_V4_HEADER.size + namelen]
        if name.endswith(b"\0") and re.fullmatch(rb"[A-Za-z]\w*", name[:-1]):
            return True
    return False


V73_PROBLEM = ("unreadable signal: a MATLAB v7.3 (HDF5) file; save it with save(..., '-v7') or "
               "'-v4'")


def read_bytes(path: Path) -> bytes:
    """The bytes of ``path``; RecordError if it is gone or cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise RecordError(path, "missing file: gone since the folder was scanned") from e
    except OSError as e:
        raise RecordError(path, f"unreadable signal: {e.strerror or e}") from e


#: MATLAB v5 element types that scipy's reader has a type for (miINT8 ... miUTF32, less the
#: unused codes): any other makes scipy 1.17 index past its table of types and crash.
_V5_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 14, 16, 17, 18})
_V5_INT32, _V5_UINT32, _V5_MATRIX, _V5_COMPRESSED = 5, 6, 14, 15
#: Limits beyond any ECG file: nested matrices, values of one matrix, elements inside one
#: matrix, inflated bytes.
_V5_DEPTH, _V5_MAX_VALUES, _V5_MAX_PARTS, _V5_MAX_INFLATED = 32, 1 << 40, 1 << 20, 1 << 30


def check_v5(path: Path, buf: bytes) -> bytes:
    """``buf``, the bytes of the MATLAB v5 file at ``path``, once every element is found to
    have a known type, to lie inside its parent and, for a matrix, to have dimensions of at
    most 2**40 elements; else RecordError. Compressed variables (v7) are inflated to be
    checked, and the file is returned with them inflated: scipy then reads it without
    inflating them a second time."""
    if len(buf) >= 4 and 0 in buf[:4]:  # as scipy tells them apart
        raise RecordError(path, "unreadable signal: a MATLAB v4 file, where a v5 one belongs")
    if len(buf) < 128:
        raise RecordError(path, f"truncated: {len(buf)} bytes, shorter than a MATLAB v5 header")
    order = {b"IM": "<", b"MI": ">"}.get(bytes(buf[126:128]))
    if order is None:
        raise RecordError(path, "unreadable signal: a MATLAB v5 header without its byte-order "
                                "mark ('IM' or 'MI' at byte 126)")
    if struct.unpack_from(order + "H", buf, 124)[0] == 0x0200:
        raise RecordError(path, V73_PROBLEM)
    pos, parts, inflated = 128, [buf[:128]], False
    while pos < len(buf):
        mdtype, data, end, _ = _v5_tag(path, buf, pos, len(buf), order, padded=False)
        if mdtype == _V5_COMPRESSED:
            inner = _inflate(path, buf[data:end], pos)
            _v5_elements(path, inner, 0, len(inner), order, 0, padded=True, top=True)
            parts.append(inner)  # one whole matrix element, tag included
            inflated = True
        elif mdtype == _V5_MATRIX:
            _v5_elements(path, buf, data, end, order, 1, padded=True)
            parts.append(buf[pos:end])
        else:
            raise RecordError(path, f"unreadable signal: a MATLAB v5 element of type {mdtype} "
                                    f"at byte {pos}, where a variable belongs")
        pos = end  # variables follow each other unpadded (as scipy reads them)
    return b"".join(parts) if inflated else buf


def _v5_tag(path: Path, buf: bytes, pos: int, end: int, order: str,
            padded: bool) -> tuple[int, int, int, int]:
    """The element at ``pos``: ``(type, data start, data end, next element)``."""
    if pos + 8 > end:
        raise RecordError(path, f"truncated: a MATLAB v5 element at byte {pos} has no whole tag")
    word, size = struct.unpack_from(order + "II", buf, pos)
    if word >> 16:  # the small format: type and size in one word, data in the next four bytes
        mdtype, size, data, after = word & 0xFFFF, word >> 16, pos + 4, pos + 8
        if size > 4:
            raise RecordError(path, f"unreadable signal: a small MATLAB v5 element at byte {pos} "
                                    f"claims {size} bytes")
    else:
        mdtype, data = word, pos + 8
        after = data + (-(-size // 8) * 8 if padded else size)
    if mdtype not in _V5_TYPES and mdtype != _V5_COMPRESSED:
        raise RecordError(path, f"unreadable signal: a MATLAB v5 element of unknown type "
                                f"{mdtype} at byte {pos}")
    if data + size > end:
        raise RecordError(path, f"truncated: a MATLAB v5 element at byte {pos} claims {size} "
                                f"bytes, {max(end - data, 0)} are left")
    return mdtype, data, data + size, min(after, end)


def _v5_elements(path: Path, buf: bytes, pos: int, end: int, order: str, depth: int,
                 padded: bool, top: bool = False) -> None:
    """Check the elements from ``pos`` to ``end``: inside a matrix (``depth`` levels down), or
    the ``top`` of an inflated variable, which holds one matrix."""
    if depth > _V5_DEPTH:
        raise RecordError(path, f"unreadable signal: MATLAB v5 matrices nested more than "
                                f"{_V5_DEPTH} deep")
    for i in range(_V5_MAX_PARTS):
        if pos >= end:
            return
        mdtype, data, stop, after = _v5_tag(path, buf, pos, end, order, padded)
        if mdtype == _V5_COMPRESSED:
            raise RecordError(path, f"unreadable signal: a compressed MATLAB v5 element inside "
                                    f"a variable (byte {pos})")
        if mdtype == _V5_MATRIX:
            _v5_elements(path, buf, data, stop, order, depth + 1, padded)
        elif top:
            raise RecordError(path, f"unreadable signal: a compressed MATLAB v5 variable holds "
                                    f"an element of type {mdtype}, not a matrix")
        elif i == 1 and mdtype in (_V5_INT32, _V5_UINT32):  # a matrix's dimensions
            dims = np.frombuffer(buf, order + ("i4" if mdtype == _V5_INT32 else "u4"),
                                 (stop - data) // 4, data).astype(np.int64)
            if (dims < 0).any() or float(np.prod(dims.astype(np.float64))) > _V5_MAX_VALUES:
                raise RecordError(path, f"unreadable signal: a MATLAB v5 matrix of dimensions "
                                        f"{' x '.join(map(str, dims))}")
        pos = after
    raise RecordError(path, f"unreadable signal: more than {_V5_MAX_PARTS} MATLAB v5 "
                            "elements in one matrix")


def _inflate(path: Path, data: bytes, pos: int) -> bytes:
    """A compressed variable's bytes, inflated (at most 1 GiB)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, _V5_MAX_INFLATED + 1)
    except zlib.error as e:
        raise RecordError(path, f"unreadable signal: the compressed MATLAB v5 variable at byte "
                                f"{pos} is damaged (zlib: {e})") from e
    if len(out) > _V5_MAX_INFLATED:
        raise RecordError(path, f"unreadable signal: the compressed MATLAB v5 variable at byte "
                                f"{pos} inflates to more than 1 GiB")
    return out


def read_val(path: Path, version: str, buf: bytes) -> np.ndarray:
    """The matrix ``val`` of ``buf``, the bytes of the MATLAB file at ``path`` (``version``:
    ``"4"``, ``"5"``, ``"7.3"``), as integer digital samples ``N x C`` (int16 where they fit),
    read by scipy; RecordError naming what is wrong.

    The header's gain and baseline turn these into mV, so values that are not whole numbers
    (samples saved in mV) are refused rather than read a thousand times too small."""
    if version == "7.3":  # HDF5: scipy reads up to v7
        raise RecordError(path, V73_PROBLEM)
    from scipy.io import loadmat, whosmat

    if version == "5":
        buf = check_v5(path, buf)
    try:
        val = loadmat(io.BytesIO(buf), variable_names=["val"]).get("val")
        held = [name for name, *_ in whosmat(io.BytesIO(buf))] if val is None else []
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
