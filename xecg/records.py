"""The records a checkpoint command reads: ``xecg predict``, ``xecg explain`` and ``xecg evaluate``.

PATH is one record file, a folder in any supported layout, or a prepared store
(:func:`select_records`). :func:`records_at_rate` loads the records one by one, brings each to
the model's sample rate (:func:`at_rate`: signal resampled, evidence intervals scaled alike)
and collects what it cannot use: the files the folder's scan could not pair into a record (a
``.mat`` without its header, a duplicated id), unreadable records and records too short for the
network. :func:`write_skipped` writes them to ``skipped.csv``; nothing found is left unsaid.

Also shared by the commands: :func:`check_device` (``--device``, checked before a checkpoint is
loaded onto it), :func:`remove_previous` (what an earlier run of the command left in its output
folder) and :func:`nothing_done` (the error when every input was skipped).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from xecg.atomic import write_csv
from xecg.data.prepare import resample
from xecg.data.readers import DatasetError, open_dataset, record_suffixes
from xecg.data.record import Record, RecordError
from xecg.data.store import Store, is_store
from xecg.errors import ConfigError, NotFoundError, XECGError, one_line
from xecg.models.backbone import DOWNSAMPLE


class StoreReader:
    """A prepared store seen through the reader API that :func:`records_at_rate` uses."""

    def __init__(self, path: Path):
        self.store = Store(path)
        self.records = list(self.store.ids)

    def load_record(self, rec_id: str, require_labels: bool = False):
        return self.store.record(self.store.index_of(rec_id))


@dataclass
class Selection:
    """What a checkpoint command reads: the reader, the ids it loads, and ``orphans``, the
    ``(file, reason)`` of inputs found beside them that are no record (a ``.mat`` without its
    header, each copy of a duplicated id): they are reported as skipped."""

    reader: object
    ids: list[str]
    orphans: list[tuple[str, str]] = field(default_factory=list)

    def only(self, wanted: Iterable[str]) -> Selection:
        """The records of ``wanted`` (in this selection's order) and the orphans that are
        their files."""
        wanted = set(wanted)
        return replace(self, ids=[i for i in self.ids if i in wanted],
                       orphans=[o for o in self.orphans if self._record_of(o[0]) in wanted])

    @property
    def found(self) -> set[str]:
        """Every record id present, readable or not."""
        return {*self.ids, *(self._record_of(path) for path, _ in self.orphans)} - {None}

    def _record_of(self, path: str) -> str | None:
        """The record id an orphan's file names (None for a REFERENCE.csv row, a folder)."""
        named = getattr(self.reader, "record_named", None)  # a store: the file's stem
        return named(path) if named else Path(path).stem

    def skipped_records(self, skipped: list[tuple[str, str]]) -> int:
        """How many records (or other inputs) ``skipped`` names, each once: both copies of a
        duplicated id are one record."""
        return len({self._record_of(path) or path for path, _ in skipped})

    def count_skipped(self, skipped: list[tuple[str, str]]) -> str:
        """``3 skipped (4 lines in skipped.csv)``: :meth:`skipped_records`, and the lines."""
        n = self.skipped_records(skipped)
        return f"{n} skipped" + (f" ({len(skipped)} lines in skipped.csv)"
                                 if len(skipped) != n else "")


def select_records(path: Path) -> Selection:
    """The records at PATH: a store, one record file or a dataset folder in any layout."""
    if is_store(path):
        reader = StoreReader(path)
        return Selection(reader, reader.records)
    if not path.exists() and path.suffix.lower() in record_suffixes():
        raise NotFoundError(f"{path}: no such file")  # a record file, not a folder, was meant
    if path.is_file():
        reader = open_dataset(path.parent, require_reference=False)
        if path.stem not in reader.records:
            reasons = [why for f, why in reader.orphans if Path(f).resolve() == path.resolve()]
            raise DatasetError(f"{path}: " + (reasons[0] if reasons else
                                              "not a record file of a supported layout"))
        return Selection(reader, [path.stem])
    reader = open_dataset(path, require_reference=False)
    return Selection(reader, reader.records, list(reader.orphans))


def at_rate(rec: Record, fs: float) -> Record:
    """``rec`` at ``fs``: the signal resampled and the evidence intervals scaled alike (the
    record itself where it already is at ``fs``)."""
    if rec.fs == fs:
        return rec
    k = fs / rec.fs
    return replace(rec, signal=resample(rec.signal, rec.fs, fs), fs=fs,
                   evidence=[(lab, int(round(a * k)), int(round(b * k)))
                             for lab, a, b in rec.evidence])


def records_at_rate(selection: Selection, fs: float, skipped: list, desc: str,
                    progress: bool = True, no_label: list | None = None) -> Iterator[Record]:
    """The records of ``selection`` at ``fs`` (:func:`at_rate`), with a progress bar.

    The selection's orphans, each unreadable record and each record shorter than the network's
    243-sample stride (it could not be seen whole) are named on the console and added to
    ``skipped`` as ``(file, reason)``. With a ``no_label`` list, records without a label among
    the nine are not yielded either; their ids go into it."""
    def skip(path: str, reason: str) -> None:
        tqdm.write(f"skipped {path}: {reason}")
        skipped.append((path, reason))

    for path, reason in selection.orphans:
        skip(path, reason)
    for rec_id in tqdm(selection.ids, desc=desc, unit="rec", disable=not progress):
        try:
            rec = selection.reader.load_record(rec_id, require_labels=False)
        except RecordError as err:
            skip(err.path, err.problem)
            continue
        if no_label is not None and rec.labels.sum() == 0:
            no_label.append(rec.id)
            continue
        rec = at_rate(rec, fs)
        if rec.length < DOWNSAMPLE:
            skip(rec.source or rec.id, f"too short: {rec.length} samples at {fs:g} Hz; the "
                 f"network needs at least {DOWNSAMPLE} ({DOWNSAMPLE / fs:.2f} s)")
            continue
        yield rec


def write_skipped(out: Path, skipped: list) -> None:
    """``out/skipped.csv`` (file, reason) if any record was skipped."""
    if skipped:
        write_csv(out / "skipped.csv", ["file", "reason"], skipped)


def check_device(name: str) -> str:
    """``name`` if torch can run on that device here, else a one-line :class:`ConfigError`:
    checked before a checkpoint is loaded onto it, which would blame the checkpoint."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError) as err:
        raise ConfigError(f"--device {name}: not a device name ({one_line(err, 120)}); use cpu, "
                          "cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA GPU is available here "
                              "(torch.cuda.is_available() is False); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {name}: this machine has {count} CUDA GPU"
                              f"{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {name}: no Apple GPU (MPS) is available here; use "
                              "--device cpu")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name}: xecg runs on cpu, cuda[:N] or mps, not "
                          f"{device.type}")
    return name


def remove_previous(out: Path, command: str, files: Mapping[str, str],
                    pages: Iterable[str] = ()) -> str:
    """Remove from ``out`` what an earlier ``xecg COMMAND`` wrote there, so that the folder
    holds this run's results only; returns what was removed, in words ("" for nothing).

    ``files``: the command's fixed files, each removed only if its first line starts as this
    command writes it (``{"skipped.csv": "file,reason"}``). Pages: the PNGs directly in ``out``
    that :func:`xecg.plots.page_writer` says ``xecg COMMAND`` wrote, and the PNGs named in
    ``pages`` (pages of an xecg that did not mark them). Nothing else of the user's is touched.
    """
    from xecg.plots import page_writer  # matplotlib: only for the commands that draw

    removed = []
    for name, start in files.items():
        path = out / name
        try:
            with open(path, newline="") as f:
                ours = f.readline().startswith(start)
        except (OSError, UnicodeDecodeError):
            continue
        if ours:
            path.unlink()
            removed.append(name)
    named = {out / name for name in pages}
    n_pages = 0
    for path in sorted(out.glob("*.png")):
        if page_writer(path) == f"xecg {command}" or (path in named and _is_png(path)):
            path.unlink()
            n_pages += 1
    if n_pages:
        removed.append(f"{n_pages} page{'s' if n_pages != 1 else ''}")
    return ", ".join(removed)


def _is_png(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        return False


class NothingDone(XECGError):
    """Every input of a checkpoint command was skipped: no result to show (exit 2)."""


def nothing_done(path: Path, out: Path, skipped: list, what: str) -> NothingDone:
    """The error of a run that ``what`` (``predicted``) no record of ``path`` because each was
    skipped; the skipped list is in ``out/skipped.csv``."""
    where = out / "skipped.csv"
    if len(skipped) == 1:
        (file, reason), = skipped
        return NothingDone(f"{file}: {reason}; no record was {what} (listed in {where})")
    if not skipped:
        return NothingDone(f"{path}: no record to be {what}")
    return NothingDone(f"{path}: no record was {what}: every one was skipped "
                       f"({len(skipped)} lines in {where})")
