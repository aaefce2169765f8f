"""``xecg evaluate``: the test stage's metrics of a checkpoint on any labelled data (a store's
split, a WFDB folder), with records that have no label among the nine skipped and counted."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures import write_wfdb_record

from xecg.classes import CLASSES
from xecg.cli import main
from xecg.data.store import Store
from xecg.evaluate import evaluate
from xecg.module import XECGModule


@pytest.fixture(scope="module")
def run(tiny_config, tmp_path_factory) -> tuple[Path, Path]:
    """(config, checkpoint) of a short fit with thresholds tuned on validation. Three epochs: an
    untrained model gives nearly equal probabilities to every record, whose AUROC then turns on
    float rounding (the test stage batches windows differently from one record at a time)."""
    folder = tmp_path_factory.mktemp("evaluate-run")
    config = tiny_config(folder, "ev", trainer={"max_epochs": 3},
                         experiment={"wandb": False}, model={"tune_thresholds": True})
    assert main(["fit", "--config", str(config)]) == 0
    return config, folder / "runs" / "ev" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def run_bandpass(tiny_config, tiny_data, tmp_path_factory) -> tuple[Path, Path]:
    """As ``run``, with ``data.bandpass`` (on a copy of the store, which gains its derived
    band-passed copy)."""
    folder = tmp_path_factory.mktemp("evaluate-bandpass")
    shutil.copytree(tiny_data.store, folder / "store")
    config = tiny_config(folder, "ev", trainer={"max_epochs": 3},
                         experiment={"wandb": False}, model={"tune_thresholds": True},
                         data={"store": str(folder / "store"), "bandpass": [0.5, 40.0]})
    assert main(["fit", "--config", str(config)]) == 0
    assert (folder / "store" / "derived" / "bandpass-0.5-40Hz" / "meta.json").is_file()
    return config, folder / "runs" / "ev" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def run_episodic(tiny_config, tmp_path_factory) -> tuple[Path, Path]:
    """As ``run``, with each record's strongest window for PAC and PVC and the mean of its
    windows for the rest (``model.window_aggregation: episodic``)."""
    folder = tmp_path_factory.mktemp("evaluate-episodic")
    config = tiny_config(folder, "ev", trainer={"max_epochs": 3},
                         experiment={"wandb": False},
                         model={"tune_thresholds": True, "window_aggregation": "episodic"})
    assert main(["fit", "--config", str(config)]) == 0
    return config, folder / "runs" / "ev" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("which", ["run", "run_bandpass", "run_episodic"])
def test_evaluate_gives_the_test_stage_metrics(which, request, tiny_data, tmp_path):
    """Also with a band-pass: the test stage reads the band-passed store, `xecg evaluate` the
    records as recorded, which the checkpoint's band (xecg_bandpass) filters the same way."""
    config, ckpt = request.getfixturevalue(which)
    thresholds = XECGModule.load_from_checkpoint(ckpt, map_location="cpu").thresholds
    assert not np.allclose(thresholds.numpy(), 0.5)  # tuned: the checkpoint's are used
    assert main(["test", "--config", str(config), "--ckpt_path", str(ckpt)]) == 0
    tested_file = json.loads((ckpt.parents[1] / "metrics.json").read_text())
    tested = tested_file["test"]

    out = tmp_path / "eval"
    assert main(["evaluate", "--ckpt", str(ckpt), str(tiny_data.store), "--split",
                 str(tiny_data.split), "--out", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    got = result["evaluate"]
    assert result["records"] == tiny_data.counts["test"] and result["skipped_no_label"] == 0
    assert set(tested) <= set(got)
    for key, value in tested.items():
        assert got[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    # The same records, labelled alike: the same bootstrap intervals, whatever their order.
    assert result["intervals"]["evaluate"] == tested_file["intervals"]["test"]
    assert {f"auroc_{c}" for c in CLASSES} <= set(got)
    valid = [got[f"auroc_{c}"] for c in CLASSES if not math.isnan(got[f"auroc_{c}"])]
    assert np.mean(valid) == pytest.approx(got["auroc"], abs=1e-6)

    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    store = Store(tiny_data.store)
    assert len(rows) == tiny_data.counts["test"]
    for row in rows[:5]:
        truth = store.record(store.index_of(row["record"])).label_names
        assert row["true"] == ";".join(truth)
        probs = np.array([float(row[f"p_{c}"]) for c in CLASSES])
        assert ((probs >= 0) & (probs <= 1)).all()


def test_evaluate_a_folder_skips_and_counts_records_without_a_label(run, tiny_data, tmp_path,
                                                                    capsys):
    _, ckpt = run
    store = Store(tiny_data.store)
    src = tmp_path / "wfdb"
    for i in range(4):
        rec = store.record(i)
        write_wfdb_record(src, f"A{i:04d}", rec.signal, rec.label_names)
    write_wfdb_record(src, "A0100", store.record(5).signal, ["Flutter"])  # none of the nine
    result = evaluate(ckpt, src, tmp_path / "out", progress=False)
    assert result["records"] == 4 and result["skipped_no_label"] == 1
    assert result["thresholds"] == pytest.approx(
        XECGModule.load_from_checkpoint(ckpt, map_location="cpu").thresholds.tolist(), abs=1e-4)
    text = capsys.readouterr().out
    assert "micro-F1" in text and "1 with no label among the nine" in text
    # 4 records leave classes without a positive: their AUROC is undefined, and says so
    (line,) = [t for t in text.splitlines() if t.startswith("AUROC per class")]
    assert " n/a" in line and "nan" not in line and "(n/a: the records hold no" in line
    defined = sum(not math.isnan(result["evaluate"][f"auroc_{c}"]) for c in CLASSES)
    assert f"macro AUROC ({defined}/9 classes)" in text and defined < 9
    # metrics.json is strict JSON: the undefined ones are null, not Python's NaN
    written = json.loads((tmp_path / "out" / "metrics.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"metrics.json holds {c}"))
    assert sum(written["evaluate"][f"auroc_{c}"] is None for c in CLASSES) == 9 - defined


def test_evaluate_names_a_missing_folder(run, tmp_path, capsys):
    _, ckpt = run
    assert main(["evaluate", "--ckpt", str(ckpt), str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_evaluate_refuses_a_split_whose_records_are_not_there(run, tiny_data, tmp_path, capsys):
    """A split of another dataset (or of the full one, given a part of it) would evaluate only
    the records both share, under the split's name: refused, with the count and the first ids."""
    _, ckpt = run
    split = json.loads(Path(tiny_data.split).read_text())
    split["test"] = [*split["test"], "Z9998", "Z9999"]
    other = tmp_path / "other-split.json"
    other.write_text(json.dumps(split))
    assert main(["evaluate", "--ckpt", str(ckpt), str(tiny_data.store), "--split",
                 str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    n = len(split["test"])
    assert err == [f"xecg: error: {other}: 2 of its {n} test records are not in "
                   f"{tiny_data.store} (first: Z9998, Z9999); evaluate the data the split was "
                   "made of"]


def _predictions(folder: Path) -> dict[str, np.ndarray]:
    """record -> its nine probabilities, from an evaluation's predictions.csv."""
    with open(folder / "predictions.csv", newline="") as f:
        return {r["record"]: np.array([float(r[f"p_{c}"]) for c in CLASSES])
                for r in csv.DictReader(f)}


def test_evaluate_several_checkpoints_as_one_ensemble(run, run_episodic, tiny_data, tmp_path,
                                                      capsys):
    """``xecg evaluate --ckpt A --ckpt B`` (what ``make sim2real`` runs): each member's own
    windows and aggregation give a record's probabilities, the ensemble's are their mean and its
    thresholds the mean of theirs; metrics.json names every member."""
    ckpts = [run[1], run_episodic[1]]
    args = [str(tiny_data.store), "--split", str(tiny_data.split)]
    for i, ckpt in enumerate(ckpts):
        assert main(["evaluate", "--ckpt", str(ckpt), *args, "--out", str(tmp_path / f"m{i}")]) == 0
    assert main(["evaluate", "--ckpt", str(ckpts[0]), "--ckpt", str(ckpts[1]), *args,
                 "--out", str(tmp_path / "both")]) == 0
    assert "evaluate, ensemble of 2 metrics" in capsys.readouterr().out
    one, two, both = (_predictions(tmp_path / d) for d in ("m0", "m1", "both"))
    assert set(both) == set(one) and len(both) == tiny_data.counts["test"]
    for record, probs in both.items():
        np.testing.assert_allclose(probs, (one[record] + two[record]) / 2, atol=2e-6)
    assert not all(np.allclose(one[r], two[r]) for r in one)  # two members that differ
    result = json.loads((tmp_path / "both" / "metrics.json").read_text())
    members = [json.loads((tmp_path / f"m{i}" / "metrics.json").read_text()) for i in (0, 1)]
    assert result["checkpoints"] == [str(c) for c in ckpts] and "checkpoint" not in result
    assert members[0]["checkpoint"] == str(ckpts[0])  # one member: as before
    assert result["protocol"]["members"] == 2 and members[0]["protocol"]["members"] == 1
    np.testing.assert_allclose(result["thresholds"], np.mean([m["thresholds"] for m in members],
                                                             axis=0), atol=1e-4)


def test_evaluate_refuses_an_ensemble_of_two_sample_rates(run, tiny_data, tmp_path, capsys):
    """Members at different rates would each need the records resampled their own way: refused,
    naming each checkpoint and its rate."""
    import torch

    ckpt = run[1]
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    saved["state_dict"]["sample_rate"] = torch.tensor(250.0)
    other = tmp_path / "at-250.ckpt"
    torch.save(saved, other)
    assert main(["evaluate", "--ckpt", str(ckpt), "--ckpt", str(other), str(tiny_data.store)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xecg: error: an ensemble's checkpoints must share a sample rate")
    assert f"{other}: 250 Hz" in err and f"{ckpt}: " in err


def test_subset_alone_evaluates_that_part_of_the_checkpoints_split(run, tiny_data, tmp_path,
                                                                  capsys):
    """``--subset test`` without ``--split`` (it was ignored: every record of the store was
    evaluated, training ones included): the test records of the split the checkpoint recorded,
    the numbers of ``--split FILE``. The whole store is evaluated with a warning that counts
    the checkpoint's training records in it. A checkpoint that records no split says so."""
    import torch

    _, ckpt = run
    store = str(tiny_data.store)
    assert main(["evaluate", "--ckpt", str(ckpt), store, "--subset", "test", "--out",
                 str(tmp_path / "own")]) == 0
    own = json.loads((tmp_path / "own" / "metrics.json").read_text())
    given = evaluate(ckpt, store, split=tiny_data.split, progress=False, quiet=True)
    assert own["records"] == given["records"] == tiny_data.counts["test"]
    assert own["evaluate"] == given["evaluate"] and own["training_records"] == 0
    assert "not held out" not in capsys.readouterr().err
    assert main(["evaluate", "--ckpt", str(ckpt), store, "--out", str(tmp_path / "all")]) == 0
    whole = json.loads((tmp_path / "all" / "metrics.json").read_text())
    assert whole["records"] == sum(tiny_data.counts.values())
    assert whole["training_records"] == tiny_data.counts["train"]
    assert (f"warning: {tiny_data.counts['train']} of the {whole['records']} records evaluated "
            "are training records of the checkpoint: these numbers are not held out"
            in capsys.readouterr().err)
    old = torch.load(ckpt, map_location="cpu", weights_only=True)
    del old["CPSCDataModule"]["split_records"]  # as checkpoints before 2026-11-28
    torch.save(old, tmp_path / "old.ckpt")
    assert main(["evaluate", "--ckpt", str(tmp_path / "old.ckpt"), store, "--subset",
                 "val"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"xecg: error: --subset val: {tmp_path / 'old.ckpt'} does not record the split it was "
        "trained on (a checkpoint before 2026-11-28): give the split file with --split FILE")
