"""``data.bandpass``: the zero-phase band-pass, its derived store, and the DataModule serving it."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from xecg.classes import NUM_LEADS
from xecg.data.datamodule import CPSCDataModule
from xecg.data.filters import bandpass, check_band, derived_path, filtered_store
from xecg.data.store import Store, is_store
from xecg.errors import ConfigError

FS = 500.0


def _amplitude(x: np.ndarray, f: float, fs: float = FS) -> float:
    """Amplitude of the ``f`` Hz component of ``x`` (whole cycles), by projection."""
    t = np.arange(x.shape[-1]) / fs
    return float(2 * np.abs(np.mean(x * np.exp(-2j * np.pi * f * t))))


def test_the_band_keeps_the_ecg_band_and_removes_wander_and_mains():
    t = np.arange(int(20 * FS)) / FS
    wander, wave, mains = (np.sin(2 * np.pi * f * t) for f in (0.1, 10.0, 50.0))
    x = np.tile(wander + wave + 0.5 * mains, (NUM_LEADS, 1)).astype(np.float32)
    y = bandpass(x, FS, (0.5, 40))
    assert y.shape == x.shape and y.dtype == np.float32
    mid = slice(int(2 * FS), int(18 * FS))  # away from the edges
    assert _amplitude(y[0, mid], 10.0) == pytest.approx(1.0, abs=0.02)
    assert _amplitude(y[0, mid], 0.1) < 0.03
    assert _amplitude(y[0, mid], 50.0) < 0.5 * 0.45  # 2nd order each way: -10 dB at 50 Hz


def test_the_band_is_zero_phase_so_waves_keep_their_timing():
    """A QRS-like pulse keeps its peak sample: evidence intervals stay exact."""
    t = np.arange(int(4 * FS)) / FS
    pulse = np.exp(-0.5 * ((t - 2.0) / 0.015) ** 2)
    y = bandpass(np.tile(pulse, (NUM_LEADS, 1)), FS, (0.5, 40))
    assert int(np.argmax(y[3])) == int(np.argmax(pulse))


def test_short_records_and_bad_bands():
    assert bandpass(np.ones((NUM_LEADS, 20), np.float32), FS, (0.5, 40)).shape == (NUM_LEADS, 20)
    assert check_band(None) is None and check_band([0.5, 40]) == (0.5, 40.0)
    for band, words in (([40, 0.5], "0 < low < high"), ([0, 40], "0 < low < high"),
                        ("x", "expected [low, high]"), ([0.5, 300], "below half")):
        with pytest.raises(ConfigError, match=re.escape(words)):
            check_band(band, FS)


def test_the_derived_store_is_made_once_and_again_when_the_store_changes(tiny_data, tmp_path):
    store = shutil.copytree(tiny_data.store, tmp_path / "store")
    out = filtered_store(store, (0.5, 40))
    assert out == derived_path(store, (0.5, 40)) and is_store(out)
    raw, filt = Store(store), Store(out)
    assert filt.ids == raw.ids and (filt.labels == raw.labels).all()
    assert filt.evidence == raw.evidence
    np.testing.assert_allclose(filt.signal(7), bandpass(raw.signal(7), raw.fs, (0.5, 40)))
    made = (out / "meta.json").stat().st_mtime_ns
    assert filtered_store(store, (0.5, 40)) == out
    assert (out / "meta.json").stat().st_mtime_ns == made  # current: reused

    # The store is prepared again in place with other records (its derived/ folder stays): the
    # band-passed copy no longer matches its signals' checksum and is made again.
    from xecg.data.synthetic import make_synthetic_store

    other = make_synthetic_store(tmp_path / "other", n=20, seed=1, durations=(6, 8),
                                 progress=False)
    for path in other.iterdir():
        if path.is_file():
            shutil.copy(path, store / path.name)
    assert filtered_store(store, (0.5, 40)) == out
    assert len(Store(out)) == 20
    np.testing.assert_allclose(Store(out).signal(3),
                               bandpass(Store(store).signal(3), FS, (0.5, 40)))


def test_the_datamodule_serves_band_passed_windows_and_their_statistics(tiny_data, tmp_path):
    store = shutil.copytree(tiny_data.store, tmp_path / "store")
    dm = CPSCDataModule(str(store), split=str(tiny_data.split), policy="crop", length=972,
                        batch_size=4, num_workers=0, bandpass=[0.5, 40])
    dm.setup("fit")
    assert dm.store.path == derived_path(store, (0.5, 40))
    assert dm.raw_store.path == store and dm.raw_store.ids == dm.store.ids
    assert dm.describe()["bandpass_hz"] == [0.5, 40.0]
    mean, std = Store(dm.store.path).lead_stats(dm.indices["train"])
    np.testing.assert_allclose(dm.mean, mean)
    raw_mean, _ = Store(store).lead_stats(dm.indices["train"])
    assert np.abs(dm.mean).max() < np.abs(raw_mean).max()  # the high-pass removes the offsets
    batch = next(iter(dm.val_dataloader()))
    i = int(batch["index"][0])
    first = bandpass(Store(store).signal(i), FS, (0.5, 40))[:, :972]
    np.testing.assert_allclose(batch["x"][0].numpy(),
                               (first - dm.mean[:, None]) / dm.std[:, None], atol=1e-5)
