"""Bad input gets a clear answer: a corpus of malformed inputs in the three layouts, each of which
must give one line naming the file and the problem (a RecordError or an ``orphans`` entry, never
a traceback) while the good records beside it are still read; the same corpus through
``xecg prepare`` run as a user runs it; header fields out of range."""

from __future__ import annotations

import csv
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from fixtures import (
    make_signal,
    write_icbeb_record,
    write_reference_csv,
    write_wfdb_dat_record,
    write_wfdb_record,
    xecg_command,
    xecg_env,
)

from xecg.data.readers import DatasetError, open_dataset, parse_header
from xecg.data.record import RecordError
from xecg.data.store import Store

GOOD = ["G0001", "G0002"]

#: What a case expects: (file, problem) for each line it must cause.
Expected = list[tuple[Path, str]]


@dataclass(frozen=True)
class Case:
    layout: str  # "wfdb" or "icbeb"
    build: Callable[[Path, str, list[str]], Expected]  # (src, record id, REFERENCE lines)


def _rng_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _hea(src: Path, rec: str, signal=None, dx=("AF",), **kw) -> Path:
    signal = make_signal(1000, seed=7) if signal is None else signal
    return write_wfdb_record(src / "bad", rec, signal, list(dx), **kw)


def _edit(hea: Path, old: str, new: str, first_only: bool = True) -> Path:
    """Replace ``old`` by ``new`` in the first signal line (or every one) of a header."""
    lines = hea.read_text().splitlines()
    for i in range(1, 2 if first_only else 13):
        assert old in lines[i], (old, lines[i])
        lines[i] = lines[i].replace(old, new, 1)
    hea.write_text("\n".join(lines) + "\n")
    return hea


def _record_line(hea: Path, **fields: str) -> Path:
    """Rewrite fields of the record line (``fs``, ``n``)."""
    lines = hea.read_text().splitlines()
    parts = lines[0].split()
    for key, value in fields.items():
        parts[{"fs": 2, "n": 3}[key]] = value
    lines[0] = " ".join(parts)
    hea.write_text("\n".join(lines) + "\n")
    return hea


def _mat(hea: Path) -> Path:
    return hea.with_suffix(".mat")


def _invalid_samples(src, rec, rows):
    sig = make_signal(1000, seed=7)
    sig[2, 10:14] = -32.768  # -32768 at 1000/mV: WFDB's "no sample here" in format 16
    return [(_mat(_hea(src, rec, sig)), "invalid samples: 4 samples hold the format's invalid "
                                        "value -32768")]


