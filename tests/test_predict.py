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


def test_predict_reports_every_file_it_does_not_predict(checkpoint, tmp_path, capsys):
    """What the scan finds but cannot pair into a record (a .mat without its header, both
    copies of a duplicated id) and a record too short for the network are named on the
    console and in skipped.csv; the good records beside them are predicted. They used to be
    left out without a word, and the short record stopped the whole run with a traceback."""
    src = tmp_path / "src"
    write_wfdb_record(src / "g1", "X0001", make_signal(3000, seed=1), ["AF"])
    write_wfdb_record(src / "g1", "X0002", make_signal(3000, seed=2), ["PVC"])
    (src / "g1" / "X0002.hea").unlink()  # a .mat without its header
    write_wfdb_record(src / "g1", "X0003", make_signal(3000, seed=3), ["STD"])
    write_wfdb_record(src / "g2", "X0003", make_signal(3000, seed=4), ["STD"])  # same id
    write_wfdb_record(src / "g1", "X0004", make_signal(100, seed=5), ["AF"])  # 0.2 s
    write_wfdb_record(src / "g1", "X0005", make_signal(2500, seed=6), ["RBBB"])
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(checkpoint), str(src), "--out", str(out),
                 "--no-images"]) == 0
    assert [r["record"] for r in read_rows(out / "predictions.csv")] == ["X0001", "X0005"]
    reasons = {Path(r["file"]).relative_to(src).as_posix(): r["reason"]
               for r in read_rows(out / "skipped.csv")}
    assert set(reasons) == {"g1/X0002.mat", "g1/X0003.hea", "g2/X0003.hea", "g1/X0004.hea"}
    assert reasons["g1/X0002.mat"].startswith("no header")
    assert reasons["g1/X0003.hea"].startswith("duplicate id")
    assert reasons["g1/X0004.hea"] == ("too short: 100 samples at 500 Hz; the network needs at "
                                       "least 243 (0.49 s)")
    console = capsys.readouterr().out
    assert "2 records predicted, 3 skipped (4 lines in skipped.csv)" in console
    assert f"skipped {src / 'g1' / 'X0002.mat'}: no header" in console

    # The header-less .mat given alone: its reason, not a guess at the layout.
    assert main(["predict", "--ckpt", str(checkpoint), str(src / "g1" / "X0002.mat"),
                 "--out", str(tmp_path / "one")]) == 2
    assert f"{src / 'g1' / 'X0002.mat'}: no header" in capsys.readouterr().err


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
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("policy", ["crop", "pad", "bucket"])
def test_predict_gives_the_test_stage_probabilities(tiny_config, tiny_data, tmp_path, policy):
    """For every record of a store's test split, `xecg predict` on the store writes the
    probabilities that the test stage computed (same windows, averaging and statistics, read
    from the checkpoint), for each length policy."""
    import lightning as L

    from xecg.data.datamodule import CPSCDataModule
    from xecg.data.store import Store

    config = tiny_config(tmp_path, f"eq-{policy}", experiment={"wandb": False},
                         trainer={"limit_train_batches": 2, "limit_val_batches": 1},
                         data={"policy": policy, "length": 1215})
    assert main(["fit", "--config", str(config)]) == 0
    ckpt = tmp_path / "runs" / f"eq-{policy}" / "checkpoints" / "last.ckpt"
    module = XECGModule.load_from_checkpoint(ckpt, map_location="cpu")
    assert module.eval_windows["policy"] == policy

    dm = CPSCDataModule(str(tiny_data.store), split=str(tiny_data.split), policy=policy,
                        length=1215, batch_size=5, num_workers=0)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    batches = trainer.predict(module, datamodule=dm, ckpt_path=str(ckpt))
    ids = Store(tiny_data.store).ids
    test_probs = {ids[int(i)]: p for b in batches for i, p in zip(b["index"], b["probs"])}

    out = tmp_path / f"pred-{policy}"
    assert main(["predict", "--ckpt", str(ckpt), str(tiny_data.store), "--out", str(out),
                 "--no-images"]) == 0
    rows = {r["record"]: r for r in read_rows(out / "predictions.csv")}
    assert set(test_probs) <= set(rows) and len(test_probs) == tiny_data.counts["test"]
    for rec, probs in test_probs.items():
        written = np.array([float(rows[rec][f"p_{c}"]) for c in CLASSES])
        np.testing.assert_allclose(written, probs.numpy(), atol=6e-5)  # 4 decimals written


