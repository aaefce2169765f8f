"""``xecg prepare``: stores from every layout, bad records skipped or fatal (--strict), atomic
writes, reuse of a current store, resampling, the CLI, and the real CPSC sample."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from fixtures import (
    make_signal,
    write_icbeb_record,
    write_reference_csv,
    write_wfdb_record,
    xecg_env,
)

from xecg.classes import CPSC_CODES, SNOMED_CODES
from xecg.cli import main
from xecg.data.prepare import PrepareError, load_or_prepare, prepare_dataset
from xecg.data.readers import WFDBReader, open_dataset, parse_header
from xecg.data.store import Store

CODE = {name: code for code, name in CPSC_CODES.items()}
SIGNALS = {f"A000{i}": make_signal(400 + 100 * i, seed=i) for i in range(1, 5)}


def _good(root):
    """Four good Challenge-layout records in two subfolders."""
    tokens = [["AF"], ["Normal"], ["PVC", "RBBB"], ["STD", "999999"]]
    for i, ((rec, sig), dx) in enumerate(zip(SIGNALS.items(), tokens)):
        write_wfdb_record(root / f"g{i % 2 + 1}", rec, sig, dx)
    return root


def _with_bad(root):
    """The good records plus a checksum mismatch (A0005) and an unlabelled record (A0006)."""
    _good(root)
    write_wfdb_record(root / "g1", "A0005", make_signal(300), ["AF"], checksums=[1] * 12)
    write_wfdb_record(root / "g2", "A0006", make_signal(300), ["251146004"])
    return root


def _skipped(store):
    with open(store / "skipped.csv", newline="") as f:
        return {os.path.basename(r["file"]): r["reason"] for r in csv.DictReader(f)}


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_skips_bad_records(tmp_path, capsys, workers):
    src, out = _with_bad(tmp_path / "src"), tmp_path / "store"
    assert prepare_dataset(src, out, workers=workers, progress=False) == 0

    store = Store(out)
    assert store.ids == sorted(SIGNALS)
    for rec, sig in SIGNALS.items():
        np.testing.assert_array_equal(store.record(store.index_of(rec)).signal, sig)
    assert store.record(store.index_of("A0003")).label_names == ["PVC", "RBBB"]
    skipped = _skipped(out)
    assert set(skipped) == {"A0005.hea", "A0006.hea"}
    assert skipped["A0005.hea"].startswith("checksum mismatch")
    assert "none of the nine classes (codes: 251146004)" in skipped["A0006.hea"]

    text = capsys.readouterr().out
    bad_lines = [line for line in text.splitlines() if line.startswith("skipped ")]
    assert len(bad_lines) == 2 and all(str(src) in line for line in bad_lines)
    assert "prepared 4 records" in text and "excluded 2" in text
    assert "checksum mismatch 1" in text and "no class 1" in text
    summary = store.meta["summary"]
    assert summary["class_counts"]["RBBB"] == 1 and summary["multilabel"] == 1
    assert summary["ignored_codes"] == {"999999": 1}
    assert "ignored codes outside the nine classes: 999999 x1" in text


def test_excluded_counts_records_not_files(tmp_path, capsys):
    # A record id found twice was "duplicate id 2" (the summary counted skipped.csv's lines, one
    # per file), and a symlink loop counted as an excluded record.
    src, out = _good(tmp_path / "src"), tmp_path / "store"
    write_wfdb_record(src / "g3", "A0001", SIGNALS["A0001"], ["AF"])  # a second A0001
    write_wfdb_record(src / "g3", "A0009", make_signal(300), ["AF"])
    (src / "g3" / "A0009.mat").unlink()
    (src / "g3" / "loop").symlink_to(src, target_is_directory=True)
    assert prepare_dataset(src, out, workers=1, progress=False) == 0

    text = capsys.readouterr().out
    assert len([line for line in text.splitlines() if line.startswith("skipped ")]) == 4
    assert (f"excluded 2 records: duplicate id 1, missing file 1; skipped 1 input that is no "
            f"record: symlink loop 1 (listed in {out / 'skipped.csv'}: 4 lines, one per file "
            "or row)") in text.splitlines()
    summary = Store(out).meta["summary"]
    assert summary["skipped"] == 2 and summary["skipped_lines"] == 4
    assert summary["skipped_reasons"] == {"duplicate id": 1, "missing file": 1}
    assert summary["skipped_inputs"] == {"symlink loop": 1}
    with open(out / "skipped.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4


def test_records_listed_without_a_file_are_said_once(tmp_path, capsys):
    # A partial download (TrainingSet1 of the ICBEB release with the full REFERENCE.csv) passed
    # unnoticed: the rows of records with no file here were not mentioned.
    src, out = tmp_path / "src", tmp_path / "store"
    for rec in ("A0001", "A0002"):
        write_icbeb_record(src / "TrainingSet1", rec, SIGNALS[rec])
    ids = [f"A{i:04d}" for i in range(1, 21)]
    ref = write_reference_csv(src / "REFERENCE.csv", [(r, [CODE["AF"]]) for r in ids])
    assert prepare_dataset(src, out, workers=1, progress=False) == 0

    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if "no file" in line] == [
        f"18 records listed in {ref} have no file in {src} (first: A0003, A0004, A0005, A0006, "
        f"A0007, ...); each is listed in {out / 'skipped.csv'}"]
    assert not any(line.startswith(("skipped ", "excluded ")) for line in lines), lines
    store = Store(out)
    assert store.ids == ["A0001", "A0002"]
    assert store.meta["summary"]["listed_without_file"] == 18
    assert store.meta["summary"]["skipped"] == 0
    with open(out / "skipped.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["reason"].split()[2] for r in rows] == ids[2:]
    assert store.meta["summary"]["skipped_lines"] == len(rows) == 18  # counted them too
    assert rows[0] == {"file": str(ref), "reason": "no file: A0003 is listed, but no file of it "
                                                   "was found"}


# A reader process killed (SIGKILL, as the kernel kills for memory) while it reads one record:
# the worker processes inherit the patched reader (fork), so only they die.
_READER_DIES = """
import os, signal, sys
from xecg.data.prepare import prepare_dataset
from xecg.data.readers import WFDBReader

