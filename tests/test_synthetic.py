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
    DEFAULT_NUISANCE,
    GENERATOR_VERSION,
    NUISANCE_LEVELS,
    Realism,
    fingerprint,
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
    """QRS ends where the ST segment may be shifted: the slope falls below 10% of its peak."""
    a = slope(x)
    out = []
    for p in r_peaks(x):
        after = np.flatnonzero(a[p:] < 0.1 * a[p])
        if len(after):
            out.append(int(p + after[0]))
    return out


def qrs_bounds(x: np.ndarray, eps: float = 0.05) -> list[tuple[int, int]]:
    """(onset, end) of each QRS of a noise-free signal: the nearest samples around each R peak
    where every lead is within ``eps`` mV of zero (the isoelectric PR and ST segments)."""
    quiet = np.abs(x).max(0) < eps
    out = []
    for p in r_peaks(x):
        before, after = np.flatnonzero(quiet[:p]), np.flatnonzero(quiet[p:])
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


@pytest.mark.parametrize("nuisance", sorted(NUISANCE_LEVELS))
@pytest.mark.parametrize("index", [3, 7, 12])
def test_limb_leads_obey_einthoven(nuisance, index):
    x = synth_record(0, index, realism=Realism(nuisance=nuisance)).signal.astype(np.float64)
    i, ii = x[LEAD["I"]], x[LEAD["II"]]
    np.testing.assert_allclose(x[LEAD["III"]], ii - i, atol=1e-4)
    np.testing.assert_allclose(x[LEAD["aVR"]], -(i + ii) / 2, atol=1e-4)
    np.testing.assert_allclose(x[LEAD["aVL"]], i - ii / 2, atol=1e-4)
    np.testing.assert_allclose(x[LEAD["aVF"]], ii - i / 2, atol=1e-4)


def test_nuisance_levels():
    """"v1" (the default) keeps version 1's fingerprint; "wide" (version 3) varies the nuisance
    over an order of magnitude between records (same label sets; the evidence moves with its more
    variable heart rate)."""
    assert GENERATOR_VERSION == NUISANCE_LEVELS["wide"] == 3 and NUISANCE_LEVELS["v1"] == 1
    assert fingerprint(10, 0, FS, None, True, Realism("v1")) == (
        "synthetic v1 n=10 seed=0 fs=500 durations=cpsc balanced=True")
    assert DEFAULT_NUISANCE in NUISANCE_LEVELS
    assert fingerprint(10, 0, FS, None, True, Realism("wide")).startswith("synthetic v3 ")
    assert fingerprint(10, 0, FS, None, True, Realism("wide")).endswith("nuisance=wide")
    with pytest.raises(ValueError, match="nuisance"):
        synth_record(0, 0, realism=Realism(nuisance="loud"))
    spread = []
    for i in range(30):
        v1 = synth_record(1, i, realism=Realism(nuisance="v1"))
        wide = synth_record(1, i, realism=Realism(nuisance="wide"))
        assert np.array_equal(v1.labels, wide.labels) and v1.length == wide.length
        assert np.isfinite(wide.signal).all() and wide.signal.dtype == np.float32
        quiet = synth_record(1, i, noise=False, realism=Realism(nuisance="wide"))
        assert quiet.evidence == wide.evidence
        spread.append(np.abs(wide.signal - quiet.signal).mean())
    assert max(spread) > 8 * min(spread)


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
            # At fast rates the discordant ST-T runs into the QRS without a quiet sample; no
            # simulated LBBB QRS lasts over 170 ms.
            qrs = r.signal[:, a:min(b, a + int(0.17 * FS))]
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