@pytest.fixture(scope="module")
def sensitive_checkpoint(tmp_path_factory) -> Path:
    """An untrained xECGNet with random BatchNorm statistics: unlike a model fitted for two
    batches (whose outputs barely move), its probabilities depend clearly on the input."""
    import lightning as L

    from xecg.models import XECGNet

    torch.manual_seed(0)
    module = XECGModule(XECGNet(width=0.125))
    gen = torch.Generator().manual_seed(1)
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm1d):
            layer.running_mean.copy_(torch.randn(layer.num_features, generator=gen) * 0.1)
            layer.running_var.copy_(torch.rand(layer.num_features, generator=gen) + 0.5)
    module.eval_windows = {"policy": "crop", "length": 2880, "bucket_multiple": 972}
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False)
    trainer.strategy.connect(module)
    path = tmp_path_factory.mktemp("sensitive") / "random.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_predict_resamples_a_real_250_hz_record_to_the_models_rate(sensitive_checkpoint,
                                                                   wfdb_sample, tmp_path):
    """A real record at 500 Hz and the same record resampled to 250 Hz get nearly the same
    probabilities: predict brings the 250 Hz one back to the model's 500 Hz. Run at 250 Hz as
    it is, the same model answers differently, so the comparison can fail."""
    from scipy.signal import resample_poly

    checkpoint = sensitive_checkpoint
    from xecg.data.readers import open_dataset

    rec = open_dataset(wfdb_sample).load_record("A0002")  # 500 Hz, Normal
    low = resample_poly(rec.signal, 1, 2, axis=1).astype(np.float32)
    src = tmp_path / "src"
    write_wfdb_record(src, "R0250", low, rec.label_names, fs=250)
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(checkpoint), str(src), "--out", str(out),
                 "--no-images"]) == 0
    (row,) = read_rows(out / "predictions.csv")
    p250 = np.array([float(row[f"p_{c}"]) for c in CLASSES])
    module = XECGModule.load_from_checkpoint(checkpoint, map_location="cpu")
    p500 = module.predict_record(rec.signal)["probs"].numpy()
    as_is = module.predict_record(low)["probs"].numpy()
    gap = np.abs(p250 - p500).max()
    assert gap < 0.05
    assert np.abs(as_is - p500).max() > 2 * gap


