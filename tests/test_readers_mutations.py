"""Damaged files give the one-line errors and nothing else: random mutations (bytes changed,
files cut short, header tokens replaced, lines dropped, doubled or swapped, REFERENCE.csv cells
replaced) of real WFDB records and of an ICBEB folder. Whatever a mutation does, reading the
dataset and every record either works or raises :class:`xecg.data.record.RecordError` or
:class:`xecg.data.readers.base.DatasetError`, which the commands turn into ``FILE: problem``;
any other exception would be a traceback.

The default run draws a few hundred mutations; ``HYPOTHESIS_MUTATIONS=2000`` draws more."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
from fixtures import make_signal, write_icbeb_record, write_reference_csv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xecg.data.readers import open_dataset
from xecg.data.readers.base import DatasetError
from xecg.data.record import RecordError

EXAMPLES = int(os.environ.get("HYPOTHESIS_MUTATIONS", "150"))
#: Tokens a damaged or hand-edited header or REFERENCE.csv may hold in place of a good one.
TOKENS = ["", "abc", "-1", "0", "1e309", "nan", "inf", "16+99999999", "212", "8", "999",
          "1000/mV", "0/mV", "-5/uV", "1000(999999999999)/mV", "1000/xx", "A0001.dat",
          "../x.mat", "16x2", "\x00", "é", "#Dx: 999", "1.5", "A0001;1", "\uff19"]


def _mutate(data: st.DataObject, path: Path, text: bool) -> None:
    """One random change to the file at ``path``: tokens and lines (``text``) or bytes."""
    kind = data.draw(st.sampled_from(["token", "lines", "bytes", "cut"] if text
                                     else ["bytes", "head bytes", "cut"]))
    raw = path.read_bytes()
    if kind in ("bytes", "head bytes"):
        b = bytearray(raw)
        # head bytes: a MATLAB v4 matrix's header and name (type, rows, columns, ...)
        span = min(len(b), 24) if kind == "head bytes" else len(b)
        for i in data.draw(st.lists(st.integers(0, span - 1), min_size=1, max_size=6)):
            b[i] = data.draw(st.integers(0, 255))
        path.write_bytes(bytes(b))
    elif kind == "cut":
        path.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1))])
    else:
        lines = raw.decode().splitlines()
        i = data.draw(st.integers(0, len(lines) - 1))
        if kind == "token":
            sep = "," if path.suffix == ".csv" else " "
            cells = lines[i].split(sep)
            cells[data.draw(st.integers(0, len(cells) - 1))] = data.draw(st.sampled_from(TOKENS))
            lines[i] = sep.join(cells)
        else:
            op = data.draw(st.sampled_from(["drop", "double", "swap"]))
            if op == "drop":
                del lines[i]
            elif op == "double":
                lines.insert(i, lines[i])
            else:
                j = data.draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
        path.write_text("\n".join(lines) + "\n")


def _read_everything(folder: Path) -> None:
    """Open ``folder`` and load each record; only the readers' one-line errors may come out."""
    try:
        reader = open_dataset(folder)
    except DatasetError:
        return
    for rec in reader.records:
        try:
            reader.load_record(rec)
        except (RecordError, DatasetError):
            pass


@pytest.fixture(scope="module")
def icbeb_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("icbeb")
    for i in range(3):
        write_icbeb_record(folder / "TrainingSet1", f"A000{i + 1}", make_signal(1000, seed=i))
    write_reference_csv(folder / "REFERENCE.csv", [("A0001", [1]), ("A0002", [2, 5]),
                                                   ("A0003", [9])])
    return folder


def _check(source: list[Path], data: st.DataObject, targets: list[Path], text: set[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's about odd MATLAB files: the errors say it
        folder = Path(tmp)
        for f in source:
            shutil.copytree(f, folder / f.name) if f.is_dir() else shutil.copy(f, folder)
        target = data.draw(st.sampled_from(targets))
        _mutate(data, folder / target, target.suffix in text)
        _read_everything(folder)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_real_wfdb_records_give_only_one_line_errors(wfdb_sample, data):
    record = data.draw(st.sampled_from(sorted(p.stem for p in wfdb_sample.glob("*.hea"))[:20]))
    files = [wfdb_sample / f"{record}.hea", wfdb_sample / f"{record}.mat"]
    _check(files, data, [Path(f.name) for f in files], {".hea"})


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_mutated_icbeb_folder_gives_only_one_line_errors(icbeb_folder, data):
    targets = [Path("REFERENCE.csv"), *(p.relative_to(icbeb_folder)
                                        for p in sorted(icbeb_folder.rglob("*.mat")))]
    _check(sorted(icbeb_folder.iterdir()), data, targets, {".csv"})