parent, real = os.getpid(), WFDBReader._read


def read(self, rec):
    if rec in sys.argv[3:] and os.getpid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, rec)


WFDBReader._read = read
sys.exit(prepare_dataset(sys.argv[1], sys.argv[2], workers=2, progress=False))
"""


@pytest.mark.parametrize("victims", [["A0003"], ["A0001", "A0004"]])
def test_a_reader_process_that_dies_costs_only_its_record(tmp_path, victims):
    """multiprocessing.Pool waited forever for the result of a worker that died; now the
    records in flight are read again, the one whose reader dies alone is skipped and named."""
    src, out = _with_bad(tmp_path / "src"), tmp_path / "store"
    run = subprocess.run([sys.executable, "-c", _READER_DIES, str(src), str(out), *victims],
                         env=xecg_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    for rec in victims:
        assert f"{rec}.hea: reader crashed: the process reading this record died" in run.stdout
    assert Store(out).ids == sorted(set(SIGNALS) - set(victims))
    skipped = _skipped(out)
    assert skipped.keys() == {f"{rec}.hea" for rec in victims} | {"A0005.hea", "A0006.hea"}


def test_parallel_store_equals_serial(tmp_path):
    src = _with_bad(tmp_path / "src")
    for w in (1, 2):
        assert prepare_dataset(src, tmp_path / f"w{w}", workers=w, progress=False) == 0
    assert (tmp_path / "w1/signals.f32").read_bytes() == (tmp_path / "w2/signals.f32").read_bytes()
    assert ((tmp_path / "w1/records.csv").read_text()
            == (tmp_path / "w2/records.csv").read_text())


def test_strict_stops_without_a_store(tmp_path, capsys):
    # Bad input exits 2, as every xecg command does (it was 1 until 2026-11-28).
    src, out = _with_bad(tmp_path / "src"), tmp_path / "store"
    assert prepare_dataset(src, out, strict=True, workers=2, progress=False) == 2
    captured = capsys.readouterr()
    assert "A0005.hea: checksum mismatch" in captured.out
    assert "--strict" in captured.err
    assert not out.exists() and _siblings(out) == ["src"]


def test_cli(tmp_path):
    src, out = _with_bad(tmp_path / "src"), tmp_path / "store"
    assert main(["prepare", str(src), "--out", str(out), "--strict", "--workers", "1"]) == 2
    assert not out.exists()
    assert main(["prepare", str(src), "--out", str(out), "--fs", "250", "--workers", "1"]) == 0
    store = Store(out)
    assert store.fs == 250 and len(store) == 4


def test_empty_folder_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert prepare_dataset(tmp_path / "empty", tmp_path / "store", progress=False) == 2
    assert f"{tmp_path / 'empty'}: no ECG records found" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


def test_nothing_usable_writes_nothing(tmp_path, capsys):
    write_wfdb_record(tmp_path / "src", "A0001", make_signal(100), ["251146004"])
    assert prepare_dataset(tmp_path / "src", tmp_path / "store", progress=False) == 2
    assert "no usable records" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupted_write_keeps_previous_store(tmp_path, monkeypatch, workers):
    src, out = _good(tmp_path / "src"), tmp_path / "store"
    assert prepare_dataset(src, out, workers=1, progress=False) == 0
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    load = WFDBReader.load_record

    def failing(self, rec):
        if rec == "A0003":
            raise RuntimeError("simulated crash")
        return load(self, rec)

    # Forked workers inherit the patched method.
    monkeypatch.setattr(WFDBReader, "load_record", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare_dataset(src, out, workers=workers, force=True, progress=False)
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare_dataset(src, tmp_path / "fresh", workers=workers, progress=False)
    assert _siblings(out) == ["src", "store"]


def _stamp(path):
    """Inode and mtime: a rewritten store is a new file (the old one exists until replaced)."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def test_rerun_reuses_unchanged_source(tmp_path, capsys):
    src, out = _good(tmp_path / "src"), tmp_path / "store"
    signals = out / "signals.f32"
    assert prepare_dataset(src, out, workers=1, progress=False) == 0
    stamp = _stamp(signals)
    assert prepare_dataset(src, out, workers=1, progress=False) == 0
    assert "up to date" in capsys.readouterr().out
    assert _stamp(signals) == stamp

    # A rewritten source file re-prepares, and the store shows the change.
    write_wfdb_record(src / "g1", "A0001", SIGNALS["A0001"], ["LBBB"])
    st = (src / "g1" / "A0001.hea").stat()
    os.utime(src / "g1" / "A0001.hea", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert prepare_dataset(src, out, workers=1, progress=False) == 0
    assert "up to date" not in capsys.readouterr().out
    assert _stamp(signals) != stamp
    store = Store(out)
    assert store.record(store.index_of("A0001")).label_names == ["LBBB"]

    stamp = _stamp(signals)
    assert prepare_dataset(src, out, workers=1, force=True, progress=False) == 0
    assert _stamp(signals) != stamp
    stamp = _stamp(signals)
    assert prepare_dataset(src, out, workers=1, fs=250, progress=False) == 0
    assert _stamp(signals) != stamp and Store(out).fs == 250


def test_up_to_date_says_what_the_store_holds(tmp_path, capsys):
    # It said "(6 records)", the records found, of a store that holds 4 (2 were excluded).
    src, out = _with_bad(tmp_path / "src"), tmp_path / "store"
    assert prepare_dataset(src, out, workers=1, progress=False) == 0
    capsys.readouterr()
    assert prepare_dataset(src, out, workers=1, progress=False) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{out}: up to date with {src}: 4 records stored, 2 excluded (listed in "
        f"{out / 'skipped.csv'}); reusing it (--force rewrites it)"]


def test_the_store_rate_is_that_of_most_records(tmp_path, capsys):
    # The first record's rate was the store's: one header saying 250 Hz, listed first,
    # halved every other record without a word.
    src, out = _good(tmp_path / "src"), tmp_path / "store"
    odd = make_signal(500, seed=9)
    write_wfdb_record(src, "A0000", odd, ["AF"], fs=250)  # listed first
    assert prepare_dataset(src, out, workers=1, progress=False) == 0
    store = Store(out)
    assert store.fs == 500
    for rec, sig in SIGNALS.items():  # the 500 Hz records as they are
        np.testing.assert_array_equal(store.record(store.index_of(rec)).signal, sig)
    assert store.lengths[store.index_of("A0000")] == 1000
    text = capsys.readouterr().out
    assert ("resampled 1 of 5 records to 500 Hz (the rate of most records): 1 from 250 Hz"
            in text.splitlines())
    summary = store.meta["summary"]
    assert summary["native_rates"] == {"500": 4, "250": 1} and summary["resampled"] == 1
    assert store.rows[0]["fs"] == "500"

    # A tie goes to the higher rate; --fs names itself as the reason.
    for rec in ("A0001", "A0002"):
        write_wfdb_record(src / "g9", rec.replace("A", "T"), SIGNALS[rec], ["AF"], fs=1000)
    for path in [*src.rglob("A0003.*"), *src.rglob("A0004.*")]:
        path.unlink()
    # now: 250 Hz x1, 500 Hz x2, 1000 Hz x2
    assert prepare_dataset(src, out, workers=2, progress=False) == 0
    assert Store(out).fs == 1000
    assert Store(out).meta["summary"]["native_rates"] == {"500": 2, "1000": 2, "250": 1}
    assert ("resampled 3 of 5 records to 1000 Hz (the rate of most records): 2 from 500 Hz, "
            "1 from 250 Hz") in capsys.readouterr().out.splitlines()
    assert prepare_dataset(src, out, fs=250, workers=1, progress=False) == 0
    assert ("resampled 4 of 5 records to 250 Hz (--fs): 2 from 500 Hz, 2 from 1000 Hz"
            in capsys.readouterr().out.splitlines())


def test_a_record_missing_from_its_folders_reference_is_skipped(tmp_path, capsys):
    # A record that the folder's REFERENCE.csv does not list was stored with its header's
    # labels, beside records labelled by REFERENCE.csv, without a word; the README promises it
    # reported and skipped. A disagreement of header and REFERENCE.csv was not counted either.
    src, out = _good(tmp_path / "src"), tmp_path / "store"  # A0001, A0003 in g1; A0002, A0004 in g2
    ref = write_reference_csv(src / "g1" / "REFERENCE.csv", [
        ("A0001", [CODE["AF"]]), ("A0003", [CODE["STD"]])])  # A0003's header: PVC,RBBB
    hea = write_wfdb_record(src / "g1", "A0005", make_signal(300), ["AF"])  # no row
    assert prepare_dataset(src, out, workers=2, progress=False) == 0

    store = Store(out)
    assert store.ids == ["A0001", "A0002", "A0003", "A0004"]
    assert store.record(store.index_of("A0003")).label_names == ["STD"]  # REFERENCE.csv wins
    # A REFERENCE.csv labels its own folder (and those below), not g2 beside it.
    assert store.record(store.index_of("A0002")).label_names == ["Normal"]
    reason = (f"not in REFERENCE.csv: {ref} labels this folder but has no row for A0005; its "
              "header's labels are not used")
    assert _skipped(out) == {"A0005.hea": reason}
    lines = capsys.readouterr().out.splitlines()
    assert f"skipped {hea}: {reason}" in lines
    assert (f"labels: {ref} and the record's header disagree for 1 stored record (A0003: "
            "header PVC, RBBB, REFERENCE.csv STD); REFERENCE.csv's labels are stored (a "
            "REFERENCE.csv row wins over header labels)") in lines
    summary = store.meta["summary"]
    assert summary["header_labels_overridden"] == 1
    assert summary["header_labels_overridden_first"] == [
        {"record": "A0003", "header": ["PVC", "RBBB"], "reference": ["STD"]}]
    assert summary["skipped_reasons"] == {"not in REFERENCE.csv": 1}

    # A REFERENCE.csv given with --reference labels every record.
    assert prepare_dataset(src, out, reference=ref, workers=1, progress=False) == 0
    assert Store(out).ids == ["A0001", "A0003"]
    assert set(_skipped(out)) == {"A0002.hea", "A0004.hea", "A0005.hea"}


def test_resampling(tmp_path):
    freqs = np.arange(1, 13)[:, None]  # Hz, one per lead, all well below 125 Hz

    def sines(fs, n):
        return np.sin(2 * np.pi * freqs * np.arange(n) / fs)

    write_wfdb_record(tmp_path / "src", "A0001", sines(500, 2000), ["AF"])
    assert prepare_dataset(tmp_path / "src", tmp_path / "store", fs=250, workers=1,
                           progress=False) == 0
    store = Store(tmp_path / "store")
    assert store.fs == 250 and store.lengths.tolist() == [1000]
    # Away from the edges (filter start-up) the sines are reproduced at the new rate.
    np.testing.assert_allclose(store.record(0).signal[:, 50:-50], sines(250, 1000)[:, 50:-50],
                               atol=0.01)


def test_icbeb_layout(tmp_path):
    src = tmp_path / "src"
    for i, (rec, sig) in enumerate(SIGNALS.items()):
        write_icbeb_record(src / f"TrainingSet{i % 3 + 1}", rec, sig, age=30 + i, sex="Female")
    write_reference_csv(src / "REFERENCE.csv", [
        ("A0002", [CODE["PAC"], CODE["PAC"]]), ("A0001", [CODE["STE"], CODE["I-AVB"]]),
        ("A0003", [CODE["Normal"]])])
    assert prepare_dataset(src, tmp_path / "store", workers=2, progress=False) == 0
    store = Store(tmp_path / "store")
    assert store.ids == ["A0001", "A0002", "A0003"]
    assert store.record(0).label_names == ["I-AVB", "STE"]
    assert store.record(1).label_names == ["PAC"]
    assert store.rows[2]["age"] == "32" and store.rows[2]["sex"] == "Female"
    assert _skipped(tmp_path / "store")["A0004.mat"].startswith("not in REFERENCE.csv")
    assert store.meta["layout"] == "icbeb"


def test_load_or_prepare(tmp_path):
    src, out = _good(tmp_path / "src"), tmp_path / "store"
    assert load_or_prepare(src, out, workers=1) == out
    stamp = _stamp(out / "signals.f32")
    assert load_or_prepare(src, out, workers=1) == out
    assert _stamp(out / "signals.f32") == stamp
    assert load_or_prepare(out, tmp_path / "unused") == out
    assert not (tmp_path / "unused").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match="exit status 2"):
        load_or_prepare(tmp_path / "empty", tmp_path / "s2")