def test_predict_with_several_checkpoints_writes_their_ensemble(checkpoint, tiny_config,
                                                                 tmp_path, monkeypatch):
    """``xecg predict --ckpt A --ckpt B``: each record's probabilities are the mean of the two
    checkpoints' own, its labels those at the mean of their thresholds, and each page draws the
    first checkpoint's maps and says so beside the labels."""
    import xecg.predict

    other = tiny_config(tmp_path, "other", trainer={"limit_train_batches": 4},
                        experiment={"wandb": False}, model={"tune_thresholds": True})
    assert main(["fit", "--config", str(other)]) == 0
    second = tmp_path / "runs" / "other" / "checkpoints" / "last.ckpt"
    src = tmp_path / "src"
    for i in range(3):
        write_wfdb_record(src, f"X000{i}", make_signal(3000, seed=i), ["AF"])
    singles = []
    for k, ckpt in enumerate((checkpoint, second)):
        assert main(["predict", "--ckpt", str(ckpt), str(src), "--out", str(tmp_path / f"p{k}"),
                     "--no-images"]) == 0
        singles.append({r["record"]: np.array([float(r[f"p_{c}"]) for c in CLASSES])
                        for r in read_rows(tmp_path / f"p{k}" / "predictions.csv")})
    titles = []
    real = xecg.predict.render_attention

    def drawn(*args, **kwargs):  # the real page, its title lines kept
        fig, caption = real(*args, **kwargs)
        titles.append([t.get_text() for t in fig.texts])
        return fig, caption

    monkeypatch.setattr(xecg.predict, "render_attention", drawn)
    out = tmp_path / "both"
    assert main(["predict", "--ckpt", str(checkpoint), "--ckpt", str(second), str(src),
                 "--out", str(out)]) == 0
    rows = read_rows(out / "predictions.csv")
    assert [r["record"] for r in rows] == ["X0000", "X0001", "X0002"]
    cut = np.mean([XECGModule.load_from_checkpoint(c, map_location="cpu").thresholds.numpy()
                   for c in (checkpoint, second)], axis=0)
    assert not np.allclose(singles[0]["X0000"], singles[1]["X0000"])  # two members that differ
    for row in rows:
        probs = np.array([float(row[f"p_{c}"]) for c in CLASSES])
        np.testing.assert_allclose(probs, (singles[0][row["record"]]
                                           + singles[1][row["record"]]) / 2, atol=1.1e-4)
        if not (np.abs(probs - cut) < 2e-4).any():  # 4 decimals: away from a threshold
            assert row["predicted"] == ";".join(c for c, p, t in zip(CLASSES, probs, cut)
                                                if p >= t), row
        assert (out / f"{row['record']}.png").read_bytes().startswith(PNG)
    assert len(titles) == 3 and all(
        any("(ensemble of 2 checkpoints; maps: the first's)" in line for line in page)
        for page in titles)


