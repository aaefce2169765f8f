"""The prepared store: every record's samples in one memory-mapped array plus a plain CSV index.

Layout of ``STORE/``::

    meta.json      format version, sampling rate, sample count, source fingerprint, summary
    signals.f32    float32 samples, one contiguous ``12 x N`` block per record (lead-major), so
                   a training window is 12 sequential runs and needs no transpose
    records.csv    record,labels,length,fs,age,sex,source,offset (labels: names joined by ';')
    moments.npy    float64 (records, 2, 12): per-lead sum and sum of squares of each record, so
                   normalisation statistics of any split cost O(records), not a pass over the data
    evidence.csv   record,label,start,end: where a label shows (synthetic data; empty otherwise)
    skipped.csv    file,reason: inputs that were not stored, then records REFERENCE.csv lists
                   that have no file

A store is written into a temporary sibling folder and renamed into place only when complete, so an
interrupted write never leaves a folder that looks like a store.

Integrity: ``meta.json`` records every file's size and checksum (``integrity``: xxh3-128 when the
``xxhash`` package is there, as it is with wandb; else SHA-256). Opening a store (:class:`Store`)
checks that every file is there with its size, the small files' checksums and that records.csv
agrees with itself and with signals.f32: milliseconds, so truncated, incomplete or edited stores
stop there. The checksum of signals.f32 (0.2 s for 770 MB with xxh3 from the page cache) is
checked by :meth:`Store.verify`, and by ``xecg prepare`` (:func:`is_current`) before it calls a
store up to date. Stores of the previous release (no ``integrity``) still open, with the sizes
derived from records.csv; ``xecg prepare`` prepares them again to add checksums.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from xecg.atomic import (  # noqa: F401 (re-exported)
    process_gone,
    reclaim_replaced,
    replace_dir,
    write_atomic,
    write_csv,
)
from xecg.classes import CLASSES, LEADS, NUM_CLASSES, NUM_LEADS, multi_hot
from xecg.data.record import Record
from xecg.errors import WriteError, XECGError

FORMAT = "xecg-store"
VERSION = 2
INDEX_FIELDS = ("record", "labels", "length", "fs", "age", "sex", "source", "offset")


#: The files of a store besides meta.json; all are listed with size and checksum in meta.json.
FILES = ("signals.f32", "records.csv", "moments.npy", "evidence.csv", "skipped.csv")
#: How many records whose header labels a REFERENCE.csv row overrode the summary names.
OVERRIDDEN_NAMED = 5
#: Bytes per sample column of signals.f32 (12 float32 leads).
_COLUMN_BYTES = NUM_LEADS * 4


def _default_checksum() -> str:
    try:
        import xxhash  # noqa: F401  (installed with wandb)
    except ImportError:
        return "sha256"
    return "xxh3_128"


def _hasher(algorithm: str):
    if algorithm == "xxh3_128":
        import xxhash

        return xxhash.xxh3_128()
    return hashlib.new(algorithm)


def file_checksum(path: str | os.PathLike, algorithm: str, chunk: int = 1 << 22) -> str:
    """Hex checksum of a file's bytes, read in 4 MiB chunks."""
    h = _hasher(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_PATH_CHARS = re.compile(r"[/\\\x00-\x1f]")


def unsafe_record_id(record_id: str) -> str | None:
    """Why ``record_id`` cannot name a record (it would name a path outside a folder, or no
    file at all), or None. Ids become file names: ``predict`` writes ``ID.png``."""
    if not record_id or not record_id.strip():
        return "an empty record id"
    if record_id in (".", ".."):
        return f"record id {record_id!r} names a folder"
    if _PATH_CHARS.search(record_id):
        return f"record id {record_id!r} holds a path separator or a control character"
    return None


class StoreError(XECGError):
    """A folder that is not a usable store (missing, incomplete, damaged, other version); the
    message says how to rebuild it. ``problem`` is the message without the path and the hint."""

    def __init__(self, message: str, problem: str = ""):
        super().__init__(message)
        self.problem = problem or message


def rebuild_hint(path: str | os.PathLike, meta: dict | None = None) -> str:
    """The command that writes the store at ``path`` again, from what its meta.json says."""
    meta = meta or {}
    source = meta.get("source")
    if source == "synthetic":
        gen = meta.get("generator") or {}
        cmd = (f"xecg prepare synthetic --n {gen.get('n', 'N')} --seed {gen.get('seed', 0)} "
               f"--out {path}")
    else:
        cmd = f"xecg prepare {source or 'SOURCE'} --out {path} --force"
    return f"rebuild it with `{cmd}` (or delete the folder)"


def _damaged(path: Path, problem: str, meta: dict | None) -> StoreError:
    return StoreError(f"{path}: {problem}; {rebuild_hint(path, meta)}", problem)


def _read_meta(path: Path) -> dict | None:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def is_store(path: str | os.PathLike) -> bool:
    """True if ``path`` holds a store (its meta.json names the format). Whether it is complete
    and undamaged is checked when it is opened (:class:`Store`)."""
    meta = _read_meta(Path(path))
    return meta is not None and meta.get("format") == FORMAT


def store_damage(path: str | os.PathLike) -> str | None:
    """What is wrong with the store at ``path`` after the full check (files, sizes, every
    checksum), or None. A store without checksums (written by an earlier xecg) counts as
    damaged here: only preparing it again makes it checkable."""
    try:
        store = Store(path)
        if not store.meta.get("integrity"):
            return "written without checksums by an earlier xecg"
        store.verify()
    except StoreError as e:
        return e.problem
    return None


def is_current(path: str | os.PathLike, fingerprint: str) -> bool:
    """True if ``path`` is a complete, undamaged store of this version made from
    ``fingerprint``'s input: the test for reusing a store instead of preparing it again.
    Reads all of signals.f32 to check its checksum."""
    meta = _read_meta(Path(path))
    if meta is None or meta.get("format") != FORMAT:
        return False
    if meta.get("version") != VERSION or meta.get("fingerprint") != fingerprint:
        return False
    return store_damage(path) is None


#: In a store being written: the host and process id of its writer (:func:`reclaim_stale`).
WRITER = "writer.json"


def reclaim_stale(out: Path) -> list[Path]:
    """Clean up after writers of store ``out`` that were killed, saying what was done: finish
    an interrupted swap (:func:`xecg.atomic.reclaim_replaced`; the old store is put back only
    if it passes the full check), then remove the temporary folders (``.NAME.tmp-*``) that
    each can hold most of a store (3 GB for CPSC 2018). A folder is left behind when its
    writer ran on this host and its process is gone; folders of live writers, of other hosts
    (a shared file system) or without a :data:`WRITER` file are kept. Returns the removed
    temporary folders."""
    for line in reclaim_replaced(out, lambda old: store_damage(old) is None):
        print(line, file=sys.stderr)
    if _writer_gone(out):  # killed after the swap, before its last step
        (out / WRITER).unlink(missing_ok=True)
    removed = []
    for tmp in out.parent.glob(f".{out.name}.tmp-*"):
        writer = _writer_gone(tmp)
        if writer is None:
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"removed {tmp}: left by an interrupted writer (process {writer['pid']} is gone)",
              file=sys.stderr)
        removed.append(tmp)
    return removed