def _truncated(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def _duplicate_wfdb(src, rec, rows):
    a = write_wfdb_record(src / "bad1", rec, make_signal(300), ["AF"])
    b = write_wfdb_record(src / "bad2", rec, make_signal(300), ["AF"])
    return [(a, f"duplicate id: record {rec} is also at {b}"),
            (b, f"duplicate id: record {rec} is also at {a}")]


def _symlink_loop(src, rec, rows):
    (src / "loop").mkdir(parents=True, exist_ok=True)
    link = src / "loop" / f"back-{rec}"
    link.symlink_to(src, target_is_directory=True)
    return [(link, f"symlink loop: this link leads to {src}")]


def _broken_link(src, rec, rows):
    (src / "bad").mkdir(parents=True, exist_ok=True)
    link = src / "bad" / f"{rec}.hea"
    link.symlink_to(src / "nowhere" / f"{rec}.hea")
    return [(link, f"broken link: points to {src / 'nowhere' / rec}.hea, which does not exist")]


def _declared_beyond_file(src, rec, rows):
    hea = write_wfdb_dat_record(src / "bad", rec, make_signal(300, gain=200), ["AF"], fmt="16",
                                gain=200)
    _record_line(hea, n="1000000000")
    return [(hea.with_suffix(".dat"), "truncated: 7200 bytes, the header's 1000000000 samples "
                                      "x 12 signals in format 16 need 24000000000")]


def _eleven_row_matrix(src, rec, rows):
    hea = _hea(src, rec)
    scipy.io.savemat(_mat(hea), {"val": np.zeros((11, 1000), np.int16)}, format="4")
    return [(_mat(hea), "shape mismatch: the matrix has 11 rows, the header lists 12 signals")]


def _mv_matrix(src, rec, rows):
    # Samples saved in mV instead of digital units: read as they are, a thousand times too small.
    hea = _hea(src, rec)
    scipy.io.savemat(_mat(hea), {"val": np.full((12, 1000), 0.25)}, format="4")
    return [(_mat(hea), "not digital samples: 12000 values of 'val' are not whole numbers (e.g. "
                        "0.25); a WFDB .mat holds the digital samples that the header's gain "
                        "turns into mV")]


def _complex_matrix(src, rec, rows):
    hea = _hea(src, rec)
    scipy.io.savemat(_mat(hea), {"val": np.ones((12, 1000), np.complex128)}, format="4")
    return [(_mat(hea), "unreadable signal: 'val' is a 12 x 1000 complex128 array, not a real "
                        "numeric matrix")]


def _vax_matrix(src, rec, rows):
    # Type 2030: int16 in VAX D-float order, which scipy reads with only a warning.
    hea = _hea(src, rec)
    data = bytearray(_mat(hea).read_bytes())
    data[:4] = (2030).to_bytes(4, "little")
    _mat(hea).write_bytes(bytes(data))
    return [(_mat(hea), "unreadable signal: MATLAB v4 type 2030, not a numeric matrix in IEEE "
                        "little- or big-endian order")]


def _v5_mat_without_val(src, rec, rows):
    # Re-saved with scipy.io.savemat's default format (v5, read since 2026-11-28) under
    # another name.
    hea = _hea(src, rec)
    scipy.io.savemat(_mat(hea), {"ecg": np.ones((12, 1000), np.int16)})
    return [(_mat(hea), "unreadable signal: no matrix 'val' in this MATLAB v5 file (it holds "
                        "ecg)")]


def _v73_mat(src, rec, rows):
    # MATLAB's save -v7.3 writes HDF5 behind the same 128-byte text header.
    hea = _hea(src, rec)
    head = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Fri Nov 27 10:00:00 2026 HDF5"
    _mat(hea).write_bytes(head.ljust(512, b" ") + _rng_bytes(2000))
    return [(_mat(hea), "unreadable signal: a MATLAB v7.3 (HDF5) file; save it with "
                        "save(..., '-v7') or '-v4'")]


def _damaged_v5_mat(src, rec, rows):
    hea = _hea(src, rec)
    scipy.io.savemat(_mat(hea), {"val": np.ones((12, 1000), np.int16)})
    _truncated(_mat(hea), 300)
    return [(_mat(hea), "truncated: a MATLAB v5 element at byte 128 claims 24048 bytes, 164 "
                        "are left")]


def _random_mat(src, rec, rows):
    mat = _mat(_hea(src, rec))
    mat.write_bytes(_rng_bytes(5000, seed=1))
    return [(mat, "unreadable signal")]


def _missing_mat(src, rec, rows):
    hea = _hea(src, rec)
    _mat(hea).unlink()
    return [(hea, f"missing file: signal file {rec}.mat named in the header does not exist")]


def _binary_header(src, rec, rows):
    hea = _hea(src, rec)
    hea.write_bytes(_rng_bytes(300))
    return [(hea, "unreadable header: not a text file")]


WFDB_CASES: dict[str, Callable[[Path, str, list[str]], Expected]] = {
    "fs zero": lambda src, rec, rows: [(_hea(src, rec, fs=0), "bad header: sampling frequency "
                                        "0 Hz out of range (1 to 100000 Hz)")],
    "fs nan": lambda src, rec, rows: [(_hea(src, rec, fs=float("nan")), "bad header: sampling "
                                       "frequency nan Hz out of range")],
    "negative sample count": lambda src, rec, rows: [
        (_hea(src, rec, n_samples=-5), "bad header: sample count -5 is negative")],
    "truncated mat": lambda src, rec, rows: [
        (_truncated(_mat(_hea(src, rec)), 3000), "truncated: 3000 bytes, a 12 x 1000 int16 "
                                                 "matrix needs 24024")],
    "empty mat": lambda src, rec, rows: [
        (_truncated(_mat(_hea(src, rec)), 0), "truncated: 0 bytes, shorter than a MATLAB v4 "
                                              "header")],
    "random-bytes mat": _random_mat,
    "MATLAB v5 mat without val": _v5_mat_without_val,
    "MATLAB v7.3 mat": _v73_mat,
    "damaged MATLAB v5 mat": _damaged_v5_mat,
    "matrix in mV": _mv_matrix,
    "complex matrix": _complex_matrix,
    "VAX matrix": _vax_matrix,
    "more samples in header": lambda src, rec, rows: [
        (_mat(_hea(src, rec, n_samples=1200)), "shape mismatch: the matrix has 1000 samples, "
                                               "the header says 1200")],
    "fewer leads in matrix": _eleven_row_matrix,
    "gain disagrees with data": lambda src, rec, rows: [
        (_edit(_hea(src, rec), "1000/mV", "1/mV", first_only=False),
         "implausible amplitude: peak")],
    "duplicate lead name": lambda src, rec, rows: [
        (_hea(src, rec, leads=(*[f"{n}" for n in ("I", "II", "III", "aVR", "aVL", "aVF", "V1",
                                                   "V2", "V3", "V4", "V5")], "V5")),
         "wrong leads: 12 signals (I, II, III, aVR, aVL, aVF, V1, V2, V3, V4, V5, V5), expected "
         "the 12 standard leads; missing V6; V5 twice")],
    "unknown lead name": lambda src, rec, rows: [
        (_edit(_hea(src, rec), " I", " V7"), "wrong leads: 12 signals (V7, II")],
    "declared length beyond file": _declared_beyond_file,
    "invalid samples": _invalid_samples,
    "every lead flat": lambda src, rec, rows: [  # stored as a labelled record before
        (_hea(src, rec, signal=np.repeat(np.linspace(-1, 1, 12, dtype=np.float32)[:, None],
                                         1000, axis=1)),
         "flat: every lead holds a constant value; no ECG was recorded")],
    "unknown label code": lambda src, rec, rows: [
        (_hea(src, rec, dx=["999999"]), "no class: none of the nine classes (codes: 999999)")],
    "empty label codes": lambda src, rec, rows: [
        (_hea(src, rec, dx=[]), "no class: none of the nine classes (codes: none)")],
    "binary header": _binary_header,
    "units not a voltage": lambda src, rec, rows: [
        (_edit(_hea(src, rec), "/mV", "/mmHg"), "bad header: lead I units 'mmHg', expected a "
                                                "voltage")],
    "unknown format code": lambda src, rec, rows: [
        (_edit(_hea(src, rec), "16+24", "99+24"), "bad header: lead I format 99 is not a WFDB "
                                                  "signal format")],
    # Read as wfdb's default 200 units/mV until 2026-11-28: a 1000/mV record stored at 5x.
    "gain zero (uncalibrated)": lambda src, rec, rows: [
        (_edit(_hea(src, rec), "1000/mV", "0/mV", first_only=False),
         "uncalibrated signal: gain 0 (or none) in the header, lead I and 11 more; WFDB marks "
         "such a signal uncalibrated, so its amplitude in mV is unknown")],
    "one lead uncalibrated": lambda src, rec, rows: [
        (_edit(_hea(src, rec), "1000/mV", "0(0)/mV"),  # the first signal line only
         "uncalibrated signal: gain 0 (or none) in the header, lead I; WFDB")],
    "negative gain": lambda src, rec, rows: [
        (_edit(_hea(src, rec), "1000/mV", "-1000/mV"), "bad header: lead I gain -1000/mV, "
                                                       "expected a positive finite number")],
    "ADC resolution": lambda src, rec, rows: [
        (_edit(_hea(src, rec), "/mV 16 ", "/mV 40 "), "bad header: lead I ADC resolution 40 "
                                                      "bits out of range (0 to 16")],
    "baseline": lambda src, rec, rows: [
        (_edit(_hea(src, rec), "1000/mV", "1000(99999999999)/mV"), "bad header: lead I "
                                                                   "baseline 99999999999")],
    "byte offset": lambda src, rec, rows: [
        (_mat(_edit(_hea(src, rec), "16+24", "16+99", first_only=False)),
         "shape mismatch: the header puts samples at byte 99, the MATLAB header at 24")],
    "checksum": lambda src, rec, rows: [
        (_hea(src, rec, checksums=[0] * 12), "checksum mismatch: 12 lead(s) corrupt")],
    "missing signal file": _missing_mat,
    "duplicate id across folders": _duplicate_wfdb,
    "symlink loop": _symlink_loop,
    "broken link": _broken_link,
}


# ----------------------------------------------------------------------------------- ICBEB


def _icbeb(src: Path, rec: str, rows: list[str], data=None, code: str = "1") -> Path:
    data = make_signal(500, seed=8) if data is None else data
    path = write_icbeb_record(src / "bad", rec, data)
    rows.append(f"{rec},{code},,")
    return path


def _icbeb_bytes(src, rec, rows, payload: bytes, problem: str):
    path = _icbeb(src, rec, rows)
    path.write_bytes(payload)
    return [(path, problem)]


def _icbeb_savemat(src, rec, rows, variables: dict, problem: str):
    path = _icbeb(src, rec, rows)
    scipy.io.savemat(path, variables)
    return [(path, problem)]


def _icbeb_bad_element_type(src, rec, rows):
    # ECG.sex's text with its type code damaged (16, miUTF8, became 25616): scipy 1.17 indexed
    # past its table of types and crashed the process (a segmentation fault).
    path = _icbeb(src, rec, rows)
    data = path.read_bytes()
    tag = struct.pack("<I", 4 << 16 | 16)  # a small element: 4 bytes of miUTF8 ("Male")
    at = data.index(tag)
    path.write_bytes(data[:at] + struct.pack("<I", 4 << 16 | 25616) + data[at + 4:])
    return [(path, f"unreadable signal: a MATLAB v5 element of unknown type 25616 at byte {at}")]


def _icbeb_bad_zlib(src, rec, rows):
    # Saved compressed (v7, MATLAB's default) and then damaged where the zlib stream starts.
    path = _icbeb(src, rec, rows)
    scipy.io.savemat(path, {"ECG": {"data": make_signal(500), "age": 50.0, "sex": "Male"}},
                     do_compression=True)
    data = bytearray(path.read_bytes())
    data[136:138] = b"\xff\xff"
    path.write_bytes(bytes(data))
    return [(path, "unreadable signal: the compressed MATLAB v5 variable at byte 128 is damaged "
                   "(zlib: Error -3 while decompressing data: incorrect header check)")]


def _icbeb_nonfinite(src, rec, rows):
    data = make_signal(500, seed=8).astype(np.float64)
    data[1, 5], data[7, 9] = np.nan, -np.inf
    return [(_icbeb(src, rec, rows, data), "non-finite: 2 NaN/inf samples in ECG.data")]


def _icbeb_bad_rows(src, rec, rows):
    path = write_icbeb_record(src / "bad", rec, make_signal(500, seed=8))
    rows.append(f"{rec};1")
    ref = src / "REFERENCE.csv"
    return [(ref, f"bad reference row: line {len(rows) + 1} '{rec};1': record id '{rec};1' is "
                  "not a file name"),
            (path, f"not in REFERENCE.csv: no labels for {rec}")]


def _icbeb_row_without_codes(src, rec, rows):
    path = write_icbeb_record(src / "bad", rec, make_signal(500, seed=8))
    rows.append(f"{rec},,,")
    return [(src / "REFERENCE.csv", f"no label codes for {rec}"),
            (path, f"not in REFERENCE.csv: no labels for {rec}")]


def _icbeb_conflict(src, rec, rows):
    path = _icbeb(src, rec, rows, code="1")
    rows.append(f"{rec},2,,")
    return [(path, f"conflicting labels: {rec} is listed twice with different labels")]


def _wfdb_mat_in_icbeb(src, rec, rows):
    # A WFDB record's .mat (MATLAB v4) among ICBEB files, its .hea missing: it failed as "a
    # MATLAB v4 file, where a v5 one belongs", which sends the user the wrong way.
    hea = write_wfdb_record(src / "bad", rec, make_signal(500, seed=8), ["AF"])
    hea.unlink()
    rows.append(f"{rec},1,,")
    return [(_mat(hea), f"no header: {rec}.hea is missing; a WFDB record's .mat (MATLAB v4, as "
                        "this one is) needs its .hea beside it (the original ICBEB .mat files "
                        "are MATLAB v5)")]


def _icbeb_duplicate(src, rec, rows):
    a = write_icbeb_record(src / "bad1", rec, make_signal(300))
    b = write_icbeb_record(src / "bad2", rec, make_signal(300))
    rows.append(f"{rec},1,,")
    return [(a, f"duplicate id: record {rec} is also at {b}"),
            (b, f"duplicate id: record {rec} is also at {a}")]


ICBEB_CASES: dict[str, Callable[[Path, str, list[str]], Expected]] = {
    "truncated": lambda src, rec, rows: [
        (_truncated(_icbeb(src, rec, rows, make_signal(2000)), 300),
         "truncated: a MATLAB v5 element at byte 128 claims 192248 bytes, 164 are left")],
    "empty file": lambda src, rec, rows: _icbeb_bytes(
        src, rec, rows, b"", "truncated: 0 bytes, shorter than a MATLAB v5 header"),
    "random bytes": lambda src, rec, rows: _icbeb_bytes(
        src, rec, rows, _rng_bytes(4000, 2), "unreadable signal: a MATLAB v5 header without its "
                                             "byte-order mark ('IM' or 'MI' at byte 126)"),
    "wrong variable name": lambda src, rec, rows: _icbeb_savemat(
        src, rec, rows, {"val": np.zeros((12, 500))},
        "unreadable signal: no ECG struct with a data field (variables: val (12 x 500 double))"),
    "transposed data": lambda src, rec, rows: _icbeb_savemat(
        src, rec, rows, {"ECG": {"data": np.zeros((500, 12)), "age": 50.0, "sex": "Male"}},
        "wrong leads: ECG.data has shape (500, 12), expected 12 x N"),
    "complex data": lambda src, rec, rows: _icbeb_savemat(
        src, rec, rows, {"ECG": {"data": np.ones((12, 50)) * 1j, "age": 50.0, "sex": "Male"}},
        "unreadable signal: ECG.data holds complex128 values, expected real numbers"),
    "text data": lambda src, rec, rows: _icbeb_savemat(
        src, rec, rows, {"ECG": {"data": "twelve leads", "age": 50.0, "sex": "Male"}},
        "unreadable signal: ECG.data holds <U12 values"),
    "non-finite": _icbeb_nonfinite,
    "element of unknown type": _icbeb_bad_element_type,
    "damaged compressed variable": _icbeb_bad_zlib,
    "microvolts, not mV": lambda src, rec, rows: [
        (_icbeb(src, rec, rows, make_signal(500) * 1000), "implausible amplitude: peak")],
    "malformed reference row": _icbeb_bad_rows,
    "reference row without codes": _icbeb_row_without_codes,
    "conflicting reference rows": _icbeb_conflict,
    "unknown reference code": lambda src, rec, rows: [
        (_icbeb(src, rec, rows, code="10"), "no class: none of the nine classes (codes: 10)")],
    "duplicate id across folders": _icbeb_duplicate,
    "WFDB .mat without its header": _wfdb_mat_in_icbeb,
}

CASES = {**{f"wfdb: {k}": Case("wfdb", v) for k, v in WFDB_CASES.items()},
         **{f"icbeb: {k}": Case("icbeb", v) for k, v in ICBEB_CASES.items()}}


def _good(src: Path, layout: str) -> list[str]:
    """Write the good records beside the bad ones; returns REFERENCE.csv lines (ICBEB)."""
    for i, rec in enumerate(GOOD):
        if layout == "wfdb":
            write_wfdb_record(src / "good", rec, make_signal(800, seed=i), ["Normal"])
        else:
            write_icbeb_record(src / "good", rec, make_signal(800, seed=i))
    return [f"{rec},1,," for rec in GOOD] if layout == "icbeb" else []


def _write_reference(src: Path, rows: list[str]) -> None:
    (src / "REFERENCE.csv").write_text(
        "\n".join(["Recording,First_label,Second_label,Third_label", *rows]) + "\n")


def _build(src: Path, layout: str, cases: dict[str, Case]) -> Expected:
    """Good records plus every case (record ids B0001, B0002, ... in order)."""
    rows = _good(src, layout)
    expected: Expected = []
    for i, case in enumerate(cases.values(), start=1):
        expected += case.build(src, f"B{i:04d}", rows)
    if layout == "icbeb":
        _write_reference(src, rows)
    return expected


def _outcome(src: Path) -> tuple[list[str], list[str]]:
    """Records read, and every one-line message (orphans, then RecordErrors)."""
    reader = open_dataset(src)
    loaded, messages = [], [f"{path}: {reason}" for path, reason in reader.orphans]
    for rec in reader.records:
        try:
            reader.load_record(rec)
        except RecordError as e:
            messages.append(str(e))
        else:
            loaded.append(rec)
    return loaded, messages


def _match(messages: list[str], expected: Expected) -> None:
    """Each expected (file, problem) is exactly one message; there are no others."""
    for file, problem in expected:
        hits = [m for m in messages if m.startswith(f"{file}: ") and problem in m]
        assert len(hits) == 1, (file, problem, messages)
    assert len(messages) == len(expected), messages
    assert all("\n" not in m for m in messages)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_good_records_are_read(tmp_path, name):
    src = tmp_path / "src"
    expected = _build(src, CASES[name].layout, {name: CASES[name]})
    loaded, messages = _outcome(src)
    assert loaded == GOOD
    _match(messages, expected)


def _prepare(src: Path, out: Path) -> subprocess.CompletedProcess:
    """``xecg prepare SRC --out OUT`` as a user runs it."""
    return subprocess.run([*xecg_command(), "prepare", str(src), "--out",
                           str(out), "--workers", "1"], capture_output=True, text=True,
                          env=xecg_env(),
                          timeout=120)


@pytest.mark.parametrize("layout", ["wfdb", "icbeb"])
def test_prepare_cli_on_the_whole_corpus(tmp_path, layout):
    # Every case of the layout in one folder, beside the good records.
    src, out = tmp_path / "src", tmp_path / "store"
    expected = _build(src, layout, {k: c for k, c in CASES.items() if c.layout == layout})
    run = _prepare(src, out)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    skipped = [line for line in run.stdout.splitlines() if line.startswith("skipped ")]
    _match([line.removeprefix("skipped ") for line in skipped], expected)
    # Records are counted once however many of their files are named (a duplicated id's two
    # copies); a REFERENCE.csv row or a symlink loop is an input that is no record.
    records = {f.stem for f, _ in expected if f.suffix.lower() in (".hea", ".mat", ".dat")}
    assert f"excluded {len(records)} records: " in run.stdout
    assert f"(listed in {out / 'skipped.csv'}: {len(expected)} lines, " in run.stdout
    store = Store(out)
    assert store.ids == GOOD
    with open(out / "skipped.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(expected)


def test_prepare_cli_fs_zero(tmp_path):
    # The first report: fs = 0 reached scipy's resample_poly ("up and down must be >= 1").
    src, out = tmp_path / "src", tmp_path / "store"
    _good(src, "wfdb")
    hea = write_wfdb_record(src, "A0000", make_signal(500), ["AF"], fs=0)  # listed first
    run = _prepare(src, out)
    assert run.returncode == 0, run.stderr
    assert f"skipped {hea}: bad header: sampling frequency 0 Hz out of range" in run.stdout
    assert "Traceback" not in run.stderr
    assert Store(out).ids == GOOD and Store(out).fs == 500


def test_prepare_cli_empty_folder(tmp_path):
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "loop").symlink_to(tmp_path / "src", target_is_directory=True)
    run = _prepare(tmp_path / "src", tmp_path / "store")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        f"xecg: error: {tmp_path / 'src'}: no ECG records found (no .hea or .mat files in it "
        "or its subfolders)")
    assert "Traceback" not in run.stderr and not (tmp_path / "store").exists()


