"""Synthetic CPSC-like data: determinism, label and duration statistics, the class signatures as
measured from the signals, evidence intervals, and the store it writes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import find_peaks

from xecg.classes import CLASS_INDEX, CLASSES, LEADS, multi_hot
from xecg.cli import main
from xecg.data.store import Store, StoreError
from xecg.data.synthetic import (
    GENERATOR_VERSION,
    make_synthetic_store,
    sample_duration,
    sample_labels,
    synth_record,
)

FS = 500.0
CROP = 2880  # training crop length (samples)
LEAD = {name: i for i, name in enumerate(LEADS)}
# CPSC 2018 training-set class counts (REFERENCE.csv) and record count.
CPSC_COUNTS = {"Normal": 918, "AF": 1098, "I-AVB": 704, "LBBB": 207, "RBBB": 1695, "PAC": 556,
               "PVC": 672, "STD": 825, "STE": 202}
CPSC_RECORDS = 6877


def clean(labels, index=0, seconds=8.0, seed=11):
    """Noise-free record with the given labels."""
    return synth_record(seed, index, labels=labels, duration_s=seconds, noise=False)


def slope(x: np.ndarray) -> np.ndarray:
    """Summed absolute slope of all leads (mV per sample), smoothed over 20 ms: high in a QRS."""
    a = np.abs(np.diff(x, axis=1, prepend=x[:, :1])).sum(0)
    k = int(0.02 * FS)
    return np.convolve(a, np.ones(k) / k, mode="same")


def r_peaks(x: np.ndarray) -> np.ndarray:
    """QRS locations in a noise-free ``12 x N`` signal: peaks of the summed slope."""
    a = slope(x)
    return find_peaks(a, height=0.3 * a.max(), distance=int(0.3 * FS))[0]


def j_points(x: np.ndarray) -> list[int]:
    """QRS ends where the ST segment may be shifted: the slope falls below 10% of its peak, or,
    where a steep ST segment keeps it above that (a small QRS with a large ST-T), the slope's
    lowest point within 120 ms of the peak."""
    a = slope(x)
    out = []
    for p in r_peaks(x):
        window = a[p:p + int(0.12 * FS)]
        after = np.flatnonzero(window < 0.1 * a[p])
        if len(after):
            out.append(int(p + after[0]))
        elif len(window) == int(0.12 * FS):  # not cut off by the record's end
            out.append(int(p + np.argmin(window)))
    return out


def qrs_bounds(x: np.ndarray, frac: float = 0.1) -> list[tuple[int, int]]:
    """(onset, end) of each QRS of a noise-free signal: the nearest samples around each R peak
    where the summed slope falls below ``frac`` of its peak (the flat PR segment and the slow ST
    segment, which may sit slightly off zero: normal J-point elevation)."""
    a = slope(x)
    out = []
    for p in r_peaks(x):
        before, after = np.flatnonzero(a[:p] < frac * a[p]), np.flatnonzero(a[p:] < frac * a[p])
        if len(before) and len(after):
            out.append((int(before[-1]), int(after[0] + p)))
    return out


def intervals(record, label, whole=False):
    """Evidence spans of ``label``; ``whole``: only those not clipped at the record's edges."""
    return [(a, b) for lab, a, b in record.evidence
            if lab == label and (not whole or 0 < a and b < record.length)]


def largest_gap(spans, n):
    """Longest stretch of ``[0, n)`` that no span touches."""
    edges = [0] + [v for a, b in sorted(spans) for v in (a, b)] + [n]
    return max(edges[i + 1] - edges[i] for i in range(0, len(edges), 2))


# --------------------------------------------------------------------------------------------
# Determinism, format.

def test_same_seed_and_index_give_identical_records():
    a, b = synth_record(3, 5), synth_record(3, 5)
    assert np.array_equal(a.signal, b.signal)
    assert np.array_equal(a.labels, b.labels) and a.evidence == b.evidence
    c = synth_record(4, 5)
    assert a.signal.shape != c.signal.shape or not np.allclose(a.signal, c.signal)