def _writer_gone(folder: Path) -> dict | None:
    """The :data:`WRITER` file of ``folder`` when its writer is gone (see
    :func:`xecg.atomic.process_gone`), else None (no such file, or a writer that may live)."""
    try:
        writer = json.loads((folder / WRITER).read_text())
        return writer if process_gone(writer["host"], writer["pid"]) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
        # skipped.csv's (file, reason), with the record each names (None: no record)
        self._skipped: list[tuple[str, str, str | None]] = []
        self._unfiled: list[tuple[str, str]] = []  # skipped.csv: reference rows without a file
        self.ignored_codes: Counter[str] = Counter()
        #: Stored records per their own rate before resampling (``f"{fs:g}"`` -> count).
        self.native_rates: Counter[str] = Counter()
        #: Stored records whose header gives other classes than their REFERENCE.csv row:
        #: (record, header's, REFERENCE.csv's).
        self._overridden: list[tuple[str, list[str], list[str]]] = []
        self._offset = 0
        self.checksum = _default_checksum()
        self._signals_hash = _hasher(self.checksum)

    def __enter__(self) -> StoreWriter:
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            reclaim_stale(self.out)
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-",
                                              dir=self.out.parent))
            write_atomic(self._tmp / WRITER, json.dumps(
                {"host": socket.gethostname(), "pid": os.getpid()}) + "\n")
            self._signals = open(self._tmp / "signals.f32", "wb")
        except OSError as err:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
            raise WriteError.of(self.out, err, "no store was written") from err
        return self

    def add(self, record: Record, fs_in: float | None = None) -> None:
        """Append one record (signal ``12 x N`` float32 mV, already at the store's rate);
        ``fs_in``: its own rate where it was resampled (counted in the summary).

        Refuses (:class:`StoreError`) an id that could name a path (``../x``, ``a/b``)."""
        problem = unsafe_record_id(record.id)
        if problem:
            raise StoreError(f"{record.source or record.id}: {problem}", problem)
        sig = np.asarray(record.signal, dtype=np.float32)
        if sig.ndim != 2 or sig.shape[0] != NUM_LEADS:
            raise ValueError(
                f"{record.source or record.id}: signal must be 12 x N, got {sig.shape}")
        block = np.ascontiguousarray(sig)  # 12 x N, lead-major on disk
        data = block.tobytes()
        try:
            self._signals.write(data)
        except OSError as err:
            raise WriteError.of(self.out, err, "no store was written") from err
        self._signals_hash.update(data)
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
        self.native_rates[f"{fs_in or record.fs:g}"] += 1
        self._offset += block.shape[1]

    def header_overridden(self, record: str, header: Sequence[str],
                          reference: Sequence[str]) -> None:
        """Note a stored record whose header names the classes ``header`` where its
        REFERENCE.csv row, whose labels were stored, names ``reference`` (counted in the
        summary, the first few by name)."""
        self._overridden.append((record, list(header), list(reference)))

    def skip(self, path: str, reason: str, record: str | None = None) -> None:
        """List an input that was not stored, with the reason (goes to skipped.csv).

        ``record``: the id of the record it holds, None for an input that holds none (a
        symlink loop, a REFERENCE.csv row): the summary counts records, each once however many
        of its files are listed (both copies of a duplicated id are one record)."""
        self._skipped.append((str(path), reason, record))

    def listed_without_file(self, reference: str, records: Sequence[str]) -> None:
        """List records that ``reference`` labels but no file holds (goes to skipped.csv, one
        line each); counted apart from the inputs skipped (``listed_without_file``)."""
        self._unfiled += [(reference, f"no file: {rec} is listed, but no file of it was found")
                          for rec in records]

    @property
    def num_records(self) -> int:
        return len(self._rows)

    def summary(self) -> dict:
        labels = np.array([multi_hot(r["labels"].split(";") if r["labels"] else [])
                           for r in self._rows]).reshape(-1, NUM_CLASSES)
        lengths = np.array([r["length"] for r in self._rows])
        return {
            "records": len(self._rows),
            **self._skipped_counts(),
            "listed_without_file": len(self._unfiled),
            "class_counts": {c: int(n) for c, n in zip(CLASSES, labels.sum(0))},
            "multilabel": int((labels.sum(1) >= 2).sum()),
            "ignored_codes": dict(self.ignored_codes.most_common()),
            "median_length_s": float(np.median(lengths) / self.fs) if len(lengths) else 0.0,
            "total_samples": int(self._offset),
            "native_rates": dict(self.native_rates.most_common()),
            "resampled": sum(n for fs, n in self.native_rates.items() if float(fs) != self.fs),
            "header_labels_overridden": len(self._overridden),
            "header_labels_overridden_first": [
                {"record": rec, "header": header, "reference": ref}
                for rec, header, ref in self._overridden[:OVERRIDDEN_NAMED]],
        }

    def _skipped_counts(self) -> dict:
        """``skipped``: records not stored; ``skipped_reasons``: records per kind of reason;
        ``skipped_inputs``: inputs that hold no record, per kind; ``skipped_lines``: their lines
        in skipped.csv (one per file or row)."""
        records: dict[str, set[str]] = {}
        inputs: Counter[str] = Counter()
        for _, reason, record in self._skipped:
            if record is None:
                inputs[_reason_kind(reason)] += 1
            else:
                records.setdefault(_reason_kind(reason), set()).add(record)
        return {"skipped": len(set().union(*records.values())),
                "skipped_reasons": {k: len(ids) for k, ids in records.items()},
                "skipped_inputs": dict(inputs),
                "skipped_lines": len(self._skipped) + len(self._unfiled)}

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._tmp is not None
        if exc_type is not None:
            try:
                self._signals.close()
            except OSError:
                pass  # the error being raised already says what went wrong
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        try:
            self._signals.close()  # buffered samples are written here: a full disk shows now
            self._write_tables()
            os.chmod(self._tmp, 0o755)  # mkdtemp makes it private; a store is shared data
            replace_dir(self._tmp, self.out)
            # Only now: killed during the swap, the folder must still name its gone writer.
            (self.out / WRITER).unlink(missing_ok=True)
        except OSError as err:
            shutil.rmtree(self._tmp, ignore_errors=True)
            if isinstance(err, WriteError):
                raise
            raise WriteError.of(self.out, err, "no store was written") from err
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
        write_csv(tmp / "skipped.csv", ("file", "reason"),
                  [(path, reason) for path, reason, _ in self._skipped] + self._unfiled)
        expected = self._offset * _COLUMN_BYTES
        if (tmp / "signals.f32").stat().st_size != expected:
            raise OSError(f"signals.f32 holds {(tmp / 'signals.f32').stat().st_size} bytes, "
                          f"{expected} were written")
        files = {}
        for name in FILES:
            checksum = (self._signals_hash.hexdigest() if name == "signals.f32"
                        else file_checksum(tmp / name, self.checksum))
            files[name] = {"size": (tmp / name).stat().st_size, "checksum": checksum}
        meta = {
            "format": FORMAT, "version": VERSION, "fs": self.fs, "leads": list(LEADS),
            "classes": list(CLASSES), "num_records": len(self._rows),
            "num_samples": int(self._offset), "dtype": "float32",
            "signal_layout": "12 x N block per record",
            "units": "mV", "source": self.source, "fingerprint": self.fingerprint,
            "summary": self.summary(), **self.extra_meta,
            "integrity": {"algorithm": self.checksum, "files": files},
        }
        # meta.json last: its presence is what marks the folder complete.
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0].strip()