@pytest.mark.parametrize("reference", [False, True])
def test_a_folder_of_wfdb_mat_files_without_headers(tmp_path, reference):
    # Taken for the original ICBEB layout: a REFERENCE.csv was asked for, and with one every
    # file failed as "a MATLAB v4 file, where a v5 one belongs".
    src = tmp_path / "src"
    for i in (1, 2):
        write_wfdb_record(src / "WFDB", f"A000{i}", make_signal(300, seed=i), ["AF"])
        (src / "WFDB" / f"A000{i}.hea").unlink()
    if reference:
        write_reference_csv(src / "REFERENCE.csv", [("A0001", [1]), ("A0002", [2])])
    problem = (f"{src}: no header: 2 .mat files without a .hea, each a WFDB record's signal "
               f"file (MATLAB v4, e.g. {src / 'WFDB' / 'A0001.mat'}), not the original ICBEB "
               "layout (MATLAB v5): a WFDB record's .mat needs its .hea beside it (A0001.hea)")
    for require_reference in (True, False):  # prepare and train; predict and evaluate
        with pytest.raises(DatasetError) as err:
            open_dataset(src, require_reference=require_reference)
        assert str(err.value) == problem
    run = _prepare(src, tmp_path / "store")
    assert run.returncode == 2 and run.stderr.strip().splitlines()[-1] == f"xecg: error: {problem}"


