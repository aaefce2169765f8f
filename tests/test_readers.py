"""Readers: every layout from fixtures written with the real file formats, detection, bad inputs,
and the real CPSC records (skipped when ../shared/data is absent)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from fixtures import (
    make_signal,
    write_icbeb_record,
    write_reference_csv,
    write_wfdb_dat_record,
    write_wfdb_record,
)

from xecg.classes import CLASSES, CPSC_CODES, LEADS, SNOMED_CODES, multi_hot, names_of
from xecg.data.readers import (
    DatasetError,
    ICBEBReader,
    WFDBReader,
    open_dataset,
    parse_header,
    read_reference,
)
from xecg.data.readers.reference import load_references
from xecg.data.record import RecordError

# CPSC code of each class, looked up rather than written out.
CODE = {name: code for code, name in CPSC_CODES.items()}
SNOMED = {name: code for code, name in reversed(SNOMED_CODES.items())}


# ------------------------------------------------------------------------ fixture layouts


def test_wfdb_abbreviations_and_snomed(tmp_path):
    sig1, sig2 = make_signal(900, seed=1), make_signal(700, seed=2)
    write_wfdb_record(tmp_path, "A0002", sig2, [SNOMED["PAC"], "999999"], age=61, sex="Female")
    write_wfdb_record(tmp_path, "A0001", sig1, ["AF", "RBBB"], age="NaN", sex="Unknown")
    reader = open_dataset(tmp_path)

    assert isinstance(reader, WFDBReader)
    assert reader.records == ["A0001", "A0002"]
    rec = reader.load_record("A0001")
    np.testing.assert_array_equal(rec.signal, sig1)
    assert rec.signal.dtype == np.float32 and rec.fs == 500
    assert rec.label_names == ["AF", "RBBB"] and rec.ignored_codes == []
    assert rec.age is None and rec.sex is None
    assert rec.source == str(tmp_path / "A0001.hea")

    rec2 = reader.load_record("A0002")
    np.testing.assert_array_equal(rec2.signal, sig2)
    assert rec2.label_names == ["PAC"] and rec2.ignored_codes == ["999999"]
    assert rec2.age == 61 and rec2.sex == "Female"
    assert reader.load_ann("A0002") == ["PAC"]


def test_load_data_leads_and_units(tmp_path):
    sig = make_signal(500, seed=3)
    write_wfdb_record(tmp_path, "A0001", sig, ["Normal"])
    reader = open_dataset(tmp_path)
    v1, ii = LEADS.index("V1"), LEADS.index("II")
    np.testing.assert_array_equal(reader.load_data("A0001", leads=["v1", "II"]), sig[[v1, ii]])
    np.testing.assert_allclose(reader.load_data("A0001", units="uV"), sig * 1000, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown lead"):
        reader.load_data("A0001", leads=["V7"])
    with pytest.raises(ValueError, match="units"):
        reader.load_data("A0001", units="V")


def test_wfdb_leads_in_other_order_are_reordered(tmp_path):
    sig = make_signal(400, seed=4)
    shuffled = [LEADS[i] for i in np.random.default_rng(0).permutation(len(LEADS))]
    file_leads = [name.lower() if name.startswith("a") else name for name in shuffled]
    rows = [LEADS.index(name) for name in shuffled]
    write_wfdb_record(tmp_path, "A0001", sig[rows], ["STD"], leads=file_leads)
    np.testing.assert_array_equal(open_dataset(tmp_path).load_data("A0001"), sig)


def test_wfdb_dat_format_goes_through_wfdb(tmp_path):
    sig = make_signal(600, seed=5, gain=200)
    write_wfdb_dat_record(tmp_path, "R1", sig, [SNOMED["LBBB"]], fmt="212", gain=200)
    header = parse_header(tmp_path / "R1.hea")
    assert not header.fast and header.signals[0].fmt == "212"
    rec = open_dataset(tmp_path).load_record("R1")
    np.testing.assert_allclose(rec.signal, sig, atol=1e-6)
    assert rec.label_names == ["LBBB"] and rec.sex == "Female"


def test_icbeb_nested_with_reference(tmp_path):
    sigs = {f"A000{i}": make_signal(300 + 50 * i, seed=i) for i in range(1, 5)}
    for i, (rec, sig) in enumerate(sigs.items()):
        write_icbeb_record(tmp_path / f"TrainingSet{i % 2 + 1}", rec, sig, age=40 + i, sex="Male")
    # Out of numeric order, a repeated code, a code outside 1-9.
    write_reference_csv(tmp_path / "REFERENCE.csv", [
        ("A0003", [CODE["PAC"], CODE["PAC"]]), ("A0001", [CODE["Normal"]]),
        ("A0004", [CODE["AF"], CODE["STE"], 10]), ("A0002", [CODE["I-AVB"]])])
    reader = open_dataset(tmp_path)

    assert isinstance(reader, ICBEBReader)
    assert reader.records == sorted(sigs)
    for rec, sig in sigs.items():
        np.testing.assert_array_equal(reader.load_data(rec), sig)
    assert reader.load_ann("A0003") == ["PAC"]
    r4 = reader.load_record("A0004")
    assert r4.label_names == ["AF", "STE"] and r4.ignored_codes == ["10"]
    assert r4.age == 43 and r4.sex == "Male" and r4.fs == 500
    assert r4.source == str(tmp_path / "TrainingSet2" / "A0004.mat")


def test_icbeb_record_missing_from_reference(tmp_path):
    write_icbeb_record(tmp_path, "A0001", make_signal(100))
    write_icbeb_record(tmp_path, "A0002", make_signal(100))
    write_reference_csv(tmp_path / "REFERENCE.csv", [("A0001", [CODE["AF"]])])
    reader = open_dataset(tmp_path)
    with pytest.raises(RecordError, match="not in REFERENCE.csv") as err:
        reader.load_record("A0002")
    assert err.value.path == str(tmp_path / "A0002.mat")


def test_icbeb_without_reference_is_an_error(tmp_path):
    write_icbeb_record(tmp_path / "TrainingSet1", "A0001", make_signal(100))
    with pytest.raises(DatasetError, match="REFERENCE.csv") as err:
        open_dataset(tmp_path)
    # What works for every command that prepares a dataset (xecg train and fit have no
    # --reference, which the message told them to pass).
    assert "put REFERENCE.csv in the dataset folder" in str(err.value)
    assert "pass --reference" not in str(err.value)
    assert "xecg prepare also takes one with --reference" in str(err.value)
    ref = write_reference_csv(tmp_path.parent / "labels.csv", [("A0001", [CODE["LBBB"]])])
    assert open_dataset(tmp_path, reference=ref).load_ann("A0001") == ["LBBB"]


def test_nested_challenge_layout_detected(tmp_path):
    root = tmp_path / "training" / "cpsc_2018"
    for g, rec in enumerate(["A0003", "A0001", "A0002"], start=1):
        write_wfdb_record(root / f"g{g}", rec, make_signal(200, seed=g), [SNOMED["STE"]])
    reader = open_dataset(tmp_path)
    assert isinstance(reader, WFDBReader)
    assert reader.records == ["A0001", "A0002", "A0003"]
    assert reader.path_of("A0001") == root / "g2" / "A0001.hea"


def test_reference_wins_over_header_and_labels_its_whole_folder(tmp_path):
    write_wfdb_record(tmp_path, "A0001", make_signal(200), ["Normal"])
    write_wfdb_record(tmp_path, "A0002", make_signal(200), ["PVC"])
    ref = write_reference_csv(tmp_path / "REFERENCE.csv",
                              [("A0001", [CODE["AF"], CODE["RBBB"]])])
    reader = open_dataset(tmp_path)
    assert reader.load_ann("A0001") == ["AF", "RBBB"]
    assert reader.load_record("A0001").label_names == ["AF", "RBBB"]
    assert reader.header_labels_overridden("A0001") == ["Normal"]
    # Not listed: until 2026-11-28 its header's labels, mixing two label sources in one
    # dataset without a word; now an unusable record, as the README promises.
    for call in (reader.load_ann, reader.load_record):
        with pytest.raises(RecordError) as err:
            call("A0002")
        assert str(err.value) == (f"{tmp_path / 'A0002.hea'}: not in REFERENCE.csv: {ref} labels "
                                  "this folder but has no row for A0002; its header's labels "
                                  "are not used")
    # Prediction needs no labels: the record is read, unlabelled.
    assert reader.load_record("A0002", require_labels=False).label_names == []


def test_read_reference_rows(tmp_path):
    path = write_reference_csv(tmp_path / "REFERENCE.csv", [
        ("A0002", [CODE["PAC"], CODE["PAC"]]), ("A0001", [CODE["STD"], 11])])
    ref = read_reference(path)
    assert list(ref) == ["A0002", "A0001"]
    np.testing.assert_array_equal(ref["A0002"][0], multi_hot(["PAC"]))
    assert ref["A0001"][1] == ["11"]
    write_reference_csv(path, [("A0001", [CODE["AF"]]), ("A0001", [CODE["STE"]])])
    with pytest.raises(DatasetError, match="A0001 is listed twice"):
        read_reference(path)


@pytest.mark.parametrize("header", [True, False], ids=["header", "no header"])
def test_a_reference_saved_with_a_bom_keeps_its_first_record(tmp_path, header):
    # Excel's "CSV UTF-8" starts the file with a byte-order mark: it was read into the first id
    # ('\ufeffA0001', a bad row), or into the header, which then counted as a record.
    lines = ["Recording,First_label,Second_label,Third_label"] if header else []
    path = tmp_path / "REFERENCE.csv"
    path.write_bytes("".join(f"{line}\r\n" for line in [*lines, "A0001,1,,", "A0002,2,5,"])
                     .encode("utf-8-sig"))
    ref = load_references([path])
    assert list(ref.labels) == ["A0001", "A0002"] and ref.problems == []
    assert read_reference(path)["A0001"][1] == []


def test_a_reference_written_by_pandas_keeps_its_float_codes(tmp_path):
    # pandas writes a label column with blanks as floats: "A0043,5,2.0," lost its AF as a code
    # outside the nine classes. Codes that are not 1-9 stay outside, however they are spelled.
    path = tmp_path / "REFERENCE.csv"
    path.write_text("Recording,First_label,Second_label,Third_label\n"
                    "A0043,5,2.0,\nA0044,1.0,10.0,\nA0045,2.5,0.0,\n")
    ref = read_reference(path)
    assert names_of(ref["A0043"][0]) == ["AF", "RBBB"] and ref["A0043"][1] == []
    assert names_of(ref["A0044"][0]) == ["Normal"] and ref["A0044"][1] == ["10.0"]
    assert not ref["A0045"][0].any() and ref["A0045"][1] == ["2.5", "0.0"]


def test_the_real_reference_round_tripped_through_pandas(reference_csv, tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "REFERENCE.csv"
    pd.read_csv(reference_csv).to_csv(path, index=False)
    assert "A0043,5,2.0," in path.read_text()
    ref, official = read_reference(path), read_reference(reference_csv)
    assert ref.keys() == official.keys()
    for rec, (y, ignored) in official.items():
        np.testing.assert_array_equal(ref[rec][0], y)
        assert ref[rec][1] == ignored == []


@pytest.mark.parametrize("sep", [";", "\t"], ids=["semicolons", "tabs"])
def test_the_real_reference_separated_otherwise(reference_csv, tmp_path, sep):
    # Excel saves "CSV" with ";" where "," is the decimal mark (German, French, ... locales),
    # and a table pasted from a sheet has tabs: every row used to be a bad row ("record id
    # 'A0001;5;;' is not a file name"), and then "no records listed".
    path = tmp_path / "REFERENCE.csv"
    path.write_text(reference_csv.read_text().replace(",", sep))
    ref, official = load_references([path]), read_reference(reference_csv)
    assert ref.labels.keys() == official.keys() and ref.problems == []
    for rec, (y, _) in official.items():
        np.testing.assert_array_equal(ref.labels[rec][0], y)


def test_the_real_reference_with_a_bom(reference_csv, tmp_path):
    path = tmp_path / "REFERENCE.csv"
    path.write_bytes(b"\xef\xbb\xbf" + reference_csv.read_bytes())
    ref = load_references([path])
    assert ref.labels.keys() == read_reference(reference_csv).keys() and ref.problems == []


# ------------------------------------------------------------------------------ bad inputs


def _wfdb(tmp_path, **kw):
    return write_wfdb_record(tmp_path, "A0001", make_signal(1000), ["AF"], **kw)


def _truncate(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


BAD_WFDB = {
    "truncated": lambda p: _truncate(_wfdb(p).with_suffix(".mat"), 5000),
    "truncated header": lambda p: _truncate(_wfdb(p).with_suffix(".mat"), 10),
    "sample count": lambda p: _wfdb(p, n_samples=1200),
    "lead count": lambda p: write_wfdb_record(p, "A0001", make_signal(1000)[:11], ["AF"],
                                              leads=LEADS[:11]),
    "duplicate lead": lambda p: _wfdb(p, leads=(*LEADS[:11], "V5")),
    "checksum": lambda p: _wfdb(p, checksums=[0] * 12),
    "missing file": lambda p: _wfdb(p).with_suffix(".mat").unlink(),
    "unreadable header": lambda p: _wfdb(p).write_text("A0001 twelve 500\n"),
    "no class": lambda p: write_wfdb_record(p, "A0001", make_signal(100), ["59931005"]),
    "empty": lambda p: write_wfdb_record(p, "A0001", make_signal(0), ["AF"]),
}
EXPECTED = {
    "truncated": ("A0001.mat", "truncated: 5000 bytes"),
    "truncated header": ("A0001.mat", "truncated: 10 bytes"),
    "sample count": ("A0001.mat", "shape mismatch: the matrix has 1000 samples, the header says "
                                  "1200"),
    "lead count": ("A0001.hea", "wrong leads: 11 signals"),
    "duplicate lead": ("A0001.hea", "missing V6"),
    "checksum": ("A0001.hea", "checksum mismatch: 12 lead(s) corrupt"),
    "missing file": ("A0001.hea", "missing file: signal file A0001.mat"),
    "unreadable header": ("A0001.hea", "unreadable header"),
    "no class": ("A0001.hea", "no class: none of the nine classes (codes: 59931005)"),
    "empty": ("A0001.hea", "empty: the record has no samples"),
}


@pytest.mark.parametrize("case", sorted(BAD_WFDB))
def test_bad_wfdb_record(tmp_path, case):
    BAD_WFDB[case](tmp_path)
    file, problem = EXPECTED[case]
    with pytest.raises(RecordError) as err:
        open_dataset(tmp_path).load_record("A0001")
    assert err.value.path == str(tmp_path / file)
    assert problem in err.value.problem
    assert str(tmp_path / file) in str(err.value)


def test_shape_mismatch_between_matrix_and_header_leads(tmp_path):
    hea = _wfdb(tmp_path)
    scipy.io.savemat(tmp_path / "A0001.mat", {"val": np.zeros((11, 1000), np.int16)}, format="4")
    with pytest.raises(RecordError, match="matrix has 11 rows, the header lists 12"):
        open_dataset(tmp_path).load_record(hea.stem)


def test_corrupt_dat_checksum(tmp_path):
    hea = write_wfdb_dat_record(tmp_path, "R1", make_signal(300, gain=200), ["AF"], gain=200)
    lines = hea.read_text().splitlines()
    fields = lines[1].split()
    fields[6] = str(int(fields[6]) + 1)
    hea.write_text("\n".join([lines[0], " ".join(fields), *lines[2:]]) + "\n")
    with pytest.raises(RecordError, match="checksum mismatch: 1 lead"):
        open_dataset(tmp_path).load_record("R1")


def test_icbeb_bad_files(tmp_path):
    sig = make_signal(200).astype(np.float64)
    sig[3, 17] = np.nan
    sig[5, 2] = np.inf
    write_icbeb_record(tmp_path, "A0001", sig)
    _truncate(write_icbeb_record(tmp_path, "A0002", make_signal(2000)), 300)
    write_icbeb_record(tmp_path, "A0003", make_signal(200)[:8])
    write_reference_csv(tmp_path / "REFERENCE.csv",
                        [(r, [CODE["AF"]]) for r in ("A0001", "A0002", "A0003")])
    reader = open_dataset(tmp_path)
    for rec, problem in [("A0001", "non-finite: 2 NaN/inf samples"),
                         ("A0002", "truncated: a MATLAB v5 element at byte 128 claims 192248 "
                                   "bytes, 164 are left"),
                         ("A0003", "wrong leads")]:
        with pytest.raises(RecordError, match=problem) as err:
            reader.load_record(rec)
        assert err.value.path == str(tmp_path / f"{rec}.mat")


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no records here")
    with pytest.raises(DatasetError, match="no ECG records found") as err:
        open_dataset(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)
    with pytest.raises(DatasetError, match="no such folder"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "TrainingSet1.zip").write_bytes(b"PK")  # ICBEB's download, not unpacked
    with pytest.raises(DatasetError, match=r"TrainingSet1.zip: an archive, not a folder: unpack "
                                           r"it first \(unzip TrainingSet1.zip\)"):
        open_dataset(tmp_path / "TrainingSet1.zip")
    with pytest.raises(DatasetError, match="REFERENCE.csv: not a folder"):
        open_dataset(write_reference_csv(tmp_path / "REFERENCE.csv", [("A0001", [1])]))


def test_duplicate_record_ids(tmp_path):
    # Neither copy is read (which is right is unknown); both are named; other records are read.
    for g in ("g1", "g2"):
        write_wfdb_record(tmp_path / g, "A0001", make_signal(100), ["AF"])
    write_wfdb_record(tmp_path / "g2", "A0002", make_signal(100), ["AF"])
    reader = open_dataset(tmp_path)
    assert reader.records == ["A0002"]
    assert reader.orphans == [
        (str(tmp_path / "g1/A0001.hea"), "duplicate id: record A0001 is also at "
                                         f"{tmp_path / 'g2/A0001.hea'}; no copy is read"),
        (str(tmp_path / "g2/A0001.hea"), "duplicate id: record A0001 is also at "
                                         f"{tmp_path / 'g1/A0001.hea'}; no copy is read")]


def test_orphan_mat_in_wfdb_layout(tmp_path):
    write_wfdb_record(tmp_path, "A0001", make_signal(100), ["AF"])
    write_icbeb_record(tmp_path, "A0002", make_signal(100))
    reader = open_dataset(tmp_path)
    assert reader.records == ["A0001"]
    assert [p for p, _ in reader.orphans] == [str(tmp_path / "A0002.mat")]


def _upper_case_extensions(folder):
    for path in sorted(folder.rglob("*.*")):
        path.rename(path.with_suffix(path.suffix.upper()))


def test_upper_case_extensions_are_read(tmp_path):
    # A0001.HEA + A0001.MAT (copied from a case-insensitive file system, as some mirrors serve
    # them): the .MAT was "a .mat file without a .hea next to it" and, its header naming
    # A0001.mat, the record a missing file.
    sig, dat = make_signal(300, seed=1), make_signal(300, seed=2, gain=200)
    write_wfdb_record(tmp_path / "wfdb", "A0001", sig, ["AF"])
    write_wfdb_dat_record(tmp_path / "wfdb", "A0002", dat, ["PVC"], gain=200)
    write_reference_csv(tmp_path / "wfdb" / "reference.csv", [("A0002", [CODE["PAC"]])])
    write_icbeb_record(tmp_path / "icbeb", "A0003", sig)
    write_reference_csv(tmp_path / "icbeb" / "REFERENCE.csv", [("A0003", [CODE["STD"]])])
    _upper_case_extensions(tmp_path)
    assert (tmp_path / "wfdb" / "A0002.DAT").is_file()

    reader = open_dataset(tmp_path / "wfdb")
    assert reader.records == ["A0001", "A0002"] and reader.orphans == []
    np.testing.assert_array_equal(reader.load_data("A0001"), sig)
    rec = reader.load_record("A0002")
    np.testing.assert_allclose(rec.signal, dat, atol=1e-6)
    assert rec.label_names == ["PAC"] and rec.source == str(tmp_path / "wfdb" / "A0002.HEA")
    icbeb = open_dataset(tmp_path / "icbeb")
    assert icbeb.load_record("A0003").label_names == ["STD"]
    np.testing.assert_array_equal(icbeb.load_data("A0003"), sig)


# ------------------------------------------------------------------------ real CPSC records


def test_real_reference_facts(reference_csv):
    ref = read_reference(reference_csv)
    y = np.stack([labels for labels, _ in ref.values()])
    assert len(ref) == 6877
    assert int((y.sum(1) >= 2).sum()) == 476
    assert all(not ignored for _, ignored in ref.values())


def test_real_wfdb_labels_match_reference(wfdb_sample, reference_csv):
    reader = open_dataset(wfdb_sample)
    assert reader.reference is None  # header labels only: no REFERENCE.csv under the sample
    ref = read_reference(reference_csv)
    assert len(reader.records) == 100
    for rec in reader.records:
        assert reader.load_ann(rec) == [CLASSES[i] for i in np.flatnonzero(ref[rec][0])], rec


def test_real_wfdb_signals_equal_raw_values(wfdb_sample):
    reader = open_dataset(wfdb_sample)
    for rec in reader.records:
        val = scipy.io.loadmat(wfdb_sample / f"{rec}.mat")["val"]
        sig = reader.load_data(rec)
        assert sig.shape == val.shape and sig.dtype == np.float32
        # Exactly the float32 nearest to val / gain.
        np.testing.assert_array_equal(sig, (val / 1000.0).astype(np.float32))


def test_real_wfdb_signals_equal_wfdb_package(wfdb_sample):
    import wfdb

    reader = open_dataset(wfdb_sample)
    for rec in reader.records[::33]:
        ref = wfdb.rdrecord(str(wfdb_sample / rec))
        assert reader.load_record(rec).fs == ref.fs
        np.testing.assert_allclose(reader.load_data(rec), ref.p_signal.T, rtol=0, atol=1e-6)


def test_real_records_with_upper_case_extensions(wfdb_sample, tmp_path):
    for rec in ("A0001", "A0002", "A0003"):
        for ext in ("hea", "mat"):
            (tmp_path / f"{rec}.{ext.upper()}").symlink_to(wfdb_sample / f"{rec}.{ext}")
    reader, real = open_dataset(tmp_path), open_dataset(wfdb_sample)
    assert reader.records == ["A0001", "A0002", "A0003"] and reader.orphans == []
    for rec in reader.records:
        np.testing.assert_array_equal(reader.load_data(rec), real.load_data(rec))
        assert reader.load_ann(rec) == real.load_ann(rec)


def test_real_snomed_records(snomed_sample):
    reader = open_dataset(snomed_sample)
    for rec in reader.records:
        codes = [c for c in parse_header(reader.path_of(rec)).comments["Dx"].split(",")]
        known = sorted({SNOMED_CODES[c] for c in codes if c in SNOMED_CODES},
                       key=CLASSES.index)
        unknown = [c for c in codes if c not in SNOMED_CODES]
        if known:
            record = reader.load_record(rec)
            assert record.label_names == known and record.ignored_codes == unknown
            assert record.signal.shape[0] == 12
        else:
            with pytest.raises(RecordError, match="none of the nine classes"):
                reader.load_record(rec)
    assert reader.load_ann("A5432") == ["PAC"]  # the one CPSC record, documented as PAC


# ------------------------------------------------------------------------------ registry


def test_a_new_layout_is_one_class_and_one_registry_line(tmp_path, monkeypatch):
    from xecg.data.readers import READERS, DatasetReader, RawRecord, registry

    class NpyReader(DatasetReader):
        """A toy layout: ``rec.npy`` holding 12 x N float32 mV, every record AF."""

        layout = "npy"
        suffixes = (".npy",)

        @classmethod
        def claims(cls, path):
            return path.suffix == ".npy"

        def sampling_rate(self, rec):
            return 250.0

        def _tokens(self, rec):
            return ["AF"]

        def _read(self, rec):
            return RawRecord(np.load(self.path_of(rec)), 250.0, None, None, ["AF"])

    sig = make_signal(300)
    np.save(tmp_path / "R1.npy", sig)
    with pytest.raises(DatasetError, match="no ECG records found"):
        open_dataset(tmp_path)
    monkeypatch.setattr(registry, "READERS", [*READERS, NpyReader])
    reader = open_dataset(tmp_path)
    assert isinstance(reader, NpyReader) and reader.records == ["R1"]
    rec = reader.load_record("R1")
    np.testing.assert_array_equal(rec.signal, sig)
    assert rec.label_names == ["AF"] and rec.fs == 250
