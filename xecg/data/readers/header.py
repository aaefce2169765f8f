"""WFDB headers (``.hea``): the record line, one line per signal, ``#Key: value`` comments."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from xecg.data.record import RecordError


@dataclass
class WfdbSignal:
    """One signal line: file, format, gain (ADC units per physical unit), baseline, units, name."""

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


def _parse_signal_line(line: str) -> WfdbSignal:
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
    return WfdbSignal(
        file=f[0], fmt=fmt.group(1), byte_offset=int(fmt.group(4) or 0),
        plain=fmt.group(2) in (None, "1") and fmt.group(3) in (None, "0"),
        gain=gain, baseline=adc_zero if baseline is None else baseline, units=units,
        checksum=int(f[6]) if len(f) > 6 else None, name=" ".join(f[8:]) if len(f) > 8 else "")