def test_an_icbeb_folder_without_reference_says_where_it_looked(tmp_path):
    # xecg evaluate on TrainingSet1, REFERENCE.csv one level up, said only "no record with a
    # label among the nine classes"; the reader now says what is missing, for that message.
    src = tmp_path / "icbeb"
    write_icbeb_record(src / "TrainingSet1", "A0001", make_signal(300))
    reader = open_dataset(src / "TrainingSet1", require_reference=False)
    assert reader.missing_reference == (
        f"no REFERENCE.csv was found in {src / 'TrainingSet1'} or its subfolders, and the ICBEB "
        ".mat files hold no labels")
    write_reference_csv(src / "REFERENCE.csv", [("A0001", [1])])
    reader = open_dataset(src / "TrainingSet1", require_reference=False)
    assert reader.missing_reference.endswith(
        f"hold no labels; there is one in {src.resolve()}: give that folder (the whole release) "
        "instead")
    assert open_dataset(src).missing_reference is None


def test_duplicated_codes_count_once(tmp_path):
    # A repeated code is not an error (CPSC's A0953 is 6,6): the record reads with one label.
    write_wfdb_record(tmp_path, "A0001", make_signal(300), ["AF", "AF", "164889003"])
    assert open_dataset(tmp_path).load_record("A0001").label_names == ["AF"]