def has_store_files(path: Path) -> bool:
    """Whether ``path`` holds a store's own files, whole or half-written (meta.json or its data:
    not skipped.csv, which predict and explain write too): a folder that may be deleted and
    made again, where a dataset's own folder must never be told so."""
    return any((path / name).exists() for name in ("meta.json", *FILES[:4]))


class Store:
    """Read access to a prepared store.

    Attributes: ``ids`` (list of record ids), ``labels`` (R x 9 float32), ``lengths``, ``offsets``
    (R,) int64 in samples, ``fs``, ``signals`` (memory-mapped flat float32; record i is the
    ``12 x lengths[i]`` block starting at element ``12 * offsets[i]``).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta = _read_meta(self.path)
        if meta is None or meta.get("format") != FORMAT:
            if not has_store_files(self.path):
                # a dataset folder (or any other): deleting it was never the advice to give
                raise StoreError(f"{self.path}: not an xecg store; make one from it with "
                                 f"`xecg prepare {self.path} --out STORE`",
                                 "not an xecg store")
            raise StoreError(f"{self.path}: not a complete xecg store (no valid meta.json); "
                             "create one with `xecg prepare` (or delete the folder)",
                             "not a complete xecg store (no valid meta.json)")
        self.meta = meta
        if meta.get("version") != VERSION:
            raise _damaged(self.path, f"store format version {meta.get('version')}, this xecg "
                           f"reads version {VERSION}", meta)
        self._check_files()
        self.fs = float(self.meta["fs"])
        try:
            with open(self.path / "records.csv", newline="") as f:
                self.rows = list(csv.DictReader(f))
            self.ids = [r["record"] for r in self.rows]
            self.labels = np.array([multi_hot(r["labels"].split(";") if r["labels"] else [])
                                    for r in self.rows], dtype=np.float32).reshape(-1,
                                                                                   NUM_CLASSES)
            self.lengths = np.array([int(r["length"]) for r in self.rows], dtype=np.int64)
            self.offsets = np.array([int(r["offset"]) for r in self.rows], dtype=np.int64)
            self.moments = np.load(self.path / "moments.npy")
        except (KeyError, TypeError, ValueError, OSError) as e:
            raise _damaged(self.path, f"records.csv or moments.npy cannot be read ({e})",
                           meta) from None
        self._index = {rid: i for i, rid in enumerate(self.ids)}
        self._check_index()
        n = int(self.meta["num_samples"])
        self._mapped_bytes = n * _COLUMN_BYTES
        self.signals = (np.memmap(self.path / "signals.f32", dtype=np.float32, mode="r",
                                  shape=(n * NUM_LEADS,))
                        if n else np.zeros(0, np.float32))

    def check_mapped(self) -> None:
        """Raise :class:`StoreError` if the mapped signals.f32 has shrunk since it was opened: a
        copy over a store being read truncates it in place, and reading a lost page kills the
        process with SIGBUS (a loader thread's, the training's). One ``fstat``: the loader calls
        it before each batch, so this narrows the window, no more: a truncation while a batch is
        being read still ends in SIGBUS. (A store written again by ``xecg prepare`` is a new
        file: what is mapped stays whole.)"""
        mapped = getattr(self.signals, "_mmap", None)  # numpy's mmap of signals.f32, if any
        if mapped is None:
            return
        size = mapped.size()  # the mapped file's size now (fstat), not the path's
        if size < self._mapped_bytes:
            raise _damaged(self.path, f"signals.f32 was truncated while it was being read "
                           f"({size:,} bytes, {self._mapped_bytes:,} when opened): something "
                           "wrote over the store during the run", self.meta)

    @property
    def checksummed(self) -> bool:
        """True if meta.json holds checksums (stores of this release), so :meth:`verify` checks
        the samples; stores of the previous release have none."""
        return bool(self.meta.get("integrity"))

    def _check_files(self) -> None:
        """Every file there with the size written (or, without sizes, the size records.csv
        implies for signals.f32) and the small files' checksums: milliseconds."""
        integrity = self.meta.get("integrity")
        if integrity:
            expected = {k: v["size"] for k, v in integrity["files"].items()}
        else:  # the previous release: no sizes recorded
            expected = {"records.csv": None, "moments.npy": None,
                        "signals.f32": int(self.meta.get("num_samples", 0)) * _COLUMN_BYTES}
        for name, size in expected.items():
            path = self.path / name
            if not path.is_file():
                if name == "signals.f32" and size == 0:
                    continue  # an empty store of the previous release wrote none
                raise _damaged(self.path, f"{name} is missing: the store is incomplete",
                               self.meta)
            actual = path.stat().st_size
            if size is not None and actual != size:
                how = (f"{size - actual:,} bytes shorter than written: truncated"
                       if actual < size else f"{actual - size:,} bytes longer than written")
                raise _damaged(self.path, f"{name} is {how} ({actual:,} bytes, expected "
                               f"{size:,})", self.meta)
        if integrity:
            algorithm = integrity["algorithm"]
            for name, entry in integrity["files"].items():
                if name != "signals.f32" and not self._checksum_ok(name, entry, algorithm):
                    raise _damaged(self.path, f"{name} was changed after the store was written "
                                   "(checksum differs)", self.meta)

    def _checksum_ok(self, name: str, entry: dict, algorithm: str) -> bool:
        try:
            return file_checksum(self.path / name, algorithm) == entry["checksum"]
        except (ImportError, ValueError):
            raise _damaged(self.path, f"its checksums use {algorithm}, which this Python "
                           "cannot compute (pip install xxhash)", self.meta) from None

    def _check_index(self) -> None:
        """records.csv agrees with meta.json, moments.npy and itself: contiguous blocks that
        fill signals.f32, and no record id that could name a path."""
        n_rows, n = len(self.rows), int(self.meta["num_samples"])
        problem = None
        if n_rows != int(self.meta.get("num_records", n_rows)):
            problem = f"records.csv lists {n_rows} records, meta.json {self.meta['num_records']}"
        elif self.moments.shape != (n_rows, 2, NUM_LEADS):
            problem = f"moments.npy has shape {self.moments.shape} for {n_rows} records"
        elif n_rows and ((self.lengths < 0).any() or self.offsets[0] != 0
                         or (self.offsets[1:] != np.cumsum(self.lengths)[:-1]).any()):
            problem = "records.csv offsets and lengths do not follow each other"
        elif int(self.lengths.sum()) != n:
            problem = (f"records.csv lengths add up to {int(self.lengths.sum()):,} samples, "
                       f"meta.json says {n:,}")
        elif len(self._index) != n_rows:
            problem = "records.csv lists a record id twice"
        else:
            problem = next(filter(None, map(unsafe_record_id, self.ids)), None)
        if problem:
            raise _damaged(self.path, problem, self.meta)

    def verify(self) -> Store:
        """Check signals.f32 against its checksum too (reads the whole file: about 0.2 s per
        770 MB with xxh3 from the page cache); :class:`StoreError` if it differs. A store of the
        previous release has no checksum: only the checks made on opening apply."""
        integrity = self.meta.get("integrity")
        if integrity and "signals.f32" in integrity["files"]:
            if not self._checksum_ok("signals.f32", integrity["files"]["signals.f32"],
                                     integrity["algorithm"]):
                raise _damaged(self.path, "signals.f32 was changed after the store was written "
                               "(checksum differs)", self.meta)
        return self

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