def test_record_format():
    for i in range(6):
        r = synth_record(0, i)
        assert r.id == f"S{i:06d}" and r.source == "synthetic" and r.fs == FS
        assert r.signal.dtype == np.float32 and r.signal.shape[0] == len(LEADS)
        assert np.isfinite(r.signal).all()
        assert 0.3 < np.ptp(r.signal, axis=1).max() < 8.0  # millivolts
        assert r.labels.shape == (len(CLASSES),) and r.labels.sum() >= 1
    assert synth_record(0, 0, duration_s=7.0).length == 3500
    assert synth_record(0, 0, duration_s=7.0, fs=250.0).length == 1750
    assert all(6 * FS <= synth_record(0, i, durations=(6, 8)).length <= 8 * FS for i in range(5))


def test_noise_is_added_on_top_of_the_same_heart():
    noisy, quiet = synth_record(2, 1), synth_record(2, 1, noise=False)
    assert noisy.evidence == quiet.evidence
    diff = noisy.signal - quiet.signal
    assert 0.003 < diff.std() < 0.5


def test_limb_leads_obey_einthoven():
    x = synth_record(0, 3).signal.astype(np.float64)
    i, ii = x[LEAD["I"]], x[LEAD["II"]]
    np.testing.assert_allclose(x[LEAD["III"]], ii - i, atol=1e-4)
    np.testing.assert_allclose(x[LEAD["aVR"]], -(i + ii) / 2, atol=1e-4)
    np.testing.assert_allclose(x[LEAD["aVL"]], i - ii / 2, atol=1e-4)
    np.testing.assert_allclose(x[LEAD["aVF"]], ii - i / 2, atol=1e-4)


def test_bad_labels_and_durations_are_refused():
    for labels in (["Normal", "AF"], ["AF", "PAC"], ["LBBB", "RBBB"], ["Flutter"], []):
        with pytest.raises(ValueError):
            synth_record(0, 0, labels=labels, duration_s=6)
    with pytest.raises(ValueError, match="at least 2 s"):
        synth_record(0, 0, labels=["AF"], duration_s=1.0)


# --------------------------------------------------------------------------------------------
# Label and duration statistics.

def test_label_sets_follow_cpsc_rates():
    rng = np.random.default_rng(0)
    sets = [sample_labels(rng) for _ in range(4000)]
    y = np.array([multi_hot(s) for s in sets])
    assert not any("Normal" in s and len(s) > 1 for s in sets)
    assert 0.055 < (y.sum(1) >= 2).mean() < 0.085  # CPSC: 476 / 6877 = 6.9%
    assert (y.sum(1) == 3).sum() >= 1
    rates = y.mean(0)
    for name, count in CPSC_COUNTS.items():
        assert rates[CLASS_INDEX[name]] == pytest.approx(count / CPSC_RECORDS, rel=0.2, abs=0.01)
    pairs = {tuple(s) for s in sets if len(s) == 2}
    assert ("AF", "RBBB") in pairs and ("PVC", "STD") in pairs


def test_balanced_labels_cover_classes_evenly():
    rng = np.random.default_rng(1)
    y = np.array([multi_hot(sample_labels(rng, balanced=True)) for _ in range(3000)])
    rates = y.mean(0)
    assert rates.min() > 0.09 and rates[CLASS_INDEX["Normal"]] == pytest.approx(1 / 9, abs=0.025)
    assert rates[CLASS_INDEX["STE"]] > 3 * CPSC_COUNTS["STE"] / CPSC_RECORDS


