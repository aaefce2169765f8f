"""The prepared store: every record's samples in one memory-mapped array plus a plain CSV index.

Layout of ``STORE/``::

    meta.json      format version, sampling rate, sample count, source fingerprint, summary
    signals.f32    float32 samples, one contiguous ``12 x N`` block per record (lead-major), so
                   a training window is 12 sequential runs and needs no transpose
    records.csv    record,labels,length,fs,age,sex,source,offset (labels: names joined by ';')
    moments.npy    float64 (records, 2, 12): per-lead sum and sum of squares of each record, so
                   normalisation statistics of any split cost O(records), not a pass over the data
    evidence.csv   record,label,start,end: where a label shows (synthetic data; empty otherwise)
    skipped.csv    file,reason: inputs that were not stored

A store is written into a temporary sibling folder and renamed into place only when complete, so an
interrupted write never leaves a folder that looks like a store.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from xecg.atomic import replace_dir, write_atomic, write_csv  # noqa: F401 (re-exported)
from xecg.classes import CLASSES, LEADS, NUM_CLASSES, NUM_LEADS, multi_hot
from xecg.data.record import Record
from xecg.errors import XECGError

FORMAT = "xecg-store"
VERSION = 2
INDEX_FIELDS = ("record", "labels", "length", "fs", "age", "sex", "source", "offset")


class StoreError(XECGError):
    """A folder that is not a usable store (missing, incomplete, other version)."""


def is_store(path: str | os.PathLike) -> bool:
    """True if ``path`` holds a complete store (its meta.json names the format)."""
    meta = Path(path) / "meta.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def is_current(path: str | os.PathLike, fingerprint: str) -> bool:
    """True if ``path`` is a complete store of this version made from ``fingerprint``'s input:
    the test for reusing a store instead of preparing it again."""
    if not is_store(path):
        return False
    meta = json.loads((Path(path) / "meta.json").read_text())
    return meta.get("version") == VERSION and meta.get("fingerprint") == fingerprint


class StoreWriter:
    """Writes a store atomically. Use as a context manager; ``add`` records, ``skip`` failures.

    Nothing appears at ``out`` until the ``with`` block exits without an exception.
    """

    def __init__(self, out: str | os.PathLike, fs: float, source: str = "", fingerprint: str = "",
                 extra_meta: dict | None = None):
        self.out = Path(out)
        self.fs = float(fs)
        self.source = str(source)
        self.fingerprint = fingerprint
        self.extra_meta = dict(extra_meta or {})
        self._tmp: Path | None = None
        self._signals = None
        self._rows: list[dict] = []
        self._moments: list[np.ndarray] = []
        self._evidence: list[tuple[str, str, int, int]] = []
        self._skipped: list[tuple[str, str]] = []
        self.ignored_codes: Counter[str] = Counter()
        self._offset = 0

    def __enter__(self) -> StoreWriter:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
        self._signals = open(self._tmp / "signals.f32", "wb")
        return self

    def add(self, record: Record) -> None:
        """Append one record (signal ``12 x N`` float32 mV, already at the store's rate)."""
        sig = np.asarray(record.signal, dtype=np.float32)
        if sig.ndim != 2 or sig.shape[0] != NUM_LEADS:
            raise ValueError(
                f"{record.source or record.id}: signal must be 12 x N, got {sig.shape}")
        block = np.ascontiguousarray(sig)  # 12 x N, lead-major on disk
        self._signals.write(block.tobytes())
        s64 = block.astype(np.float64)
        # einsum: 2-3x faster than sum/square here, and these sums dominate prepare's time.
        self._moments.append(np.stack([np.einsum("ij->i", s64), np.einsum("ij,ij->i", s64, s64)]))
        self._rows.append({
            "record": record.id,
            "labels": ";".join(record.label_names),
            "length": block.shape[1],
            "fs": f"{record.fs:g}",
            "age": "" if record.age is None or np.isnan(record.age) else f"{record.age:g}",
            "sex": record.sex or "",
            "source": record.source,
            "offset": self._offset,
        })
        self._evidence.extend((record.id, lab, int(a), int(b)) for lab, a, b in record.evidence)
        self.ignored_codes.update(record.ignored_codes)
        self._offset += block.shape[1]

    def skip(self, path: str, reason: str) -> None:
        """List an input that was not stored, with the reason (goes to skipped.csv)."""
        self._skipped.append((str(path), reason))

    @property
    def num_records(self) -> int:
        return len(self._rows)

    def summary(self) -> dict:
        labels = np.array([multi_hot(r["labels"].split(";") if r["labels"] else [])
                           for r in self._rows]).reshape(-1, NUM_CLASSES)
        lengths = np.array([r["length"] for r in self._rows])
        return {
            "records": len(self._rows),
            "skipped": len(self._skipped),
            "skipped_reasons": dict(Counter(_reason_kind(r) for _, r in self._skipped)),
            "class_counts": {c: int(n) for c, n in zip(CLASSES, labels.sum(0))},
            "multilabel": int((labels.sum(1) >= 2).sum()),
            "ignored_codes": dict(self.ignored_codes.most_common()),
            "median_length_s": float(np.median(lengths) / self.fs) if len(lengths) else 0.0,
            "total_samples": int(self._offset),
        }

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._tmp is not None
        self._signals.close()
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        try:
            self._write_tables()
            os.chmod(self._tmp, 0o755)  # mkdtemp makes it private; a store is shared data
            replace_dir(self._tmp, self.out)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    def _write_tables(self) -> None:
        tmp = self._tmp
        with open(tmp / "records.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=INDEX_FIELDS)
            w.writeheader()
            w.writerows(self._rows)
        moments = np.stack(self._moments) if self._moments else np.zeros((0, 2, NUM_LEADS))
        np.save(tmp / "moments.npy", moments)
        write_csv(tmp / "evidence.csv", ("record", "label", "start", "end"), self._evidence)
        write_csv(tmp / "skipped.csv", ("file", "reason"), self._skipped)
        meta = {
            "format": FORMAT, "version": VERSION, "fs": self.fs, "leads": list(LEADS),
            "classes": list(CLASSES), "num_records": len(self._rows),
            "num_samples": int(self._offset), "dtype": "float32",
            "signal_layout": "12 x N block per record",
            "units": "mV", "source": self.source, "fingerprint": self.fingerprint,
            "summary": self.summary(), **self.extra_meta,
        }
        # meta.json last: its presence is what marks the folder complete.
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0].strip()


class Store:
    """Read access to a prepared store.

    Attributes: ``ids`` (list of record ids), ``labels`` (R x 9 float32), ``lengths``, ``offsets``
    (R,) int64 in samples, ``fs``, ``signals`` (memory-mapped flat float32; record i is the
    ``12 x lengths[i]`` block starting at element ``12 * offsets[i]``).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not is_store(self.path):
            raise StoreError(f"{self.path}: not a complete xecg store (no valid meta.json); "
                             "create one with `xecg prepare`")
        self.meta = json.loads((self.path / "meta.json").read_text())
        if self.meta.get("version") != VERSION:
            raise StoreError(f"{self.path}: store version {self.meta.get('version')}, "
                             f"this xecg reads version {VERSION}; run `xecg prepare` again")
        self.fs = float(self.meta["fs"])
        with open(self.path / "records.csv", newline="") as f:
            self.rows = list(csv.DictReader(f))
        self.ids = [r["record"] for r in self.rows]
        self._index = {rid: i for i, rid in enumerate(self.ids)}
        self.labels = np.array([multi_hot(r["labels"].split(";") if r["labels"] else [])
                                for r in self.rows], dtype=np.float32).reshape(-1, NUM_CLASSES)
        self.lengths = np.array([int(r["length"]) for r in self.rows], dtype=np.int64)
        self.offsets = np.array([int(r["offset"]) for r in self.rows], dtype=np.int64)
        n = int(self.meta["num_samples"])
        self.signals = (np.memmap(self.path / "signals.f32", dtype=np.float32, mode="r",
                                  shape=(n * NUM_LEADS,))
                        if n else np.zeros(0, np.float32))
        self.moments = np.load(self.path / "moments.npy")

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, record_id: str) -> int:
        try:
            return self._index[record_id]
        except KeyError:
            raise KeyError(f"record {record_id!r} is not in store {self.path}") from None

    def indices(self, record_ids: Iterable[str]) -> np.ndarray:
        """Store positions of record ids (KeyError naming the first unknown id)."""
        return np.array([self.index_of(r) for r in record_ids], dtype=np.int64)

    def signal(self, i: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """Samples ``[start, start+length)`` of record ``i`` as a ``12 x length`` view."""
        n = int(self.lengths[i])
        length = n - start if length is None else length
        o = NUM_LEADS * int(self.offsets[i])
        return self.signals[o:o + NUM_LEADS * n].reshape(NUM_LEADS, n)[:, start:start + length]

    def record(self, i: int) -> Record:
        """Record ``i`` with its signal copied out as ``12 x N`` float32."""
        r = self.rows[i]
        return Record(
            id=r["record"], signal=np.array(self.signal(i)), fs=float(r["fs"]),
            labels=self.labels[i].copy(), age=float(r["age"]) if r["age"] else None,
            sex=r["sex"] or None, source=r["source"],
            evidence=self.evidence.get(r["record"], []),
        )

    @property
    def evidence(self) -> dict[str, list[tuple[str, int, int]]]:
        """Record id -> ``(label, start, end)`` intervals (read once, lazily)."""
        if not hasattr(self, "_evidence"):
            ev: dict[str, list[tuple[str, int, int]]] = {}
            path = self.path / "evidence.csv"
            if path.is_file():
                with open(path, newline="") as f:
                    for row in csv.DictReader(f):
                        ev.setdefault(row["record"], []).append(
                            (row["label"], int(row["start"]), int(row["end"])))
            self._evidence = ev
        return self._evidence

    def lead_stats(self, indices: Sequence[int] | np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Per-lead mean and standard deviation (12,) float32 over the samples of ``indices``."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        m = self.moments[idx]
        n = float(self.lengths[idx].sum())
        if n == 0:
            raise ValueError(f"{self.path}: no samples to compute lead statistics from")
        mean = m[:, 0].sum(0) / n
        var = np.maximum(m[:, 1].sum(0) / n - mean**2, 0.0)
        std = np.sqrt(var)
        std[std < 1e-8] = 1.0  # a flat lead must not blow up to inf
        return mean.astype(np.float32), std.astype(np.float32)