def test_st_variety_raises_normal_st_in_v2_v3_and_keeps_the_evidence():
    """``st_variety``: records without an ST label get a J-point elevation in V2-V3 (largest there,
    less in V1 and V5-V6, never the 0.15 mV of a clear STE) on the same labels, timings and
    evidence; STE grows; off, the records are unchanged (v1's fingerprint)."""
    assert fingerprint(10, 0, FS, None, True, Realism(st_variety=False)) == fingerprint(
        10, 0, FS, None, True)
    assert fingerprint(10, 0, FS, None, True, Realism(st_variety=True)).endswith(" st_variety=True")
    v2v3 = [LEAD["V2"], LEAD["V3"]]
    rises, ste_gain = [], []
    for i in range(8):
        for labels in (["Normal"], ["AF"], ["PVC"], ["RBBB"], ["STE"]):
            off = synth_record(11, i, labels=labels, duration_s=8.0, noise=False)
            on = synth_record(11, i, labels=labels, duration_s=8.0, noise=False,
                              realism=Realism(st_variety=True))
            assert on.evidence == off.evidence and np.array_equal(on.labels, off.labels)
            noisy = synth_record(11, i, labels=labels, duration_s=8.0)
            plain = synth_record(11, i, labels=labels, duration_s=8.0,
                                 realism=Realism(st_variety=False))
            assert np.array_equal(noisy.signal, plain.signal)
            lo, hi = st_levels(off), st_levels(on)
            if lo is None or hi is None:
                continue
            if labels == ["STE"]:
                ste_gain.append(hi.max() - lo.max())
                continue
            rise = hi - lo
            assert 0.02 < rise[v2v3].min() and rise.max() < 0.25
            assert rise[v2v3].min() > rise[LEAD["V1"]] and rise[v2v3].min() > rise[LEAD["V6"]]
            assert np.abs(rise[:6]).max() < 0.04  # limb leads: only the varied T wave's upstroke
            rises.append(rise[v2v3].mean())
    assert len(rises) >= 20 and max(rises) > 0.12 and min(rises) < 0.1
    assert len(ste_gain) >= 4 and np.mean(ste_gain) > 0.05


def test_adult_lead_gains_give_textbook_qrs_amplitudes_and_keep_the_evidence():
    """``Realism(lead_gains="adult")``: a normal beat's R and S per lead near normal adults'
    medians (rS in V1-V2, transition at V3, tallest R in V4-V5), where v1's precordial QRS is
    about half as large; labels, timings and evidence unchanged, Einthoven's law kept; v1 is the
    default and keeps its fingerprint."""
    assert fingerprint(10, 0, FS, None, True) == fingerprint(10, 0, FS, None, True,
                                                              Realism("v1", False, "v1"))
    assert fingerprint(10, 0, FS, None, True,
                       Realism(lead_gains="adult")).endswith(" lead_gains=adult")
    with pytest.raises(ValueError, match="lead_gains must be one of"):
        synth_record(0, 0, realism=Realism(lead_gains="huge"))
    peaks = {"v1": [], "adult": []}
    for i in range(30):
        for gains in peaks:
            rec = synth_record(5, i, labels=["Normal"], duration_s=8.0, noise=False,
                               realism=Realism(lead_gains=gains))
            peaks[gains].append((np.percentile(rec.signal, 99.5, 1),
                                 np.percentile(rec.signal, 0.5, 1)))
        off = synth_record(5, i, labels=["RBBB"], duration_s=8.0, noise=False)
        on = synth_record(5, i, labels=["RBBB"], duration_s=8.0, noise=False,
                          realism=Realism(lead_gains="adult"))
        assert on.evidence == off.evidence and np.array_equal(on.labels, off.labels)
        s = on.signal
        np.testing.assert_allclose(s[LEAD["III"]], s[LEAD["II"]] - s[LEAD["I"]], atol=1e-5)
    r, s = (np.median([p[k] for p in peaks["adult"]], 0) for k in (0, 1))
    textbook_r = {"I": 0.65, "II": 0.8, "V3": 1.0, "V4": 1.4, "V5": 1.3, "V6": 1.0}
    textbook_s = {"V1": -0.9, "V2": -1.5, "V3": -1.1}
    for lead, mv in textbook_r.items():
        assert r[LEAD[lead]] == pytest.approx(mv, rel=0.25), lead
    for lead, mv in textbook_s.items():
        assert s[LEAD[lead]] == pytest.approx(mv, rel=0.25), lead
    assert -s[LEAD["V1"]] > 2 * r[LEAD["V1"]] and -s[LEAD["V2"]] > 1.5 * r[LEAD["V2"]]  # rS
    assert r[LEAD["V4"]] > -s[LEAD["V4"]]  # past the transition
    v1_s_v2 = np.median([p[1][LEAD["V2"]] for p in peaks["v1"]])
    assert v1_s_v2 > 0.6 * s[LEAD["V2"]]  # v1's S in V2 is much shallower


def test_ectopic_beats_are_premature():
    for label in ("PAC", "PVC"):
        for i in range(4):
            r = clean([label], i, seconds=15)
            peaks = r_peaks(r.signal)
            ectopic = np.array([any(a <= p < b for a, b in intervals(r, label)) for p in peaks])
            rr = np.diff(peaks)
            sinus_rr = rr[~ectopic[1:] & ~ectopic[:-1]]
            before = rr[ectopic[1:]]
            assert ectopic.sum() >= 2 and len(sinus_rr) >= 1
            assert (before < 0.9 * np.median(sinus_rr)).all()


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

