"""WFDB headers (``.hea``): the record line, one line per signal, ``#Key: value`` comments."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from xecg.data.record import RecordError


@dataclass
class WfdbSignal:
    """One signal line: file, format, gain (ADC units per physical unit; 0: uncalibrated),
    baseline, units, name."""

    file: str
    fmt: str
    byte_offset: int
    plain: bool  # one sample per frame, no skew: the layout the fast path reads
    gain: float
    baseline: int
    units: str
    checksum: int | None
    name: str
    samples_per_frame: int = 1

    @property
    def calibrated(self) -> bool:
        """False where the header gives a gain of 0 or none: WFDB's mark of an uncalibrated
        signal, whose samples have no known amplitude in mV."""
        return self.gain > 0


@dataclass
class WfdbHeader:
    """The parts of a WFDB ``.hea`` that xecg uses; ``comments`` maps ``Age``/``Sex``/``Dx``."""

    record: str
    fs: float
    n_samples: int | None
    signals: list[WfdbSignal]
    comments: dict[str, str]
    multi_segment: bool

    @property
    def fast(self) -> bool:
        """True for the Challenge 2020 layout: every lead int16 (fmt 16) in one MATLAB v4 file."""
        files = {s.file for s in self.signals}
        return (not self.multi_segment and len(files) == 1 and files.pop().lower().endswith(".mat")
                and all(s.fmt == "16" and s.plain for s in self.signals))

    @property
    def dx_tokens(self) -> list[str]:
        """The comma-separated ``#Dx:`` tokens (abbreviations or SNOMED-CT codes)."""
        return [t for t in self.comments.get("Dx", "").split(",") if t.strip()]


_FMT = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
_GAIN = re.compile(r"^([-+]?[\d.]+(?:[eE][-+]?\d+)?)(?:\(([-+]?\d+)\))?(?:/(\S+))?$")
#: Characters that never occur in a text header (C0/C1 controls other than tab and newlines).
_BINARY = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class SignalFormat:
    """A WFDB signal format: sample width in bits, bytes per sample in the file (0: compressed,
    the size is unknown before decoding) and the sample value that marks missing data."""

    bits: int
    bytes_per_sample: float
    invalid: int | None


#: The WFDB signal formats the wfdb package reads (https://wfdb.io/spec/signal-files.html).
FORMATS: dict[str, SignalFormat] = {
    "8": SignalFormat(8, 1, None),  # first differences: no invalid value
    "16": SignalFormat(16, 2, -(2**15)),
    "24": SignalFormat(24, 3, -(2**23)),
    "32": SignalFormat(32, 4, -(2**31)),
    "61": SignalFormat(16, 2, -(2**15)),
    "80": SignalFormat(8, 1, -(2**7)),
    "160": SignalFormat(16, 2, -(2**15)),
    "212": SignalFormat(12, 1.5, -(2**11)),
    "310": SignalFormat(10, 4 / 3, -(2**9)),
    "311": SignalFormat(10, 4 / 3, -(2**9)),
    "508": SignalFormat(8, 0, -(2**7)),
    "516": SignalFormat(16, 0, -(2**15)),
    "524": SignalFormat(24, 0, -(2**23)),
}
#: Millivolts per physical unit a header may name (WFDB writes uV; some writers use μ or µ).
MV_PER_UNIT = {"mv": 1.0, "uv": 1e-3, "μv": 1e-3, "µv": 1e-3, "v": 1e3}
#: Sampling frequencies xecg accepts, in Hz.
FS_RANGE = (1.0, 100_000.0)
_INT32 = 2**31


class HeaderFieldError(ValueError):
    """A header field that parses but holds a value out of range."""


