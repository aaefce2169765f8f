"""Writers of small fixture records in the three CPSC layouts, with the real file formats.

- :func:`write_icbeb_record`: original ICBEB ``.mat`` (MATLAB v5 struct ``ECG``), scipy.io.savemat.
- :func:`write_wfdb_record`: Challenge 2020 ``.hea`` + ``.mat`` (MATLAB v4 ``val`` int16), with
  correct WFDB checksums unless told otherwise.
- :func:`write_wfdb_dat_record`: a generic WFDB record (``.dat``, e.g. fmt 212) via wfdb.wrsamp.
- :func:`write_reference_csv`: a CPSC ``REFERENCE.csv``.
- :func:`xecg_command` and :func:`xecg_env`: the ``xecg`` command of this checkout and its
  environment, for subprocesses.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import scipy.io

import xecg
from xecg.classes import LEADS, NUM_LEADS

ROOT = Path(__file__).resolve().parents[1]


def xecg_command() -> list[str]:
    """The ``xecg`` command running this checkout, as a user types it: the venv's script when
    it imports this code (its editable install is this checkout), else ``python -m xecg.cli``
    (with this checkout on PYTHONPATH)."""
    script = Path(sys.executable).with_name("xecg")
    if script.is_file() and Path(xecg.__file__).resolve().is_relative_to(ROOT):
        return [str(script)]
    return [sys.executable, "-m", "xecg.cli"]


def xecg_env(**extra: str) -> dict[str, str]:
    """The environment of an ``xecg`` subprocess: this checkout first, one thread, W&B offline
    and not attached to this process's W&B service (WANDB_SERVICE, set by a W&B run in this
    process: a killed child's run would stay "in use" there and its resume would fail)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
            "WANDB_SILENT": "true", **extra}


def make_signal(n_samples: int = 1000, seed: int = 0, gain: float = 1000.0) -> np.ndarray:
    """A 12 x N float32 test signal in mV on the int16 grid of ``gain``, so it round-trips exactly.

    Each lead is a sine of its own frequency plus noise, so a lead swap shows up in comparisons.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / 500.0
    freqs = 0.5 + np.arange(NUM_LEADS)[:, None] * 0.37
    mv = np.sin(2 * np.pi * freqs * t) + 0.1 * rng.standard_normal((NUM_LEADS, n_samples))
    return (np.round(mv * gain) / gain).astype(np.float32)


def wfdb_checksum(digital: np.ndarray) -> np.ndarray:
    """WFDB checksums of a ``C x N`` digital signal: 16-bit two's-complement sums per signal."""
    total = digital.astype(np.int64).sum(axis=1)
    return (total + 32768) % 65536 - 32768


def write_wfdb_record(folder: str | Path, rec_id: str, signal_mv: np.ndarray,
                      dx_tokens: Sequence[str], fs: float = 500, age: float | str = 50,
                      sex: str = "Male", leads: Sequence[str] = LEADS, gain: float = 1000.0,
                      n_samples: int | None = None, checksums: Sequence[int] | None = None
                      ) -> Path:
    """Write ``rec_id.hea`` + ``rec_id.mat`` (Challenge 2020 layout); returns the header path.

    ``signal_mv`` is ``C x N`` with rows named by ``leads``. ``n_samples`` and ``checksums``
    override what the header claims (to write inconsistent records on purpose).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digital = np.round(np.asarray(signal_mv, dtype=np.float64) * gain).astype(np.int16)
    scipy.io.savemat(folder / f"{rec_id}.mat", {"val": digital}, format="4")
    sums = wfdb_checksum(digital) if checksums is None else checksums
    n = digital.shape[1] if n_samples is None else n_samples
    lines = [f"{rec_id} {len(leads)} {fs:g} {n} 05-Feb-2020 11:39:16"]
    for i, lead in enumerate(leads):
        first = int(digital[i, 0]) if digital.shape[1] else 0
        lines.append(f"{rec_id}.mat 16+24 {gain:g}/mV 16 0 {first} {int(sums[i])} 0 {lead}")
    lines += [f"#Age: {age}", f"#Sex: {sex}", f"#Dx: {','.join(dx_tokens)}",
              "#Rx: Unknown", "#Hx: Unknown", "#Sx: Unknown"]
    header = folder / f"{rec_id}.hea"
    header.write_text("\n".join(lines) + "\n")
    return header


def write_wfdb_dat_record(folder: str | Path, rec_id: str, signal_mv: np.ndarray,
                          dx_tokens: Sequence[str], fs: float = 500, fmt: str = "212",
                          gain: float = 200.0) -> Path:
    """Write a generic WFDB record (``.hea`` + ``.dat`` in ``fmt``) with wfdb.wrsamp."""
    import wfdb

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    signal = np.asarray(signal_mv, dtype=np.float64)
    digital = np.round(signal * gain).astype(np.int32)
    wfdb.wrsamp(rec_id, fs=fs, units=["mV"] * NUM_LEADS, sig_name=list(LEADS),
                d_signal=digital.T.copy(), fmt=[fmt] * NUM_LEADS, adc_gain=[gain] * NUM_LEADS,
                baseline=[0] * NUM_LEADS, comments=["Age: 60", "Sex: Female",
                                                    f"Dx: {','.join(dx_tokens)}"],
                write_dir=str(folder))
    return folder / f"{rec_id}.hea"


def write_icbeb_record(folder: str | Path, rec_id: str, signal_mv: np.ndarray,
                       age: float = 50, sex: str = "Male") -> Path:
    """Write ``rec_id.mat`` as in the original ICBEB release (struct ``ECG``: sex, age, data)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{rec_id}.mat"
    ecg = {"sex": sex, "age": float(age), "data": np.asarray(signal_mv, dtype=np.float64)}
    scipy.io.savemat(path, {"ECG": ecg})
    return path


def write_reference_csv(path: str | Path, rows: Iterable[tuple[str, Sequence[int | str]]]
                        ) -> Path:
    """Write a CPSC ``REFERENCE.csv`` from ``(record, [codes...])`` rows (up to 3 codes each)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Recording", "First_label", "Second_label", "Third_label"])
        for rec, codes in rows:
            codes = [str(c) for c in codes]
            w.writerow([rec, *codes, *[""] * (3 - len(codes))])
    return path


def give_records_the_id(monkeypatch, record_id: str) -> None:
    """Every record read from a store by the checkpoint commands (predict, explain, evaluate)
    gets the id ``record_id``: a hostile reader, as no xecg reader or store gives an id that
    names a path (ids are file names, and stores refuse such ids)."""
    from xecg.records import StoreReader

    load = StoreReader.load_record

    def hostile(self, rec_id, require_labels=False):
        record = load(self, rec_id, require_labels)
        record.id = record_id
        return record

    monkeypatch.setattr(StoreReader, "load_record", hostile)