def test_empty_folder_with_only_a_loop(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(DatasetError, match="no ECG records found"):
        open_dataset(tmp_path)


# ----------------------------------------------------------------------------- header fields


HEADER_FIELDS = {
    # name: (record-line edits, signal-line (old, new), expected problem)
    "fs negative": ({"fs": "-500"}, None, "sampling frequency -500 Hz out of range"),
    "fs huge": ({"fs": "1e9"}, None, "sampling frequency 1e9 Hz out of range"),
    "fs inf": ({"fs": "inf"}, None, "sampling frequency inf Hz out of range"),
    "gain infinite": ({}, ("1000/mV", "1e999/mV"), "lead I gain 1e999/mV, expected a positive"),
    "samples per frame": ({}, ("16+24", "16x0+24"), "lead I samples per frame 0"),
    "signal file outside": ({}, ("A0001.mat", "../A0001.mat"),
                            "lead I signal file '../A0001.mat' is not a file name"),
    "ADC zero": ({}, ("/mV 16 0", "/mV 16 99999999999"), "ADC zero 99999999999"),
    "units volts-ish": ({}, ("/mV", "/mmV"), "lead I units 'mmV', expected a voltage"),
}


@pytest.mark.parametrize("name", sorted(HEADER_FIELDS))
def test_header_field_out_of_range(tmp_path, name):
    record_line, signal_line, problem = HEADER_FIELDS[name]
    hea = write_wfdb_record(tmp_path, "A0001", make_signal(100), ["AF"])
    _record_line(hea, **record_line)
    if signal_line:
        _edit(hea, *signal_line)
    with pytest.raises(RecordError) as err:
        parse_header(hea)
    assert err.value.path == str(hea)
    assert err.value.problem.startswith("bad header: ") and problem in err.value.problem
    # The same answer from every entry point of the reader.
    reader = open_dataset(tmp_path)
    for call in (reader.load_record, reader.sampling_rate, reader.load_ann):
        with pytest.raises(RecordError, match="bad header"):
            call("A0001")


def test_header_structure(tmp_path):
    hea = tmp_path / "A0001.hea"
    for text, problem in [
        ("A0001 0 500 100\n", "bad header: signal count 0 on the record line"),
        ("A0001/2 12 500 100\n", "bad header: record name A0001/2 names a multi-segment"),
        ("A0001 12 500 100\n", "unreadable header: the record line says 12 signals, 0 are "
                               "listed"),
        ("", "unreadable header: no record line"),
    ]:
        hea.write_text(text)
        with pytest.raises(RecordError) as err:
            parse_header(hea)
        assert err.value.problem.startswith(problem), err.value.problem


def test_record_error_is_one_line():
    err = RecordError("/x/A0001.mat", "unreadable signal: a library said\n  two things\n")
    assert str(err) == "/x/A0001.mat: unreadable signal: a library said two things"


def test_a_folder_linked_twice_is_scanned_once(tmp_path):
    outside = tmp_path / "outside"
    write_wfdb_record(outside, "A0001", make_signal(300), ["AF"])
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").symlink_to(outside, target_is_directory=True)
    (src / "b").symlink_to(outside, target_is_directory=True)
    reader = open_dataset(src)
    assert reader.records == ["A0001"]
    assert reader.orphans == [(str(src / "b"), f"already scanned: this link leads to "
                                               f"{src / 'a'}, which is scanned once")]