def parse_header(path: str | os.PathLike) -> WfdbHeader:
    """Parse and validate a WFDB header file; raises :class:`RecordError` naming the field and
    its value (``bad header: ...``) or the syntax problem (``unreadable header: ...``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RecordError(path, f"unreadable header: {e.strerror or e}") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    binary = _BINARY.search(text)
    if binary is not None:
        raise RecordError(path, f"unreadable header: not a text file (byte "
                                f"{ord(binary.group()):#04x} at character {binary.start()})")
    try:
        return _parse_header_text(text)
    except HeaderFieldError as e:
        raise RecordError(path, f"bad header: {e}") from e
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
    if n_sig < 1:
        raise HeaderFieldError(f"signal count {n_sig} on the record line, expected at least 1")
    if not FS_RANGE[0] <= fs <= FS_RANGE[1]:  # also false for NaN
        raise HeaderFieldError(f"sampling frequency {fields[2]} Hz out of range "
                               f"({FS_RANGE[0]:g} to {FS_RANGE[1]:g} Hz)")
    if n_samples is not None and n_samples < 0:
        raise HeaderFieldError(f"sample count {n_samples} is negative")
    multi_segment = "/" in name
    if multi_segment:
        raise HeaderFieldError(f"record name {name} names a multi-segment record, which xecg "
                               "does not read")
    signals = [_parse_signal_line(s, i) for i, s in enumerate(lines[1:1 + n_sig])]
    if len(signals) != n_sig:
        raise ValueError(f"the record line says {n_sig} signals, {len(signals)} are listed")
    return WfdbHeader(record=name, fs=fs, n_samples=n_samples, signals=signals, comments=comments,
                      multi_segment=multi_segment)


def _parse_signal_line(line: str, index: int) -> WfdbSignal:
    f = line.split()
    fmt = _FMT.match(f[1])
    if fmt is None:
        raise ValueError(f"bad format field {f[1]!r}")
    # A gain of 0, or none, marks an uncalibrated signal in the WFDB spec (header(5)); wfdb
    # then assumes 200 units/mV, which would store a 1000/mV record at 5x its amplitude. It is
    # kept as 0 here, and the reader refuses the record (WfdbSignal.calibrated).
    gain, baseline, units = 0.0, None, "mV"
    if len(f) > 2:
        g = _GAIN.match(f[2])
        if g is None:
            raise ValueError(f"bad gain field {f[2]!r}")
        gain = float(g.group(1))
        baseline = int(g.group(2)) if g.group(2) else None
        units = g.group(3) or units
    adc_res = int(f[3]) if len(f) > 3 else 0
    adc_zero = int(f[4]) if len(f) > 4 else 0
    if len(f) > 5:
        int(f[5])  # initial value: must be an integer
    block_size = int(f[7]) if len(f) > 7 else 0
    signal = WfdbSignal(
        file=f[0], fmt=fmt.group(1), byte_offset=int(fmt.group(4) or 0),
        plain=fmt.group(2) in (None, "1") and fmt.group(3) in (None, "0"),
        gain=gain, baseline=adc_zero if baseline is None else baseline, units=units,
        checksum=int(f[6]) if len(f) > 6 else None, name=" ".join(f[8:]) if len(f) > 8 else "",
        samples_per_frame=int(fmt.group(2) or 1))
    lead = f"lead {signal.name or index + 1}"
    if signal.file in (".", "..") or "/" in signal.file or "\\" in signal.file:
        raise HeaderFieldError(f"{lead} signal file {signal.file!r} is not a file name in the "
                               "header's folder")
    spec = FORMATS.get(signal.fmt)
    if spec is None:
        raise HeaderFieldError(f"{lead} format {signal.fmt} is not a WFDB signal format "
                               f"({', '.join(FORMATS)})")
    if signal.samples_per_frame < 1:
        raise HeaderFieldError(f"{lead} samples per frame {signal.samples_per_frame}, expected "
                               "at least 1")
    if not 0 <= gain < float("inf"):
        raise HeaderFieldError(f"{lead} gain {f[2]}, expected a positive finite number")
    if not -_INT32 <= signal.baseline < _INT32 or not -_INT32 <= adc_zero < _INT32:
        raise HeaderFieldError(f"{lead} baseline {signal.baseline} (ADC zero {adc_zero}) out "
                               "of range (32-bit integers)")
    if signal.units.lower() not in MV_PER_UNIT:
        raise HeaderFieldError(f"{lead} units {signal.units!r}, expected a voltage (mV, uV, V)")
    max_res = 32 if signal.fmt == "8" else spec.bits
    if not 0 <= adc_res <= max_res:
        raise HeaderFieldError(f"{lead} ADC resolution {adc_res} bits out of range (0 to "
                               f"{max_res} for format {signal.fmt})")
    if block_size < 0:
        raise HeaderFieldError(f"{lead} block size {block_size} is negative")
    return signal