# ------------------------------------------------------------------------ real CPSC records


def test_real_wfdb_sample(wfdb_sample, reference_csv, tmp_path):
    out = tmp_path / "store"
    assert prepare_dataset(wfdb_sample, out, reference=reference_csv, workers=2,
                           progress=False) == 0
    store = Store(out)
    reader = open_dataset(wfdb_sample)
    assert store.ids == reader.records and len(store) == 100
    summary = json.loads((out / "meta.json").read_text())["summary"]
    assert summary["skipped"] == 0 and summary["listed_without_file"] == 6877 - 100
    for i in (0, 57, 99):
        np.testing.assert_array_equal(store.record(i).signal, reader.load_data(store.ids[i]))
        assert store.lengths[i] == parse_header(reader.path_of(store.ids[i])).n_samples


def test_real_records_with_an_odd_rate_or_no_gain(wfdb_sample, tmp_path, capsys):
    # The QA report's steps: A0001's header edited to 250 Hz made the store 250 Hz and halved
    # A0002-A0005 (5000 -> 2500 samples); A0063 with gain 0/mV was stored at 5x its amplitude.
    src, out = tmp_path / "src", tmp_path / "store"
    src.mkdir()
    for rec in ("A0001", "A0002", "A0003", "A0004", "A0005", "A0063"):
        for ext in (".hea", ".mat"):
            shutil.copy(wfdb_sample / f"{rec}{ext}", src)
    head = (src / "A0001.hea").read_text().split("\n", 1)
    (src / "A0001.hea").write_text(head[0].replace(" 500 ", " 250 ", 1) + "\n" + head[1])
    (src / "A0063.hea").write_text((src / "A0063.hea").read_text().replace("1000/mV", "0/mV"))
    assert prepare_dataset(src, out, workers=1, progress=False) == 0

    store, reader = Store(out), open_dataset(wfdb_sample)
    assert store.fs == 500 and store.ids == ["A0001", "A0002", "A0003", "A0004", "A0005"]
    for rec in store.ids[1:]:
        np.testing.assert_array_equal(store.record(store.index_of(rec)).signal,
                                      reader.load_data(rec))
    assert store.lengths[0] == 2 * parse_header(wfdb_sample / "A0001.hea").n_samples
    text = capsys.readouterr().out
    assert "resampled 1 of 5 records to 500 Hz (the rate of most records): 1 from 250 Hz" in text
    assert (f"skipped {src / 'A0063.hea'}: uncalibrated signal: gain 0 (or none) in the header, "
            "lead I and 11 more") in text


def test_real_snomed_sample(snomed_sample, tmp_path):
    out = tmp_path / "store"
    assert prepare_dataset(snomed_sample, out, workers=2, progress=False) == 0
    codes = {p.stem: parse_header(p).comments["Dx"].split(",")
             for p in sorted(snomed_sample.glob("*.hea"))}
    kept = sorted(r for r, c in codes.items() if any(x in SNOMED_CODES for x in c))
    ignored: dict[str, int] = {}
    for rec in kept:
        for c in codes[rec]:
            if c not in SNOMED_CODES:
                ignored[c] = ignored.get(c, 0) + 1
    store = Store(out)
    assert store.ids == kept
    assert set(_skipped(out)) == {f"{r}.hea" for r in set(codes) - set(kept)}
    assert store.meta["summary"]["ignored_codes"] == ignored
