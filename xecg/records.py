"""The records a checkpoint command reads: ``xecg predict``, ``xecg explain`` and ``xecg evaluate``.

PATH is one record file, a folder in any supported layout, or a prepared store
(:func:`reader_and_ids`). :func:`records_at_rate` loads the records one by one, brings each to
the model's sample rate (:func:`at_rate`: signal resampled, evidence intervals scaled alike)
and collects the unreadable ones, which :func:`write_skipped` writes to ``skipped.csv``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from xecg.atomic import write_csv
from xecg.data.prepare import resample
from xecg.data.readers import DatasetError, open_dataset
from xecg.data.record import Record, RecordError
from xecg.data.store import Store, is_store


class StoreReader:
    """A prepared store seen through the reader API that :func:`records_at_rate` uses."""

    def __init__(self, path: Path):
        self.store = Store(path)
        self.records = list(self.store.ids)

    def load_record(self, rec_id: str, require_labels: bool = False):
        return self.store.record(self.store.index_of(rec_id))


def reader_and_ids(path: Path):
    """The dataset reader for PATH and its record ids (one, for a record file)."""
    if is_store(path):
        reader = StoreReader(path)
        return reader, reader.records
    if path.is_file():
        reader = open_dataset(path.parent, require_reference=False)
        if path.stem not in reader.records:
            raise DatasetError(f"{path}: not a record file of a supported layout")
        return reader, [path.stem]
    reader = open_dataset(path, require_reference=False)
    return reader, reader.records


def at_rate(rec: Record, fs: float) -> Record:
    """``rec`` at ``fs``: the signal resampled and the evidence intervals scaled alike (the
    record itself where it already is at ``fs``)."""
    if rec.fs == fs:
        return rec
    k = fs / rec.fs
    return replace(rec, signal=resample(rec.signal, rec.fs, fs), fs=fs,
                   evidence=[(lab, int(round(a * k)), int(round(b * k)))
                             for lab, a, b in rec.evidence])


def records_at_rate(reader, ids: Iterable[str], fs: float, skipped: list, desc: str,
                    progress: bool = True, no_label: list | None = None) -> Iterator[Record]:
    """The records ``ids`` of ``reader`` at ``fs`` (:func:`at_rate`), with a progress bar.

    An unreadable record is named on the console and added to ``skipped`` as ``(file,
    reason)``. With a ``no_label`` list, records without a label among the nine are not
    yielded either; their ids go into it."""
    for rec_id in tqdm(ids, desc=desc, unit="rec", disable=not progress):
        try:
            rec = reader.load_record(rec_id, require_labels=False)
        except RecordError as err:
            tqdm.write(f"skipped {err}")
            skipped.append((err.path, err.problem))
            continue
        if no_label is not None and rec.labels.sum() == 0:
            no_label.append(rec.id)
            continue
        yield at_rate(rec, fs)


def write_skipped(out: Path, skipped: list) -> None:
    """``out/skipped.csv`` (file, reason) if any record was skipped."""
    if skipped:
        write_csv(out / "skipped.csv", ["file", "reason"], skipped)