def test_durations_are_cpsc_like():
    rng = np.random.default_rng(0)
    d = np.array([sample_duration(rng) for _ in range(3000)])
    assert d.min() >= 6.0 and d.max() <= 60.0
    assert 11.0 < np.median(d) < 13.5
    assert 0.25 < (d == 10.0).mean() < 0.4 and (d > 30).mean() > 0.03
    d = np.array([sample_duration(rng, (6.0, 9.0)) for _ in range(200)])
    assert d.min() >= 6.0 and d.max() <= 9.0 and d.std() > 0.5


# --------------------------------------------------------------------------------------------
# Class signatures, measured on noise-free signals.

def qrs_ms(record):
    return 1000 * np.median([b - a for a, b in qrs_bounds(record.signal)]) / FS


def test_bundle_branch_blocks_widen_the_qrs():
    for i in range(5):
        assert qrs_ms(clean(["Normal"], i)) < 110
        assert qrs_ms(clean(["I-AVB"], i)) < 110
        assert qrs_ms(clean(["RBBB"], i)) >= 120
        assert qrs_ms(clean(["LBBB"], i)) >= 120


def test_bundle_branch_block_lead_shapes():
    for i in range(4):
        r = clean(["RBBB"], i)
        for a, b in qrs_bounds(r.signal)[:3]:
            qrs = r.signal[:, a:b]
            late = slice(2 * qrs.shape[1] // 3, None)
            assert qrs[LEAD["V1"], late].max() > 0.1  # R' in V1
            assert qrs[LEAD["V1"], late].max() > -qrs[LEAD["V1"], late].min()
            assert qrs[LEAD["I"], late].min() < -0.05  # wide terminal S in I
        r = clean(["LBBB"], i)
        for a, b in qrs_bounds(r.signal)[:3]:
            qrs = r.signal[:, a:b]
            v1, v6 = qrs[LEAD["V1"]], qrs[LEAD["V6"]]
            assert -v1.min() > 3 * max(v1.max(), 0.02)  # QS in V1
            assert v6.max() > 3 * max(-v6.min(), 0.02)  # broad R in V6, no q


def pr_ms(record):
    """Median P onset to QRS onset (ms): walking back from each QRS, past its first few
    microvolts and the flat PR segment, the next bump is the P wave (beats where that bump runs
    into the T wave are left out)."""
    quiet = np.abs(record.signal).max(0) < 0.02
    prs = []
    for onset, _ in qrs_bounds(record.signal):
        k = onset
        while k > 0 and not quiet[k]:
            k -= 1
        while k > 0 and quiet[k]:
            k -= 1
        p_end = k
        while k > 0 and not quiet[k]:
            k -= 1
        if k > 0 and p_end - k < 0.13 * FS:
            prs.append(onset - k)
    assert len(prs) >= 3
    return 1000 * np.median(prs) / FS


def test_first_degree_block_lengthens_pr():
    for i in range(5):
        assert pr_ms(clean(["I-AVB"], i)) > 200
        assert pr_ms(clean(["Normal"], i)) < 200


def rr_cv(record):
    rr = np.diff(r_peaks(record.signal))
    return rr.std() / rr.mean()


def test_af_rhythm_is_irregular_and_sinus_is_not():
    af = [rr_cv(clean(["AF"], i, seconds=20)) for i in range(5)]
    normal = [rr_cv(clean(["Normal"], i, seconds=20)) for i in range(5)]
    assert min(af) > 0.1 and max(normal) < 0.06
    assert min(af) > 3 * max(normal)


def test_af_has_fibrillatory_waves_instead_of_p_waves():
    """In V1 between T wave and next QRS, AF oscillates mostly at 4-9 Hz; sinus rhythm holds
    only the slower P wave and T tail there."""
    def band_share(labels, i):
        r = clean(labels, i, seconds=20)
        x = r.signal[LEAD["V1"]]
        peaks = r_peaks(r.signal)
        spans = [x[a + int(0.45 * FS):b - int(0.05 * FS)] for a, b in zip(peaks, peaks[1:])]
        f = np.concatenate([s - s.mean() for s in spans if len(s) > 0.1 * FS])
        power = np.abs(np.fft.rfft(f)) ** 2
        freqs = np.fft.rfftfreq(len(f), 1 / FS)
        return f.std(), power[(freqs >= 4) & (freqs <= 9)].sum() / power[freqs > 1].sum()

    for i in range(3):
        size, share = band_share(["AF"], i)
        assert size > 0.02 and share > 0.6
        assert band_share(["Normal"], i)[1] < 0.55


def st_levels(record):
    """Per-lead ST level (mV) 20-40 ms after the J point, averaged over beats that follow an RR of
    at least 0.6 s (faster, and the T wave starts at the J point: no ST segment to measure);
    None if the record has fewer than three such beats."""
    x = record.signal
    js = np.array(j_points(x))
    slow = np.diff(js, prepend=js[0] - FS) >= 0.6 * FS
    levels = [x[:, j + 10:j + 20].mean(1) for j in js[slow] if j + 20 <= record.length]
    return np.mean(levels, axis=0) if len(levels) >= 3 else None


def test_st_segments_shift_in_the_labelled_direction():
    """STD (STE): at least two leads (a territory) 0.1 mV below (above) baseline; Normal: none."""
    measured = 0
    for i in range(8):
        std, ste, normal = (st_levels(clean([label], i)) for label in ("STD", "STE", "Normal"))
        if std is not None:
            assert (std < -0.1).sum() >= 2
        if ste is not None:
            assert (ste > 0.1).sum() >= 2
        if normal is not None:
            assert np.abs(normal).max() < 0.1
        measured += (std is not None) + (ste is not None) + (normal is not None)
    assert measured >= 18


def test_ectopic_beats_are_premature():
    """Coupling intervals are at most 85% (PAC) and 80% (PVC) of the sinus RR; measured between R
    peaks, which sit later in a wide PVC than in a sinus QRS, they stay under 93%."""
    for label in ("PAC", "PVC"):
        for i in range(4):
            r = clean([label], i, seconds=15)
            peaks = r_peaks(r.signal)
            ectopic = np.array([any(a <= p < b for a, b in intervals(r, label)) for p in peaks])
            rr = np.diff(peaks)
            sinus_rr = rr[~ectopic[1:] & ~ectopic[:-1]]
            before = rr[ectopic[1:]]
            assert ectopic.sum() >= 2 and len(sinus_rr) >= 1
            assert (before < 0.93 * np.median(sinus_rr)).all()


def test_pvcs_are_wide():
    """110-120 ms after a PVC's onset the heart vector is still large: a wide QRS."""
    for i in range(4):
        r = clean(["PVC"], i, seconds=15)
        spans = intervals(r, "PVC", whole=True)
        assert len(spans) >= 2
        for a, _ in spans:
            assert np.abs(r.signal[:, a + int(0.11 * FS):a + int(0.12 * FS)]).max() > 0.15


# --------------------------------------------------------------------------------------------
# Evidence.

@pytest.mark.parametrize("balanced", [False, True])
def test_evidence_matches_labels(balanced):
    for i in range(40):
        r = synth_record(5, i, durations=(6, 14), balanced=balanced)
        labels = set(r.label_names)
        assert labels == {lab for lab, _, _ in r.evidence}
        assert all(0 <= a < b <= r.length for _, a, b in r.evidence)
        for whole in labels & {"AF", "Normal"}:
            assert intervals(r, whole) == [(0, r.length)]


@pytest.mark.parametrize("labels", [["PAC"], ["PVC"], ["PAC", "PVC"], ["AF", "PVC"],
                                    ["PAC", "RBBB", "STE"], ["I-AVB", "PVC"]])
def test_every_training_crop_holds_an_ectopic_beat(labels):
    for i, seconds in enumerate((6.0, 12.0, 30.0, 60.0, 20.0, 45.0)):
        r = synth_record(9, i, labels=labels, duration_s=seconds)
        for label in set(labels) & {"PAC", "PVC"}:
            assert largest_gap(intervals(r, label), r.length) < CROP, (label, i)


def nearest(points, x):
    return min(points, key=lambda p: abs(p - x))


def test_per_beat_evidence_sits_on_the_beats():
    """QRS spans (BBB) and PR spans (I-AVB) start/end at the measured QRS onsets and ends; ST
    spans (STD/STE) start at the measured J points."""
    for i in range(3):
        r = clean(["I-AVB", "RBBB"], i, seconds=10)
        bounds = qrs_bounds(r.signal)
        onsets, ends = [a for a, _ in bounds], [b for _, b in bounds]
        assert len(intervals(r, "RBBB")) >= len(bounds) >= 5
        for a, b in intervals(r, "RBBB", whole=True):
            assert abs(a - nearest(onsets, a)) <= 5 and abs(b - nearest(ends, b)) <= 10
        for a, b in intervals(r, "I-AVB", whole=True):
            assert abs(b - nearest(onsets, b)) <= 5 and b - a > 0.2 * FS
        for label in ("STD", "STE"):
            r = clean([label], i, seconds=10)
            js = j_points(r.signal)
            assert len(intervals(r, label)) >= len(js) >= 5
            assert all(abs(a - nearest(js, a)) <= 10 for a, _ in intervals(r, label, whole=True))


# --------------------------------------------------------------------------------------------
# Store.

def test_store_round_trip_prefix_and_reuse(tmp_path, capsys):
    out = tmp_path / "synth"
    make_synthetic_store(out, n=6, seed=1, durations=(6, 7), progress=False)
    text = capsys.readouterr().out
    assert "6 synthetic records" in text and "multilabel" in text
    store = Store(out)
    assert len(store) == 6 and store.ids[0] == "S000000" and store.fs == FS
    assert f"v{GENERATOR_VERSION}" in store.meta["fingerprint"]
    for i in range(6):
        want, got = synth_record(1, i, durations=(6, 7)), store.record(i)
        assert np.array_equal(got.signal, want.signal)
        assert np.array_equal(got.labels, want.labels)
        assert got.evidence == want.evidence and got.source == "synthetic"

    # Same options: reused, not rewritten.
    stamp = (out / "meta.json").stat().st_mtime_ns
    make_synthetic_store(out, n=6, seed=1, durations=(6, 7), progress=False)
    assert "reusing" in capsys.readouterr().out
    assert (out / "meta.json").stat().st_mtime_ns == stamp

    # More records, same seed: the first six are unchanged.
    make_synthetic_store(out, n=9, seed=1, durations=(6, 7), progress=False)
    bigger = Store(out)
    assert len(bigger) == 9
    n = 12 * int(store.offsets[-1] + store.lengths[-1])
    assert np.array_equal(np.asarray(bigger.signals[:n]),
                          np.asarray(store.signals))
    make_synthetic_store(out, n=9, seed=1, durations=(6, 7), progress=False, force=True)
    assert "reusing" not in capsys.readouterr().out


def test_store_will_not_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not an xecg store"):
        make_synthetic_store(tmp_path / "mine", n=2, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_cli_prepare_synthetic(tmp_path):
    out = tmp_path / "store"
    assert main(["prepare", "synthetic", "--n", "20", "--seed", "0", "--out", str(out)]) == 0
    store = Store(out)
    assert len(store) == 20 and store.meta["source"] == "synthetic"
    assert store.labels.sum(1).min() >= 1
    assert set(store.evidence) == set(store.ids)


# --------------------------------------------------------------------------------------------
# Version 2: Dower projection, clinical timings and the ectopic beats' atrial activity.

def test_generator_version_is_bumped():
    """Version 2 changed the signals (Dower leads, timings, nuisance): stores must be remade."""
    assert GENERATOR_VERSION >= 2


def test_dower_projection_shapes():
    from xecg.data.synthetic import DOWER, MAX_ROTATION_DEG, _lead_matrix, subject_lead_matrix

    assert DOWER.shape == (8, 3)
    nominal = _lead_matrix()
    assert nominal.shape == (len(LEADS), 3)
    flip = np.array([1.0, 1.0, -1.0])  # xecg's z is anterior, Frank's Z posterior
    for k, name in enumerate(("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")):
        np.testing.assert_allclose(nominal[LEAD[name]], DOWER[k] * flip)
    rng = np.random.default_rng(0)
    for m in (nominal, *(subject_lead_matrix(rng) for _ in range(20))):
        i, ii = m[LEAD["I"]], m[LEAD["II"]]
        np.testing.assert_allclose(m[LEAD["III"]], ii - i, atol=1e-12)
        np.testing.assert_allclose(m[LEAD["aVR"]], -(i + ii) / 2, atol=1e-12)
        np.testing.assert_allclose(m[LEAD["aVL"]], i - ii / 2, atol=1e-12)
        np.testing.assert_allclose(m[LEAD["aVF"]], ii - i / 2, atol=1e-12)
    # Subjects differ (rotation, gains, jitter) but stay near Dower's rows: a lead's direction
    # moves by at most the 3-D rotation (30 degrees per axis) plus jitter.
    subjects = [subject_lead_matrix(rng) for _ in range(200)]
    cos = [np.dot(s[LEAD["V2"]], nominal[LEAD["V2"]])
           / np.linalg.norm(s[LEAD["V2"]]) / np.linalg.norm(nominal[LEAD["V2"]]) for s in subjects]
    assert np.degrees(np.arccos(np.min(cos))) < 3 * MAX_ROTATION_DEG
    assert np.degrees(np.arccos(np.median(cos))) > 5
    # Dower's chest leads are larger than the limb leads: so are the records' QRS complexes.
    ptp = np.array([np.ptp(clean(["Normal"], i, seconds=4).signal, axis=1) for i in range(12)])
    chest = ptp[:, [LEAD[v] for v in ("V2", "V3", "V4")]].mean(1)
    assert np.median(chest / ptp[:, LEAD["I"]]) > 1.3


def test_af_f_waves_band_size_and_v1():
    """f-waves alone: 4-9 Hz, 15-70 uV RMS in V1, which shows them most."""
    from xecg.data.synthetic import _f_waves, subject_lead_matrix

    t = np.arange(int(20 * FS)) / FS
    for seed in range(6):
        rng = np.random.default_rng(seed)
        f = _f_waves(rng, t, FS, subject_lead_matrix(rng))
        v1 = f[LEAD["V1"]]
        assert 0.015 <= np.sqrt(np.mean(v1**2)) <= 0.07
        power = np.abs(np.fft.rfft(v1)) ** 2
        freqs = np.fft.rfftfreq(len(v1), 1 / FS)
        assert power[(freqs >= 4) & (freqs <= 9)].sum() > 0.85 * power.sum()
        rms = np.sqrt(np.mean(f**2, axis=1))
        assert rms.argmax() == LEAD["V1"]
        np.testing.assert_allclose(f[LEAD["III"]], f[LEAD["II"]] - f[LEAD["I"]], atol=1e-12)


def test_af_rr_variability_is_clinical():
    cv = [rr_cv(clean(["AF"], i, seconds=30)) for i in range(8)]
    assert min(cv) > 0.1 and max(cv) < 0.42 and np.median(cv) > 0.15


def test_first_degree_block_pr_range():
    """I-AVB: PR 210-400 ms; otherwise 120-200 ms (measured, so with a little slack)."""
    avb = [pr_ms(clean(["I-AVB"], i)) for i in range(8)]
    normal = [pr_ms(clean(["Normal"], i)) for i in range(8)]
    assert 195 < min(avb) and max(avb) < 420 and max(avb) - min(avb) > 40
    assert 100 < min(normal) and max(normal) < 205


def atrial_activity(labels, index, seconds=15.0, seed=11):
    """(record, its P waves alone ``12 x N``): the noise-free record drawn twice from the same
    random state, with and without its P waves (sinus and ectopic)."""
    from xecg.data import synthetic as syn

    found = set(labels)
    _, rng, _ = np.random.default_rng([seed, index]).spawn(3)
    heart = syn._Heart(rng, found)
    rhythm = syn._rhythm(rng, heart, found, seconds)
    state = rng.bit_generator.state
    n = int(seconds * FS)
    full, _ = syn._draw(rng, heart, rhythm, found, FS, n)
    rng.bit_generator.state = state
    heart.p, heart.p_ectopic = heart.p.scaled(0.0), heart.p_ectopic.scaled(0.0)
    no_p, _ = syn._draw(rng, heart, rhythm, found, FS, n)
    return clean(labels, index, seconds, seed), np.abs(full - no_p).max(0)


def test_pvcs_have_no_p_wave_and_pacs_an_ectopic_one():
    for i in range(4):
        r, atrial = atrial_activity(["PVC"], i)
        spans = intervals(r, "PVC", whole=True)
        assert len(spans) >= 2
        for a, _ in spans:  # nothing atrial from 400 ms before the PVC to its QRS end
            assert atrial[max(0, a - int(0.4 * FS)):a + int(0.1 * FS)].max() < 1e-6
        assert atrial.max() > 0.03  # the sinus beats have their P waves
        r, atrial = atrial_activity(["PAC"], i)
        for a, _ in intervals(r, "PAC", whole=True):  # the evidence starts at the ectopic P
            assert atrial[a:a + int(0.1 * FS)].max() > 0.03
            assert atrial[a - int(0.015 * FS)] < 0.2 * atrial[a:a + int(0.1 * FS)].max()


def pause_ratios(record, label):
    """For each ectopic beat between sinus beats: (R-R interval around it) / (2 x sinus RR)."""
    peaks = r_peaks(record.signal)
    ectopic = np.array([any(a <= p < b for a, b in intervals(record, label)) for p in peaks])
    rr = np.diff(peaks)
    sinus_rr = np.median(rr[~ectopic[1:] & ~ectopic[:-1]])
    return [(peaks[k + 1] - peaks[k - 1]) / (2 * sinus_rr) for k in range(1, len(peaks) - 1)
            if ectopic[k] and not ectopic[k - 1] and not ectopic[k + 1]]


def test_compensatory_pause_after_pvc_but_not_after_pac():
    """PVC: the sinus node is not reset, so the beats around a PVC are two sinus RRs apart (full
    compensatory pause); PAC: it is reset, so they come sooner (non-compensatory)."""
    for i in range(4):
        pvc = pause_ratios(clean(["PVC"], i, seconds=20), "PVC")
        pac = pause_ratios(clean(["PAC"], i, seconds=20), "PAC")
        assert pvc and pac
        assert all(0.93 < x < 1.07 for x in pvc), pvc  # respiratory arrhythmia: +-4%
        assert np.mean(pac) < 0.95 and max(pac) < 1.0, pac


def test_lbbb_and_pvc_evidence_sits_on_their_qrs():
    for i in range(3):
        r = clean(["LBBB"], i, seconds=10)
        spans = intervals(r, "LBBB")
        for a, b in qrs_bounds(r.signal):  # each measured QRS has its evidence span
            start, end = min(spans, key=lambda s: abs(s[0] - a))
            assert abs(start - a) <= 6 and abs(end - b) <= 12
        r = clean(["PVC"], i, seconds=10)
        a_ = slope(r.signal)
        for a, b in intervals(r, "PVC", whole=True):  # the slope takes off at the span's start
            peak = a_[a:b].max()
            assert a_[a - 3] < 0.2 * peak and a_[a:a + int(0.03 * FS)].max() > 0.3 * peak
            assert b - a > 0.3 * FS