def error_line(capsys) -> str:
    """The one line a failed command ends with on stderr (the progress bar's lines before it:
    ``xecg: error: ...`` is printed whole, on its own line)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("xecg: error: ")
    assert sum("xecg: error" in line for line in lines) == 1
    assert not any("Traceback" in line for line in lines)
    return lines[-1]


def test_predict_replaces_what_an_earlier_run_wrote_in_its_folder(checkpoint, tmp_path,
                                                                   capsys):
    """An output folder used again holds this run's results only: the earlier run's pages,
    predictions.csv and skipped.csv are removed (its pages known by their mark, or by the
    earlier predictions.csv for unmarked ones), and the console says so; the user's own files
    stay. The old pages and skipped.csv used to stay beside the new predictions.csv."""
    src = tmp_path / "src"
    for i in range(3):
        write_wfdb_record(src, f"X000{i}", make_signal(3000, seed=i), ["AF"])
    bad = tmp_path / "bad"
    write_wfdb_record(bad, "B0001", make_signal(3000, seed=9), ["AF"], checksums=[7] * 12)
    write_wfdb_record(bad, "B0002", make_signal(3000, seed=8), ["AF"], checksums=[7] * 12)
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(checkpoint), str(src), "--out", str(out)]) == 0
    (out / "mine.png").write_bytes(PNG + b"the user's own picture")
    (out / "notes.txt").write_text("mine")
    assert main(["predict", "--ckpt", str(checkpoint), str(src / "X0001.hea"),
                 "--out", str(out)]) == 0
    assert "removed what an earlier `xecg predict` wrote there (predictions.csv, 3 pages)" \
        in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["X0001.png", "mine.png", "notes.txt",
                                                     "predictions.csv"]

    # A bad folder: nothing predicted, so exit 2 with skipped.csv; a clean rerun removes it.
    assert main(["predict", "--ckpt", str(checkpoint), str(bad), "--out", str(out)]) == 2
    err = error_line(capsys)
    assert err == (f"xecg: error: {bad}: no record was predicted: every one was skipped "
                   f"(2 lines in {out / 'skipped.csv'})")
    assert sorted(p.name for p in out.iterdir()) == ["mine.png", "notes.txt", "skipped.csv"]
    assert len(read_rows(out / "skipped.csv")) == 2
    # Pages of an xecg that did not mark them: known by the earlier predictions.csv.
    shutil.copy(out / "mine.png", out / "OLD1.png")
    (out / "predictions.csv").write_text("record,p_SNR,predicted\nOLD1,0.1,\n")
    assert main(["predict", "--ckpt", str(checkpoint), str(src / "X0002.hea"), "--out",
                 str(out), "--no-images"]) == 0
    console = capsys.readouterr().out
    assert "(predictions.csv, skipped.csv, 1 page)" in console and "0 skipped" in console
    assert sorted(p.name for p in out.iterdir()) == ["mine.png", "notes.txt", "predictions.csv"]


def test_predict_exits_2_when_its_one_record_is_unreadable(checkpoint, tmp_path, capsys):
    """Nothing predicted because every input was bad: exit 2 (as `xecg evaluate`), one line
    naming the file and its problem, skipped.csv written, no empty predictions.csv. It used
    to print "0 records predicted, 1 skipped" and exit 0."""
    src = tmp_path / "src"
    write_wfdb_record(src, "X0002", make_signal(3000, seed=2), ["PVC"], checksums=[7] * 12)
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(checkpoint), str(src / "X0002.hea"),
                 "--out", str(out)]) == 2
    err = error_line(capsys)
    assert err.startswith(f"xecg: error: {src / 'X0002.hea'}: ") and "checksum" in err
    assert "no record was predicted" in err
    assert [r["file"] for r in read_rows(out / "skipped.csv")] == [str(src / "X0002.hea")]
    assert not (out / "predictions.csv").exists()


def test_predict_a_mat_without_its_header_alone_says_no_header(checkpoint, wfdb_sample,
                                                               tmp_path, capsys):
    """A real WFDB .mat copied without its .hea, in a folder of its own: given as the file or
    as the folder, the header is said to be missing (exit 2). It used to be read as an ICBEB
    file, "skipped: unreadable signal: a MATLAB v4 file, where a v5 one belongs", exit 0."""
    src = tmp_path / "x"
    src.mkdir()
    shutil.copy(wfdb_sample / "A0020.mat", src)
    for path in (src / "A0020.mat", src):
        assert main(["predict", "--ckpt", str(checkpoint), str(path),
                     "--out", str(tmp_path / "o")]) == 2
        err = error_line(capsys)
        assert ": no header: " in err and "A0020" in err, err
        assert "where a v5 one belongs" not in err


def test_predict_names_a_missing_record_file_and_a_device_it_cannot_use(checkpoint, tmp_path,
                                                                        capsys):
    """A missing .hea is "no such file" (it was "no such folder"); --device cuda without a
    GPU, or a name torch does not know, is said of the device (it was blamed on the
    checkpoint: "does not fit this xecg's model")."""
    src = tmp_path / "src"
    write_wfdb_record(src, "X0001", make_signal(3000, seed=1), ["AF"])
    assert main(["predict", "--ckpt", str(checkpoint), str(src / "X0009.hea"),
                 "--out", str(tmp_path / "o")]) == 2
    assert error_line(capsys) == f"xecg: error: {src / 'X0009.hea'}: no such file"
    devices = ["gpu0"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in devices:
        assert main(["predict", "--ckpt", str(checkpoint), str(src), "--out",
                     str(tmp_path / "o"), "--device", device]) == 2
        err = error_line(capsys)
        assert err.startswith(f"xecg: error: --device {device}: ") and "ckpt" not in err, err
    if "cuda" in devices:
        assert err == ("xecg: error: --device cuda: no CUDA GPU is available here "
                       "(torch.cuda.is_available() is False); use --device cpu")
