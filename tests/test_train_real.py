"""`xecg train --data PATH` (what `make train DATA=PATH` runs) on the 100 real CPSC records:
prepared into a store once, the paper split, a short fit, metrics with their protocol."""

from __future__ import annotations

import json
from pathlib import Path

from xecg.cli import main, store_for
from xecg.data.store import Store


def test_train_on_real_wfdb_records(wfdb_sample, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the store goes to ./data/stores/<name>-<hash>, as with make train
    args = ["train", "--data", str(wfdb_sample), "--config", "placeholder"]
    config = tmp_path / "real.yaml"
    base = Path(__file__).resolve().parents[1] / "experiments" / "base.yaml"
    config.write_text(  # a user's experiment on top of the shipped base
        f"extends: {base}\n"
        "experiment: {name: real, runs_dir: runs}\n"
        "attention: {num_records: 1, every_n_epochs: 100}\n"
        "seed_everything: 0\n"
        "trainer: {max_epochs: 1, accelerator: cpu, devices: 1, enable_progress_bar: false,"
        " enable_model_summary: false, limit_train_batches: 2}\n"
        "model: {net: {init_args: {width: 0.125}}}\n"
        "data: {policy: crop, length: 972, batch_size: 16, num_workers: 0}\n")
    args[-1] = str(config)
    assert main(args) == 0

    (store,) = (tmp_path / "data" / "stores").iterdir()
    assert store.name.startswith(f"{wfdb_sample.name}-") and str(store) == str(
        tmp_path / store_for(wfdb_sample))
    store = Store(store)
    assert len(store) == 100 and store.meta["layout"] == "wfdb"
    run = tmp_path / "runs" / "real"
    metrics = json.loads((run / "metrics.json").read_text())
    protocol = metrics["protocol"]
    assert protocol["protocol"] == "paper" and protocol["seed"] == 1004
    # The paper protocol on 100 sorted ids: 20 test, then 4 validation (ceil of 5% of 80).
    assert protocol["counts"]["test"]["records"] == 20
    assert protocol["counts"]["val"]["records"] == 4
    assert {"micro_f1", "subset_acc_multi", "cpsc_f1"} <= metrics["test"].keys()

    # A second run reuses the prepared store rather than reading the records again.
    signals = store.path / "signals.f32"
    before = signals.stat().st_mtime_ns
    assert main(args) == 0
    assert signals.stat().st_mtime_ns == before


def test_datasets_of_one_folder_name_get_stores_of_their_own(tmp_path):
    """The Challenge 2020 archives of PTB-XL and Georgia both unpack to WFDB/: `--data` gave
    both the store data/stores/WFDB, and the second prepared over the first's."""
    ptbxl, georgia = tmp_path / "ptbxl" / "WFDB", tmp_path / "georgia" / "WFDB"
    assert store_for(ptbxl) != store_for(georgia)
    assert store_for(ptbxl).startswith("data/stores/WFDB-")
    assert store_for(ptbxl) == store_for(tmp_path / "ptbxl" / ".." / "ptbxl" / "WFDB")
