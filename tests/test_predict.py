"""``xecg predict``: CSV and attention images from a checkpoint, for real records in any layout,
single files, and folders with bad records."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import make_signal, write_icbeb_record, write_wfdb_record

from xecg.classes import CLASSES
from xecg.cli import main
from xecg.module import XECGModule

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def checkpoint(tiny_config, tmp_path_factory) -> Path:
    """A checkpoint from one short fit (W&B off: not what this file tests)."""
    folder = tmp_path_factory.mktemp("predict-ckpt")
    config = tiny_config(folder, "pred", trainer={"limit_train_batches": 2},
                         experiment={"wandb": False})
    assert main(["fit", "--config", str(config)]) == 0
    return folder / "runs" / "pred" / "checkpoints" / "last.ckpt"


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_rows(rows: list[dict], ckpt: Path) -> None:
    thresholds = XECGModule.load_from_checkpoint(ckpt, map_location="cpu").thresholds
    for row in rows:
        probs = np.array([float(row[f"p_{c}"]) for c in CLASSES])
        assert np.all((probs >= 0) & (probs <= 1)), row
        expected = [c for c, p, t in zip(CLASSES, probs, thresholds.tolist()) if p >= t]
        # Probabilities are written with 4 decimals: compare away from the threshold only.
        close = np.abs(probs - thresholds.numpy()) < 1e-3
        got = row["predicted"].split(";") if row["predicted"] else []
        if not close.any():
            assert got == expected, row


def test_predict_real_wfdb_records(checkpoint, wfdb_sample, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ids = ["A0001", "A0002", "A0003", "A0004", "A0005"]
    for rec in ids:
        for ext in (".hea", ".mat"):
            shutil.copy(wfdb_sample / f"{rec}{ext}", src)
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(checkpoint), str(src), "--out", str(out)]) == 0
    rows = read_rows(out / "predictions.csv")
    assert [r["record"] for r in rows] == ids
    # Known labels travel into the CSV (A0001 is RBBB in REFERENCE.csv and its header).
    assert rows[0]["true"] == "RBBB"
    check_rows(rows, checkpoint)
    for rec in ids:
        assert (out / f"{rec}.png").read_bytes()[:8] == PNG


def test_predict_snomed_records_without_nine_classes(checkpoint, snomed_sample, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(checkpoint), str(snomed_sample), "--out", str(out),
                 "--no-images"]) == 0
    rows = {r["record"]: r for r in read_rows(out / "predictions.csv")}
    # Records whose codes lie outside the nine classes are still predicted, with no true label.
    assert len(rows) == 9
    assert rows["Q0001"]["true"] == ""
    assert rows["A5432"]["true"] == "PAC"
    assert not list(out.glob("*.png"))


def test_predict_single_file_and_bad_record(checkpoint, tmp_path):
    src = tmp_path / "src"
    write_wfdb_record(src, "X0001", make_signal(3000, seed=1), ["AF"])
    write_wfdb_record(src, "X0002", make_signal(3000, seed=2), ["PVC"], checksums=[7] * 12)
    out = tmp_path / "one"
    assert main(["predict", "--ckpt", str(checkpoint), str(src / "X0001.hea"),
                 "--out", str(out)]) == 0
    assert [r["record"] for r in read_rows(out / "predictions.csv")] == ["X0001"]

    out = tmp_path / "all"
    assert main(["predict", "--ckpt", str(checkpoint), str(src), "--out", str(out)]) == 0
    assert [r["record"] for r in read_rows(out / "predictions.csv")] == ["X0001"]
    (skipped,) = read_rows(out / "skipped.csv")
    assert skipped["file"].endswith("X0002.hea") and "checksum" in skipped["reason"]


def test_predict_icbeb_files_without_reference_and_resampling(checkpoint, tmp_path):
    src = tmp_path / "TrainingSet1"
    write_icbeb_record(src, "A9001", make_signal(2000, seed=3).astype(np.float64))
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(checkpoint), str(src), "--out", str(out)]) == 0
    (row,) = read_rows(out / "predictions.csv")
    assert row["record"] == "A9001" and row["true"] == ""

    # A 250 Hz record is resampled to the model's rate: the attention spans its 8 s.
    src = tmp_path / "lowrate"
    write_wfdb_record(src, "L0001", make_signal(2000, seed=4), ["AF"], fs=250)
    module = XECGModule.load_from_checkpoint(checkpoint, map_location="cpu")
    assert float(module.sample_rate) == 500.0
    out = tmp_path / "out250"
    assert main(["predict", "--ckpt", str(checkpoint), str(src), "--out", str(out),
                 "--no-images"]) == 0
    assert len(read_rows(out / "predictions.csv")) == 1
    result = module.predict_record(torch.as_tensor(make_signal(4000, seed=4)))
    assert result["attention"].shape == (4000 // 243,)


def test_predict_names_a_missing_folder(checkpoint, tmp_path, capsys):
    assert main(["predict", "--ckpt", str(checkpoint), str(tmp_path / "nope"),
                 "--out", str(tmp_path / "out")]) == 2
    assert "nope" in capsys.readouterr().out
