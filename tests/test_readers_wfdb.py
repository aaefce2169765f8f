"""Readers agree with ``wfdb.rdrecord``: on every shared real record, and on random valid records
that wfdb writes (formats 16, 24, 32, 80, 212, FLAC 516, and the Challenge MATLAB v4 layout, also
re-saved as MATLAB v5, compressed v7 or v4 doubles),
with random gains, baselines, units, lead orders and lengths. Samples holding a format's invalid
value (wfdb: NaN) make a record a RecordError rather than -32.768 mV spikes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from fixtures import wfdb_checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from xecg.classes import LEADS
from xecg.data.readers import open_dataset
from xecg.data.readers.header import FORMATS, MV_PER_UNIT
from xecg.data.record import RecordError

wfdb = pytest.importorskip("wfdb")

#: Formats wfdb.wrsamp writes; "mat" is the Challenge layout (int16 MATLAB v4, fmt 16), and the
#: others starting "mat" the same samples as MATLAB's save or scipy's default write them.
MAT_SAVES = {"mat": dict(format="4"), "mat-v5": {}, "mat-v7z": dict(do_compression=True),
             "mat-double": dict(format="4", dtype=np.float64)}
WRITTEN = ["16", "24", "32", "80", "212", "516", *MAT_SAVES]
UNITS = ["mV", "uV", "V"]


def _assert_same(xecg_mv: np.ndarray, record, order: list[int]) -> None:
    """xecg's ``12 x N`` mV equals wfdb's physical signal (in its units, leads as written) at
    float32 precision."""
    mv = record.p_signal * np.array([MV_PER_UNIT[u.lower()] for u in record.units])
    expected = mv[:, order].T
    assert xecg_mv.shape == expected.shape and xecg_mv.dtype == np.float32
    np.testing.assert_allclose(xecg_mv, expected, rtol=1e-6, atol=1e-30)


# ------------------------------------------------------------------------ real records


@pytest.mark.parametrize("sample", ["wfdb_sample", "snomed_sample"])
def test_every_real_record_equals_wfdb(sample, request):
    folder = request.getfixturevalue(sample)
    reader = open_dataset(folder)
    assert len(reader.records) == {"wfdb_sample": 100, "snomed_sample": 9}[sample]
    for rec in reader.records:
        ref = wfdb.rdrecord(str(folder / rec))
        assert reader.sampling_rate(rec) == ref.fs
        order = [[n.upper() for n in ref.sig_name].index(lead.upper()) for lead in LEADS]
        _assert_same(reader.load_data(rec), ref, order)


@pytest.mark.parametrize("fmt", [f for f in MAT_SAVES if f != "mat"])
def test_real_records_resaved_in_another_matlab_format_read_the_same(wfdb_sample, tmp_path, fmt):
    """The shared records' ``val`` re-saved as MATLAB's save or scipy's default writes it, next
    to their unchanged headers: the same samples, where they used to be refused."""
    originals = sorted(wfdb_sample.glob("*.hea"))[:10]
    for hea in originals:
        (tmp_path / hea.name).write_bytes(hea.read_bytes())
        save = dict(MAT_SAVES[fmt])
        val = scipy.io.loadmat(hea.with_suffix(".mat"))["val"].astype(save.pop("dtype", np.int16))
        scipy.io.savemat(tmp_path / f"{hea.stem}.mat", {"val": val}, **save)
    before, after = open_dataset(wfdb_sample), open_dataset(tmp_path)
    for hea in originals:
        np.testing.assert_array_equal(after.load_data(hea.stem), before.load_data(hea.stem))
        assert after.load_record(hea.stem).label_names == before.load_record(hea.stem).label_names


# --------------------------------------------------------------------- random records


def _write(folder: Path, rec: str, digital: np.ndarray, fmt: str, gains: list[float],
           baselines: list[int], units: str, names: list[str]) -> None:
    """Write ``digital`` (N x 12) as a WFDB record: wfdb.wrsamp, or the Challenge .mat layout."""
    if fmt not in MAT_SAVES:
        wfdb.wrsamp(rec, fs=500, units=[units] * 12, sig_name=names, d_signal=digital,
                    fmt=[fmt] * 12, adc_gain=gains, baseline=baselines,
                    comments=["Dx: AF"], write_dir=str(folder))
        return
    save = dict(MAT_SAVES[fmt])
    val = digital.T.astype(save.pop("dtype", np.int16))
    scipy.io.savemat(folder / f"{rec}.mat", {"val": val}, **save)
    sums = wfdb_checksum(digital.T)
    lines = [f"{rec} 12 500 {len(digital)}"]
    lines += [f"{rec}.mat 16+24 {g!r}({b})/{units} 16 0 {int(digital[0, i])} {int(sums[i])} 0 "
              f"{names[i]}" for i, (g, b) in enumerate(zip(gains, baselines))]
    (folder / f"{rec}.hea").write_text("\n".join([*lines, "#Dx: AF"]) + "\n")


@st.composite
def records(draw):
    """A valid random record: format, units, length, lead order, per-lead gain and baseline,
    samples within ±10 mV of the baseline; sometimes some samples at the invalid value."""
    fmt = draw(st.sampled_from(WRITTEN))
    units = draw(st.sampled_from(UNITS))
    n = draw(st.integers(2, 400))  # one sample is flat (every lead constant): refused
    shuffle = draw(st.booleans())
    n_invalid = draw(st.sampled_from([0, 0, 0, 1, 5]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    spec = FORMATS["16" if fmt in MAT_SAVES else fmt]
    lo, hi = -(2 ** (spec.bits - 1)), 2 ** (spec.bits - 1) - 1
    # Counts per mV such that ±10 mV spans at most a quarter of the range; baselines within
    # another quarter.
    per_mv = np.exp(rng.uniform(np.log(0.5), np.log(hi / 40), 12))
    baselines = rng.integers(lo // 4, hi // 4, 12, endpoint=True)
    mv = rng.uniform(-10, 10, (n, 12))
    digital = np.clip(np.round(mv * per_mv) + baselines, lo + 1, hi).astype(np.int64)
    if n_invalid:
        flat = digital.reshape(-1)
        flat[rng.choice(flat.size, min(n_invalid, flat.size), replace=False)] = spec.invalid
    gains = [float(f"{g:.6g}") for g in per_mv * MV_PER_UNIT[units.lower()]]  # counts/unit
    names = list(LEADS)
    if shuffle:
        names = [names[i] for i in rng.permutation(12)]
    return fmt, units, digital, gains, [int(b) for b in baselines], names


@settings(max_examples=40, deadline=None)
@given(records())
def test_random_records_equal_wfdb(case):
    fmt, units, digital, gains, baselines, names = case
    with tempfile.TemporaryDirectory() as tmp:
        folder, written = Path(tmp) / "xecg", Path(tmp) / "wfdb"
        folder.mkdir(), written.mkdir()
        _write(folder, "R1", digital, fmt, gains, baselines, units, names)
        # wfdb reads the Challenge layout only: the reference for its re-saved copies
        _write(written, "R1", digital, "mat" if fmt in MAT_SAVES else fmt, gains, baselines,
               units, names)
        ref = wfdb.rdrecord(str(written / "R1"))
        reader = open_dataset(folder)
        invalid = int(np.isnan(ref.p_signal).sum())
        if invalid:
            with pytest.raises(RecordError, match=f"invalid samples: {invalid} samples"):
                reader.load_record("R1")
            return
        _assert_same(reader.load_data("R1"), ref, [names.index(lead) for lead in LEADS])
        assert reader.load_record("R1").label_names == ["AF"]


@pytest.mark.parametrize("fmt", ["mat", "mat-v5", "16", "212"])
def test_invalid_samples_skip_the_record(tmp_path, fmt):
    # wfdb reads the format's invalid value as NaN; xecg skips the record, naming the file and
    # how many samples are missing, instead of reading -32.768 mV (fmt 16 at 1000/mV).
    digital = np.zeros((100, 12), dtype=np.int64)
    digital[[3, 50, 99], [0, 5, 11]] = FORMATS["16" if fmt in MAT_SAVES else fmt].invalid
    _write(tmp_path, "R1", digital, fmt, [1000.0] * 12, [0] * 12, "mV", list(LEADS))
    if fmt != "mat-v5":  # which wfdb does not read
        assert np.isnan(wfdb.rdrecord(str(tmp_path / "R1")).p_signal).sum() == 3
    with pytest.raises(RecordError) as err:
        open_dataset(tmp_path).load_record("R1")
    data_file = "R1.mat" if fmt in MAT_SAVES else "R1.dat"
    assert err.value.path == str(tmp_path / data_file)
    assert err.value.problem.startswith("invalid samples: 3 samples hold the format's invalid "
                                        "value")
