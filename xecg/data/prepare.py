"""``xecg prepare``: read a CPSC dataset in any supported layout into a prepared store.

Records are read in parallel worker processes (in order), resampled when asked, and written with
:class:`xecg.data.store.StoreWriter`, which only renames the finished store into place. A bad
record is reported on one line, listed in ``STORE/skipped.csv`` and left out (``strict`` stops
instead). A store whose fingerprint matches the source is reused only after its full integrity
check (sizes and checksums, :func:`xecg.data.store.is_current`); a damaged one is prepared again.

The store's rate is ``fs`` when given, else the rate of most records (on a tie the higher):
records at other rates are resampled to it, and the summary says how many, from which rates.

Exit codes: 0 done (or reused); 2 bad input, as every xecg command: the dataset cannot be read
(no folder, no records, no REFERENCE.csv for ICBEB files), no record is usable, or ``strict``
stopped at a bad record.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

import xecg
from xecg.data.readers import DatasetError, DatasetReader, open_dataset
from xecg.data.record import Record, RecordError
from xecg.data.store import (
    VERSION,
    StoreWriter,
    is_current,
    is_store,
    reclaim_stale,
    store_damage,
    unsafe_record_id,
)
from xecg.errors import XECGError, counted, error_exit


class _Result(NamedTuple):
    """One worker result: the record (at the store's rate) or ``bad``, ``(file, problem)``."""

    record: Record | None
    bad: tuple[str, str] | None
    #: The record's own rate, before it was resampled to the store's.
    fs_in: float | None = None
    #: The classes the record's own file gives it where its REFERENCE.csv row, which wins,
    #: gives others (None where they agree).
    overridden: list[str] | None = None


class PrepareError(XECGError):
    """``load_or_prepare`` could not produce a store (the reason was printed above it)."""


class _Stop(Exception):
    """Abandons the store being written (StoreWriter then removes its temporary folder)."""


def resample(signal: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling of ``12 x N`` to ``12 x round(N * fs_out / fs_in)`` float32."""
    from scipy.signal import resample_poly

    ratio = Fraction(fs_out).limit_denominator(10_000) / Fraction(fs_in).limit_denominator(10_000)
    return resample_poly(signal, ratio.numerator, ratio.denominator, axis=1).astype(np.float32)


#: The revision of what prepare keeps and how (in the fingerprint): a store prepared under
#: earlier rules is prepared again once. 2: the rate of most records, not the first record's;
#: uncalibrated (gain 0) records and records without their REFERENCE.csv row are skipped.
RULES = 2


def fingerprint(reader: DatasetReader, fs: float | None) -> str:
    """Hash of what a store depends on: file names, sizes and mtimes, fs, reference, versions."""
    h = hashlib.sha256()
    # Which records the reference labels: a found file its folder, --reference all of them.
    scope = (None if reader.reference_folders is None
             else [str(f.relative_to(reader.root)) for f in reader.reference_folders])
    h.update(json.dumps({"store": VERSION, "xecg": xecg.__version__, "fs": fs,
                         "layout": reader.layout, "rules": RULES,
                         "reference_scope": scope}).encode())
    for path in reader.files:
        st = path.stat()
        h.update(f"{path.relative_to(reader.root)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    for ref in reader.reference_files:
        # Content, not mtime: an explicit --reference may live anywhere and be rewritten unchanged.
        h.update(f"{ref.name}\n".encode() + ref.read_bytes())
    return h.hexdigest()


# Set in each worker process once by the pool initializer, so the reader is pickled once per
# worker rather than once per task.
_WORKER: tuple[DatasetReader, float] | None = None


def _init_worker(reader: DatasetReader | None, fs: float) -> None:
    global _WORKER
    _WORKER = None if reader is None else (reader, fs)


def _load(rec: str) -> _Result:
    reader, fs = _WORKER
    try:
        record = reader.load_record(rec)
    except RecordError as e:
        # RecordError does not survive pickling (two-argument constructor): send its parts.
        return _Result(None, (e.path, e.problem))
    fs_in = record.fs
    if record.fs != fs:
        record = replace(record, signal=resample(record.signal, record.fs, fs), fs=fs)
    return _Result(record, None, fs_in, reader.header_labels_overridden(rec))


def _load_chunk(recs: list[str]) -> list[_Result]:
    return [_load(rec) for rec in recs]


@contextmanager
def _loaded(reader: DatasetReader, fs: float, workers: int) -> Iterator[Iterator[_Result]]:
    """Results of ``_load`` for every record, in order; ``workers > 1`` reads in that many
    processes, ``1`` in this one."""
    if workers <= 1:
        _init_worker(reader, fs)
        try:
            yield map(_load, reader.records)
        finally:
            _init_worker(None, fs)  # do not keep the reader alive in this process
        return
    recs = reader.records
    size = max(1, min(16, len(recs) // (workers * 4)))
    chunks = [recs[i:i + size] for i in range(0, len(recs), size)]
    pools = _Pools(reader, fs, workers)
    try:
        yield _bounded(pools, chunks, ahead=2 * workers)
    finally:
        pools.close()


class _Pools:
    """Reader processes, made anew when one of them dies (killed for memory, or crashed in a
    library): a dead worker breaks a ProcessPoolExecutor, whose pending results then fail at
    once, where multiprocessing.Pool would have waited for them forever."""

    def __init__(self, reader: DatasetReader, fs: float, workers: int):
        self.reader, self.fs, self.workers = reader, fs, workers
        self.pool = self._make()

    def _make(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, initializer=_init_worker,
                                   initargs=(self.reader, self.fs))

    def submit(self, fn, arg) -> Future:
        return self.pool.submit(fn, arg)

    def renew(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = self._make()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def one_by_one(self, chunk: list[str]) -> list[_Result]:
        """``chunk``'s results read a record at a time, after the pool broke on a chunk that
        holds it or was waiting beside it: a record whose worker dies alone is skipped."""
        results = []
        for rec in chunk:
            try:
                results.append(self.submit(_load, rec).result())
            except BrokenProcessPool:
                results.append(_Result(None, (str(self.reader.path_of(rec)), _DIED)))
                self.renew()
        return results


#: The skip reason of a record whose reader process died while reading it alone.
_DIED = ("reader crashed: the process reading this record died (killed for memory, or a "
         "crash in a library); the other records are read")


def _bounded(pools: _Pools, chunks: list[list[str]], ahead: int) -> Iterator[_Result]:
    """Ordered results with at most ``ahead`` chunks in flight.

    Reading ahead without limit would pile most of the dataset's samples up in memory when
    readers are faster than the writer. When a worker dies, every chunk in flight fails: the
    first is read again a record at a time (finding the record that kills its reader, if it
    is there), the others are sent again."""
    todo = deque(chunks)
    pending: deque[tuple[list[str], Future]] = deque()
    while todo or pending:
        try:
            while todo and len(pending) < ahead:
                pending.append((todo[0], pools.submit(_load_chunk, todo[0])))
                todo.popleft()
            results = pending[0][1].result()
            pending.popleft()
        except BrokenProcessPool:  # at .result(), or at .submit() once the pool knows
            lost = [c for c, _ in pending]
            pending.clear()
            pools.renew()
            if not lost:
                continue
            todo.extendleft(reversed(lost[1:]))
            results = pools.one_by_one(lost[0])
        yield from results


def default_workers() -> int:
    """Reader processes used by default: one CPU fewer than there are, for the writer."""
    # The writer (this process) is the bottleneck on few cores: measured on 2 busy CPUs,
    # reading here beats 1-2 reader processes, whose results must be pickled across.
    return max(1, (os.cpu_count() or 1) - 1)


def _common_rate(reader: DatasetReader) -> float:
    """The sampling rate of most records whose header can be read; on a tie the higher (the
    lower would throw away the others' detail). Until 2026-11-28 the first record's rate was
    the store's, and one odd header resampled every other record to it."""
    rates: Counter[float] = Counter()
    for rec in reader.records:
        try:
            rates[reader.sampling_rate(rec)] += 1
        except RecordError:
            continue  # loading it says why; it is skipped there
    if not rates:
        raise DatasetError(f"{reader.root}: no record has a readable sampling rate")
    return max(rates, key=lambda fs: (rates[fs], fs))


def prepare_dataset(source: str | os.PathLike, out: str | os.PathLike, fs: float | None = None,
                    strict: bool = False, reference: str | os.PathLike | None = None,
                    workers: int | None = None, force: bool = False, progress: bool = True
                    ) -> int:
    """Prepare the dataset at ``source`` into the store ``out``; returns the exit code.

    ``fs``: store rate in Hz (default: the rate of most records). ``strict``: stop at the first
    bad record and write nothing. ``reference``: REFERENCE.csv (default: found under ``source``).
    ``workers``: reader processes, 1 reads in this process (default: CPUs - 1, since this process
    is busy writing). ``force``: rewrite a current store.

    A failed write (full disk, read-only folder) raises :class:`xecg.errors.WriteError` and leaves
    no store (an earlier store at ``out`` stays as it was).
    """
    out = Path(out)
    started = time.perf_counter()
    try:
        reader = open_dataset(source, reference)
        fp = fingerprint(reader, fs)
        reclaim_stale(out)  # a killed writer's leftovers: before judging the store
        if not force and is_current(out, fp):
            print(f"{out}: up to date with {source}: {_held(out)}; reusing it "
                  "(--force rewrites it)")
            return 0
        if not force and is_store(out) and _fingerprint_of(out) == fp:
            print(f"{out}: {store_damage(out)}; preparing it again")
        target = float(fs) if fs else _common_rate(reader)
    except DatasetError as e:
        return error_exit(e)
    workers = max(1, min(workers or default_workers(), len(reader)))
    meta = {"layout": reader.layout, "reference": [str(p) for p in reader.reference_files]}
    try:
        with StoreWriter(out, fs=target, source=str(source), fingerprint=fp,
                         extra_meta=meta) as writer:
            for path, reason in reader.orphans:
                _skip(writer, path, reason, strict, reader.record_named(path))
            unfiled = reader.listed_without_file()
            writer.listed_without_file(_references(reader), unfiled)
            with _loaded(reader, target, workers) as results, \
                    tqdm(total=len(reader), desc="prepare", unit="rec", disable=not progress,
                         file=sys.stderr) as bar:
                for rec, result in zip(reader.records, results):  # results in order
                    record, bad = result.record, result.bad
                    if bad is None and unsafe_record_id(record.id):
                        bad = (record.source, unsafe_record_id(record.id))
                    if bad is None:
                        writer.add(record, fs_in=result.fs_in)
                        if result.overridden is not None:
                            writer.header_overridden(rec, result.overridden, record.label_names)
                    else:
                        _skip(writer, *bad, strict, rec)
                    bar.update()
            if writer.num_records == 0:
                raise _Stop(f"no usable records in {source}; nothing written")
            summary = writer.summary()
    except _Stop as e:
        return error_exit(e)  # bad input: 2, as every command's
    _print_summary(summary, source, out, target, time.perf_counter() - started,
                   "--fs" if fs else "the rate of most records")
    if summary["header_labels_overridden"]:
        print(_overridden_line(summary, _references(reader)))
    if unfiled:
        # One line, not one per record: a partial download lists thousands.
        first = ", ".join(unfiled[:5]) + (", ..." if len(unfiled) > 5 else "")
        print(f"{counted(len(unfiled), 'record')} listed in {_references(reader)} "
              f"{'has' if len(unfiled) == 1 else 'have'} no file in {source} (first: {first}); "
              f"each is listed in {out / 'skipped.csv'}")
    return 0


def _references(reader: DatasetReader) -> str:
    return ", ".join(map(str, reader.reference_files))


def _held(store: Path) -> str:
    """``89 records stored, 10 excluded``: what the store at ``store`` holds, from meta.json."""
    try:
        summary = json.loads((store / "meta.json").read_text())["summary"]
        held = counted(int(summary["records"]), "record") + " stored"
        excluded = int(summary.get("skipped", 0))
    except (OSError, ValueError, KeyError, TypeError):
        return "its records as stored"  # is_current read it a moment ago; say nothing wrong
    return held + (f", {excluded:,} excluded (listed in {store / 'skipped.csv'})"
                   if excluded else "")


def _fingerprint_of(store: Path) -> str | None:
    try:
        return json.loads((store / "meta.json").read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def _skip(writer: StoreWriter, path: str, reason: str, strict: bool,
          record: str | None) -> None:
    tqdm.write(f"skipped {path}: {reason}")
    if strict:
        raise _Stop("--strict: stopped at the first bad record; no store written")
    writer.skip(path, reason, record)


def _print_summary(s: dict, source, out: Path, fs: float, seconds: float, chosen: str) -> None:
    hours = s["total_samples"] / fs / 3600
    print(f"prepared {s['records']:,} records from {source} -> {out} ({fs:g} Hz, {hours:.1f} h, "
          f"median {s['median_length_s']:.1f} s) in {seconds:.1f} s "
          f"({(s['records'] + s['skipped']) / max(seconds, 1e-9):.0f} records/s)")
    if s["resampled"]:
        rates = sorted(((float(r), n) for r, n in s["native_rates"].items() if float(r) != fs),
                       key=lambda rn: (-rn[1], rn[0]))
        print(f"resampled {s['resampled']:,} of {counted(s['records'], 'record')} to {fs:g} Hz "
              f"({chosen}): " + ", ".join(f"{n:,} from {r:g} Hz" for r, n in rates))
    if s["skipped"] or s["skipped_inputs"]:
        print(_excluded_line(s, out / "skipped.csv"))
    print("classes: " + ", ".join(f"{c} {n:,}" for c, n in s["class_counts"].items())
          + f"; multilabel {s['multilabel']:,}")
    if s["ignored_codes"]:
        codes = ", ".join(f"{c} x{n}" for c, n in s["ignored_codes"].items())
        print(f"ignored codes outside the nine classes: {codes}")


def _excluded_line(s: dict, listing: Path) -> str:
    """``excluded 2 records: duplicate id 1, missing file 1; skipped 1 input that is no record:
    symlink loop 1 (listed in STORE/skipped.csv: 4 lines, one per file or row)``."""
    parts = []
    if s["skipped"]:
        parts.append(f"excluded {counted(s['skipped'], 'record')}: "
                     f"{_kinds(s['skipped_reasons'])}")
    inputs = sum(s["skipped_inputs"].values())
    if inputs:
        parts.append(f"skipped {counted(inputs, 'input')} that "
                     f"{'is' if inputs == 1 else 'are'} no record: {_kinds(s['skipped_inputs'])}")
    return (f"{'; '.join(parts)} (listed in {listing}: {counted(s['skipped_lines'], 'line')}, "
            "one per file or row)")


def _overridden_line(s: dict, references: str) -> str:
    """``labels: REFERENCE.csv and the header disagree for 2 stored records (A0003: header PVC,
    REFERENCE.csv STD; ...); REFERENCE.csv's labels are stored``."""
    n = s["header_labels_overridden"]
    first = "; ".join(f"{e['record']}: header {', '.join(e['header']) or 'no class'}, "
                      f"REFERENCE.csv {', '.join(e['reference'])}"
                      for e in s["header_labels_overridden_first"])
    more = "; ..." if n > len(s["header_labels_overridden_first"]) else ""
    return (f"labels: {references} and the record's header disagree for "
            f"{counted(n, 'stored record')} ({first}{more}); REFERENCE.csv's labels are stored "
            "(a REFERENCE.csv row wins over header labels)")



def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n:,}" for kind, n in sorted(counts.items()))


def load_or_prepare(source: str | os.PathLike, out: str | os.PathLike, **kw) -> Path:
    """Path of a store for ``source``: ``source`` itself if it is a store, else ``out``, prepared
    (or reused when current) with :func:`prepare_dataset` keywords ``kw``."""
    if is_store(source):
        return Path(source)
    kw.setdefault("progress", sys.stderr.isatty())
    code = prepare_dataset(source, out, **kw)
    if code != 0:
        raise PrepareError(f"could not prepare {source} into {out} (exit status {code}); "
                           "see the messages above")
    return Path(out)