@pytest.mark.parametrize("nuisance", sorted(NUISANCE_LEVELS))
@pytest.mark.parametrize("balanced", [False, True])
def test_evidence_matches_labels(balanced, nuisance):
    for i in range(40):
        r = synth_record(5, i, durations=(6, 14), balanced=balanced,
                         realism=Realism(nuisance=nuisance))
        labels = set(r.label_names)
        assert labels == {lab for lab, _, _ in r.evidence}
        assert all(0 <= a < b <= r.length for _, a, b in r.evidence)
        for whole in labels & {"AF", "Normal"}:
            assert intervals(r, whole) == [(0, r.length)]


@pytest.mark.parametrize("labels", [["PAC"], ["PVC"], ["PAC", "PVC"], ["AF", "PVC"],
                                    ["PAC", "RBBB", "STE"], ["I-AVB", "PVC"]])
@pytest.mark.parametrize("nuisance", sorted(NUISANCE_LEVELS))
def test_every_training_crop_holds_an_ectopic_beat(labels, nuisance):
    for i, seconds in enumerate((6.0, 12.0, 30.0, 60.0, 20.0, 45.0)):
        r = synth_record(9, i, labels=labels, duration_s=seconds,
                         realism=Realism(nuisance=nuisance))
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
            if b + 0.15 * FS > r.length:  # the record ends inside this QRS: not measurable
                continue
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
    assert f"v{NUISANCE_LEVELS[DEFAULT_NUISANCE]} " in store.meta["fingerprint"]
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
    varied = tmp_path / "varied"
    assert main(["prepare", "synthetic", "--n", "4", "--out", str(varied), "--st-variety"]) == 0
    assert Store(varied).meta["fingerprint"].endswith(" st_variety=True")
    adult = tmp_path / "adult"
    assert main(["prepare", "synthetic", "--n", "4", "--out", str(adult), "--lead-gains",
                 "adult"]) == 0
    assert Store(adult).meta["fingerprint"].endswith(" lead_gains=adult")
    with pytest.raises(SystemExit) as stop:  # argparse's one line: an empty store is no dataset
        main(["prepare", "synthetic", "--n", "0", "--out", str(tmp_path / "empty")])
    assert stop.value.code == 2 and not (tmp_path / "empty").exists()
    # -500, inf and 1e-9 were tracebacks, 0 the native rate without a word
    for fs in ("0", "-500", "nan", "inf", "1e-9"):
        with pytest.raises(SystemExit) as stop:
            main(["prepare", "synthetic", "--fs", fs, "--out", str(tmp_path / "norate")])
        assert stop.value.code == 2 and not (tmp_path / "norate").exists()


def test_discordant_st_shifts_rbbb_and_pvc_st_against_their_qrs_and_keeps_the_evidence():
    """``Realism(discordant_st=True)``: RBBB beats get an ST depression in V1-V3 (at most about
    0.2 mV) with a slight rise in I and V6, and a PVC's ST segment moves against its QRS in every
    lead; records of other classes are unchanged, and so are labels, timings and evidence. Off is
    the default and keeps the fingerprint."""
    assert fingerprint(10, 0, FS, None, True, Realism(discordant_st=False)) == fingerprint(
        10, 0, FS, None, True)
    assert fingerprint(10, 0, FS, None, True,
                       Realism(discordant_st=True)).endswith(" discordant_st=True")
    v1_v3, i_v6 = [LEAD[k] for k in ("V1", "V2", "V3")], [LEAD["I"], LEAD["V6"]]
    for i in range(10):
        for labels in (["Normal"], ["STD"], ["RBBB"], ["PVC"]):
            off = synth_record(13, i, labels=labels, duration_s=8.0, noise=False)
            on = synth_record(13, i, labels=labels, duration_s=8.0, noise=False,
                              realism=Realism(discordant_st=True))
            assert on.evidence == off.evidence and np.array_equal(on.labels, off.labels)
            d = on.signal - off.signal
            if labels in (["Normal"], ["STD"]):
                assert np.array_equal(on.signal, off.signal)
            elif labels == ["RBBB"]:
                assert -0.25 < d[v1_v3].min() < -0.04 and np.abs(d).max() < 0.25
                assert (d[i_v6].max(1) > 0).all()
            else:
                signed = np.where(d.max(1) > -d.min(1), d.max(1), d.min(1))
                onset = [a for label, a, _ in off.evidence if label == "PVC"][1]
                qrs_area = off.signal[:, onset:onset + 60].sum(1)  # its first 120 ms
                assert np.corrcoef(qrs_area, signed)[0, 1] < -0.9
                assert 0.05 < np.abs(d).max() < 0.5
