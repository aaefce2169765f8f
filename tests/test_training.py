"""Training with a real Lightning Trainer on CPU: a short fit beats the untrained model on
validation, a seed fixes the metrics, resuming from ``last`` continues the saved epoch, and the
``xecg train`` / ``xecg fit`` commands write the run folder, the offline W&B run and (without W&B)
the CSV log. (Overfitting a tiny batch is in test_models.py.)"""

from __future__ import annotations

import csv
import json
import math
import struct
import time
from collections import defaultdict
from pathlib import Path

import lightning as L
import pytest
import torch
import wandb
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from xecg.classes import CLASSES, NUM_CLASSES
from xecg.cli import main
from xecg.data.datamodule import CPSCDataModule
from xecg.models import XECGNet
from xecg.module import XECGModule

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def datamodule(tiny_data, **kwargs) -> CPSCDataModule:
    options = {"policy": "crop", "length": 972, "batch_size": 16, "num_workers": 0, **kwargs}
    return CPSCDataModule(str(tiny_data.store), split=str(tiny_data.split), **options)


def trainer(**kwargs) -> L.Trainer:
    options = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
               "enable_progress_bar": False, "enable_model_summary": False,
               "num_sanity_val_steps": 0, **kwargs}
    return L.Trainer(**options)


def test_a_short_fit_beats_the_untrained_model_on_validation(tiny_data):
    """12 epochs of 6 batches. Both the paper's micro-F1 (at threshold 0.5) and macro AUROC must
    rise by 0.1: early in training micro-F1 alone can even drop (BCE first pushes every
    probability under 0.5), while AUROC measures the ranking and ignores that shift. Across seeds
    0-3, micro-F1 rose by 0.26-0.34 and AUROC by 0.14-0.27."""
    L.seed_everything(0)
    dm = datamodule(tiny_data)
    m = XECGModule(XECGNet(width=0.25), lr=3e-3)
    # The fit validates once, at its end: after `validate` (inference mode) that checks that the
    # metric states made there do not break a fit's validation (no_grad).
    t = trainer(max_epochs=12, check_val_every_n_epoch=12)
    before = t.validate(m, datamodule=dm, verbose=False)[0]
    t.fit(m, datamodule=dm)
    after = t.validate(m, datamodule=dm, verbose=False)[0]
    assert all(math.isfinite(v[k]) for v in (before, after) for k in ("val/micro_f1", "val/auroc"))
    assert after["val/micro_f1"] > before["val/micro_f1"] + 0.1
    assert after["val/auroc"] > before["val/auroc"] + 0.1
    assert after["val/loss"] < before["val/loss"]


def test_the_same_seed_gives_the_same_metrics(tiny_data):
    def run(seed: int) -> dict[str, float]:
        L.seed_everything(seed)  # weights, and the DataModule's crops and order
        m = XECGModule(XECGNet(width=0.125), lr=3e-3)
        t = trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=2)
        dm = datamodule(tiny_data)
        t.fit(m, datamodule=dm)
        return t.validate(m, datamodule=dm, verbose=False)[0]

    first = run(0)
    assert run(0) == first
    assert run(1)["val/loss"] != first["val/loss"]


class ResumeProbe(L.Callback):
    """Records the epochs a fit trains, and the weights and Adam step count it starts from."""

    def __init__(self):
        self.epochs: list[int] = []
        self.start_state: dict[str, torch.Tensor] = {}
        self.start_adam_steps: float | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.start_state = {k: v.clone() for k, v in pl_module.state_dict().items()}
        state = trainer.optimizers[0].state
        self.start_adam_steps = float(next(iter(state.values()))["step"]) if state else 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append(trainer.current_epoch)


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_resume_from_last_continues_the_saved_epoch(tiny_data, tmp_path):
    def fit(max_epochs: int, seed: int, ckpt_path: str | None) -> tuple[L.Trainer, ResumeProbe]:
        L.seed_everything(seed)
        probe = ResumeProbe()
        t = trainer(max_epochs=max_epochs, limit_train_batches=3, limit_val_batches=2,
                    enable_checkpointing=True,
                    callbacks=[probe, ModelCheckpoint(dirpath=tmp_path, save_last=True)])
        t.fit(XECGModule(XECGNet(width=0.125), lr=3e-3), datamodule=datamodule(tiny_data),
              ckpt_path=ckpt_path)
        return t, probe

    first, probe = fit(max_epochs=2, seed=0, ckpt_path=None)
    assert probe.epochs == [0, 1] and first.global_step == 6
    saved = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)

    # A fresh model (another seed) must start from the checkpoint, not from its own weights.
    second, probe = fit(max_epochs=3, seed=1, ckpt_path="last")
    assert probe.epochs == [2]
    assert second.current_epoch == 3 and second.global_step == 9
    assert probe.start_adam_steps == 6
    assert probe.start_state.keys() == saved["state_dict"].keys()
    for name, value in saved["state_dict"].items():
        torch.testing.assert_close(probe.start_state[name], value, msg=name)


# ------------------------------------------------------------------------------- the commands

def _log_records(data: bytes) -> list:
    """The protobuf records of the bytes of a W&B transaction log ``run-ID.wandb`` (this wandb
    ships no reader): a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then LevelDB-log
    chunks in 32 KiB blocks, each ``crc32 u32, length u16, type u8`` (1 full, 2 first, 3 middle,
    4 last); a block's tail shorter than a chunk header is padding. A record still being
    written (its chunk cut short) ends the list."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    if len(data) < 7:
        return []
    assert data[:7] == struct.pack("<4sHB", b":W&B", 0xBEE1, 0), "not a W&B log"
    block, pos, parts, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if len(chunk) < length:
            break
        if kind == 0:  # zero padding up to the block's end
            pos += -pos % block
            continue
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(parts)
            except DecodeError:
                break
            records.append(record)
    return records


def wandb_records(path: Path, timeout: float = 60.0) -> list:
    """The records of the W&B log ``path``, once it holds the run's exit record or after
    ``timeout`` seconds. wandb-core writes the log from its own process and can trail
    ``wandb.finish`` on a loaded machine: CI once read a log before its run record was there."""
    deadline = time.monotonic() + timeout
    while True:
        records = _log_records(path.read_bytes())
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def wandb_history(run: Path) -> dict[str, list]:
    """Every value logged to the offline W&B run folder ``run``, by key (``a/b`` for nested)."""
    (log,) = run.glob("run-*.wandb")
    history = defaultdict(list)
    for record in wandb_records(log):
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                history[item.key or "/".join(item.nested_key)].append(json.loads(item.value_json))
    return history


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


@pytest.fixture(scope="module")
def train_run(tiny_config, tmp_path_factory) -> Path:
    """The run folder of ``xecg train`` (2 epochs of 3 batches, W&B offline)."""
    folder = tmp_path_factory.mktemp("train")
    config = tiny_config(folder, "train", trainer={"max_epochs": 2, "limit_train_batches": 3})
    assert main(["train", "--config", str(config)]) == 0
    # Finished, so a later run in this process gets a W&B run of its own.
    assert wandb.run is None, "xecg train left its W&B run active"
    return folder / "runs" / "train"


def test_a_missing_dataset_stops_train_before_a_wandb_run_starts(tiny_config, tmp_path,
                                                                 capsys):
    """A typo in the data path costs one line, not a W&B run: finishing the logger of a run
    that failed before it logged anything used to start one just to finish it."""
    nowhere = tmp_path / "nowhere"
    assert main(["train", "--data", str(nowhere)]) == 2  # checked before anything starts
    assert f"--data {nowhere}: no such folder" in capsys.readouterr().err
    a_file = tmp_path / "REFERENCE.csv"  # a file of the dataset, not its folder
    a_file.write_text("Recording,First_label\n")
    assert main(["train", "--data", str(a_file)]) == 2
    assert f"--data {a_file}: not a folder (give the dataset's folder)" in capsys.readouterr().err
    archive = tmp_path / "PhysioNetChallenge2020_Training_CPSC.tar.gz"  # as downloaded
    archive.write_bytes(b"\x1f\x8b")
    assert main(["train", "--data", str(archive)]) == 2
    assert (f"--data {archive}: an archive, not a folder: unpack it first (tar xf {archive.name})"
            in capsys.readouterr().err)
    # the same dataset named in a config: the fit fails in the datamodule's prepare_data
    config = tiny_config(tmp_path, "nodata", data={"source": str(nowhere),
                                                   "store": str(tmp_path / "store")})
    assert main(["train", "--config", str(config)]) == 2
    assert str(nowhere) in capsys.readouterr().err
    assert not offline_runs(tmp_path / "runs" / "nodata") and wandb.run is None


def test_a_split_of_other_records_is_one_line(tiny_config, tiny_data, tmp_path, capsys):
    """A split file made for other data (the full CPSC split given a part of it) stops the run
    with one line that says how to make a split for this store; it was a KeyError traceback
    that advised deleting the user's own file."""
    split = json.loads(Path(tiny_data.split).read_text())
    split["val"] = [*split["val"], "A0101"]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(split))
    config = tiny_config(tmp_path, "othersplit", experiment={"wandb": False},
                         data={"split": str(other)})
    assert main(["fit", "--config", str(config)]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("xecg: error:")]
    assert line.startswith(f"xecg: error: {other}: 1 of its ") and "(first: A0101)" in line
    assert "make one for this store with `xecg split" in line


def test_attention_pages_every_zero_epochs_is_an_invalid_configuration(tiny_config, tmp_path,
                                                                       capsys):
    config = tiny_config(tmp_path, "every0", experiment={"wandb": False})
    assert main(["fit", "--config", str(config), "--attention.every_n_epochs", "0"]) == 2
    assert ("xecg: error: invalid configuration: attention.every_n_epochs must be at least 1, "
            "got 0") in capsys.readouterr().err  # a ZeroDivisionError after the first epoch
    assert not (tmp_path / "runs" / "every0" / "checkpoints").exists()


def test_the_wandb_logger_leaves_out_the_anonymous_setting(tmp_path):
    """Lightning's WandbLogger hands wandb.init `anonymous=None`, and wandb 0.31 printed a
    deprecation WARNING for it on every run."""
    from xecg.lightning_cli import Experiment, _default_logger

    logger = _default_logger(Experiment(name="t"), tmp_path, False, {})
    assert "anonymous" not in logger._wandb_init
    assert logger._wandb_init["project"] == "xecg" and logger._wandb_init["name"] == "t"


def test_train_writes_the_run_folder(train_run, tiny_data):
    last = train_run / "checkpoints" / "last.ckpt"
    (best,) = (train_run / "checkpoints").glob("best-epoch*.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 1

    saved = yaml.safe_load((train_run / "config.yaml").read_text())
    assert saved["model"]["net"]["init_args"]["width"] == 0.125
    assert saved["data"]["store"] == str(tiny_data.store)
    assert saved["trainer"]["precision"] == "32-true"  # chosen for the CPU, and recorded
    # The checkpoint rebuilds the module from itself alone, network and loss included.
    restored = XECGModule.load_from_checkpoint(best, map_location="cpu")
    assert type(restored.net) is XECGNet and restored.net.hparams["width"] == 0.125
    assert restored.criterion.gamma == pytest.approx(0.01)

    report = json.loads((train_run / "metrics.json").read_text())
    for stage in ("val", "test"):
        values = report[stage]
        assert {"micro_f1", "macro_f1", "subset_acc", "auroc", "cpsc_f1"} <= values.keys()
        assert all(f"f1_{c}" in values for c in CLASSES)
        assert all(0 <= values[k] <= 1 for k in ("micro_f1", "macro_f1", "subset_acc", "auroc"))
    # The test numbers' 95% bootstrap intervals over the test records, around them.
    intervals = report["intervals"]["test"]
    assert intervals["records"] == tiny_data.counts["test"] and intervals["resamples"] == 1000
    for metric in ("micro_f1", "macro_f1", "subset_acc"):
        low, high = intervals[metric]
        assert low <= report["test"][metric] <= high and low < high, metric
    assert report["protocol"]["experiment"] == "train"
    assert report["protocol"]["policy"] == "crop" and report["protocol"]["length"] == 972
    assert report["protocol"]["split"] == str(tiny_data.split)
    # What the machine chose for the loader (the tiny config names num_workers: 0; a CPU run
    # pads on the host in float32): config.yaml keeps the empty values, metrics.json these.
    assert report["loader"] == {"num_workers": 0, "worker_kind": "process",
                                "pad_on_device": False, "half_transfer": False,
                                "bucket_multiple": 972}
    assert len(report["thresholds"]) == NUM_CLASSES
    assert Path(report["best_checkpoint"]) == best

    images = sorted((train_run / "attention").glob("*.png"))
    assert images and all(p.read_bytes()[:8] == PNG_MAGIC for p in images)


def test_the_offline_wandb_run_holds_metrics_and_attention_images(train_run):
    (run,) = offline_runs(train_run)
    run_id = (train_run / "wandb_id").read_text().strip()
    assert run.name.endswith(f"-{run_id}")
    history = wandb_history(run)
    for key in ("train/loss", "val/loss", "val/micro_f1", "val/auroc", "test/micro_f1"):
        assert history[key] and all(math.isfinite(v) for v in history[key]), key
    # The metrics.json values are among those logged (the last validation is the best model's).
    report = json.loads((train_run / "metrics.json").read_text())
    assert report["val"]["micro_f1"] == pytest.approx(history["val/micro_f1"][-1])
    assert report["test"]["micro_f1"] == pytest.approx(history["test/micro_f1"][-1])

    assert set(history["attention/_type"]) == {"images/separated"}
    logged = [name for names in history["attention/filenames"] for name in names]
    assert logged
    for name in logged:
        assert (run / "files" / name).read_bytes()[:8] == PNG_MAGIC
    assert all("true:" in c for captions in history["attention/captions"] for c in captions)


def test_fit_override_in_config_csv_log_without_wandb_rerun_keeps_run(tiny_config, tmp_path):
    config = tiny_config(tmp_path, "csv", trainer={"limit_train_batches": 3})
    assert main(["fit", "--config", str(config), "--model.loss.gamma", "0.1",
                 "--experiment.wandb", "false"]) == 0
    run = tmp_path / "runs" / "csv"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["loss"]["init_args"]["gamma"] == 0.1
    assert saved["experiment"]["wandb"] is False
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    # the model was built with the override
    assert ckpt["hyper_parameters"]["loss"]["init_args"]["gamma"] == 0.1

    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert any(r["train/loss"] for r in rows) and any(r["val/micro_f1"] for r in rows)
    assert not (run / "wandb").exists() and not (run / "wandb_id").exists()

    # A fresh fit under the same name keeps the earlier run folder aside, whole.
    assert main(["fit", "--config", str(config), "--experiment.wandb", "false",
                 "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]) == 0
    (kept,) = run.parent.glob("csv.*")
    def gamma(folder: Path) -> float:
        return yaml.safe_load((folder / "config.yaml").read_text())["model"]["loss"][
            "init_args"]["gamma"]

    assert gamma(kept) == 0.1 and (kept / "checkpoints" / "last.ckpt").is_file()
    assert gamma(run) == 0.01


def test_best_val_micro_f1_is_micro_f1_whatever_the_checkpoint_monitors(tiny_config, tmp_path):
    """metrics.json's ``best_val_micro_f1`` is the fit's best validation micro-F1; under a
    checkpoint that monitors ``val/auroc`` (sweeps/smoke.yaml) it held the best AUROC. The
    checkpoint's own score is ``best_checkpoint_score``, with its monitor; ``fit_finished``
    says the fit ran to its end."""
    config = tiny_config(tmp_path, "auroc", trainer={"max_epochs": 3, "limit_train_batches": 2},
                         model={"threshold": 0.2}, checkpoint={"monitor": "val/auroc"})
    assert main(["fit", "--config", str(config), "--experiment.wandb", "false"]) == 0
    run = tmp_path / "runs" / "auroc"
    with open(run / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["val/micro_f1"]]
    micro, auroc = ([float(r[k]) for r in rows] for k in ("val/micro_f1", "val/auroc"))
    assert len(micro) == 3 and max(micro) != max(auroc)
    report = json.loads((run / "metrics.json").read_text())
    assert report["best_val_micro_f1"] == pytest.approx(max(micro), abs=1e-6)
    assert report["best_checkpoint_score"]["monitor"] == "val/auroc"
    assert report["best_checkpoint_score"]["value"] == pytest.approx(max(auroc), abs=1e-6)
    assert report["fit_finished"] is True


def test_lightning_arguments_are_honoured_not_overwritten(tiny_config, tmp_path):
    """The run folder, logger and callbacks are ordinary Lightning arguments."""
    config = tiny_config(tmp_path, "args", trainer={"limit_train_batches": 2,
                                                    "limit_val_batches": 1})
    root = tmp_path / "elsewhere"
    assert main(["fit", "--config", str(config), "--trainer.default_root_dir", str(root),
                 "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                 "--trainer.logger.save_dir", str(tmp_path / "csvlogs"),
                 "--checkpoint.filename", "top-{epoch}", "--early_stopping.patience", "3",
                 "--trainer.callbacks+=lightning.pytorch.callbacks.LearningRateMonitor"]) == 0
    assert not (tmp_path / "runs" / "args").exists()
    assert (root / "checkpoints" / "last.ckpt").is_file()
    assert list((root / "checkpoints").glob("top-0*.ckpt"))
    assert list((tmp_path / "csvlogs").rglob("metrics.csv"))  # the user's logger, not W&B
    assert not (root / "wandb").exists()
    # Lightning saves the config beside the user's logger's files.
    (config_file,) = (tmp_path / "csvlogs").rglob("config.yaml")
    saved = yaml.safe_load(config_file.read_text())
    assert saved["early_stopping"]["patience"] == 3


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_fit_resumes_the_run_and_its_wandb_run_from_last(tiny_config, tmp_path):
    config = tiny_config(tmp_path, "resume", trainer={"limit_train_batches": 3,
                                                       "limit_val_batches": 2})
    run = tmp_path / "runs" / "resume"
    last = run / "checkpoints" / "last.ckpt"
    # Nothing to resume yet: it starts afresh (README: a requeued job can always pass it).
    assert main(["fit", "--config", str(config), "--ckpt_path", "last"]) == 0
    run_id = (run / "wandb_id").read_text()
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert (ckpt["epoch"], ckpt["global_step"]) == (0, 3)

    assert main(["fit", "--config", str(config), "--trainer.max_epochs", "2",
                 "--ckpt_path", "last"]) == 0
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert (ckpt["epoch"], ckpt["global_step"]) == (1, 6)
    assert json.loads((run / "metrics.json").read_text())["val_of"] == "fit epoch 1"
    # The same W&B run continues, and its second part trained epoch 1 only.
    assert (run / "wandb_id").read_text() == run_id
    runs = offline_runs(run)
    assert len(runs) == 2 and all(r.name.endswith(f"-{run_id.strip()}") for r in runs)
    assert set(wandb_history(runs[-1])["epoch"]) == {1}


@pytest.mark.parametrize("command", ["fit", "train"])
def test_a_resume_seeds_as_the_run_it_resumes(tiny_config, tmp_path, capsys, command):
    """README's `xecg fit ... --seed_everything 1` then `... --ckpt_path last`: the resume
    seeded 0 (the config's) and recorded the run as seed 0, so `xecg compare` paired it with
    the wrong seed. The checkpoint keeps its seed and a resume takes it."""
    config = tiny_config(tmp_path, f"seed-{command}", experiment={"wandb": False},
                         trainer={"limit_train_batches": 2, "limit_val_batches": 1},
                         explanations={"max_records": 0})
    run = tmp_path / "runs" / f"seed-{command}"
    assert main([command, "--config", str(config), "--seed_everything", "1"]) == 0
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["xecg_seed"] == 1
    capsys.readouterr()
    assert main([command, "--config", str(config), "--trainer.max_epochs", "2",
                 "--ckpt_path", "last"]) == 0
    assert ("--ckpt_path last: seed_everything 1, as when it was trained (the command said 0)"
            in capsys.readouterr().out)
    assert json.loads((run / "metrics.json").read_text())["seed"] == 1
    assert yaml.safe_load((run / "config.yaml").read_text())["seed_everything"] == 1


def test_a_missing_checkpoint_is_one_line_before_anything_starts(tiny_config, tmp_path, capsys):
    config = tiny_config(tmp_path, "nockpt", experiment={"wandb": True})
    missing = tmp_path / "runs" / "nockpt" / "checkpoints" / "last.ckpt"
    # best-epoch003.ckpt: a file's name, though it starts like Lightning's "best"
    for command, path in [("test", missing), ("fit", missing), ("validate", missing),
                          ("test", Path("best-epoch003.ckpt"))]:
        assert main([command, "--config", str(config), "--ckpt_path", str(path)]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line == f"xecg: error: --ckpt_path {path}: no such checkpoint file"
    assert not (tmp_path / "runs").exists()  # no run folder, no W&B run; data not prepared
    # A remote path is left to Lightning (fsspec), which names it in its own error.
    config = tiny_config(tmp_path, "remote", experiment={"wandb": False})
    with pytest.raises(Exception, match="memory://nowhere/last.ckpt") as err:
        main(["test", "--config", str(config), "--ckpt_path", "memory://nowhere/last.ckpt"])
    assert "no such checkpoint file" not in str(err.value)


def test_fit_without_validation_when_early_stopping_is_off(tiny_config, tmp_path):
    """`early_stopping.patience: 0` turns early stopping off, so a run that skips validation
    does not fail for want of `val/micro_f1`; with patience set, it does (with Lightning's
    message naming the metric)."""
    config = tiny_config(tmp_path, "noval", trainer={"limit_train_batches": 2,
                                                     "limit_val_batches": 0},
                         experiment={"wandb": False})
    assert main(["fit", "--config", str(config), "--early_stopping.patience", "0"]) == 0
    assert (tmp_path / "runs" / "noval" / "checkpoints" / "last.ckpt").is_file()
    with pytest.raises(RuntimeError, match="val/micro_f1"):
        main(["fit", "--config", str(config), "--early_stopping.patience", "5"])


def test_a_value_a_constructor_refuses_is_one_line(tiny_config, tmp_path, capsys):
    config = tiny_config(tmp_path, "bad", experiment={"wandb": False})
    assert main(["fit", "--config", str(config), "--model.loss.gamma", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["xecg: error: invalid configuration: gamma must be a finite number >= 0, "
                   "got -1.0"]


def test_explanation_methods_the_model_lacks_stop_before_training(tiny_config, tmp_path,
                                                                  capsys):
    """``explanations.methods: [attention]`` with the CNN baseline (an ablation's ``cnn``
    variant under common overrides): one line before the first step, where it came after the
    whole fit, when the scores were computed."""
    config = tiny_config(tmp_path, "cnn", explanations={"methods": ["attention"]},
                         model={"net": {"class_path": "xecg.models.CNNBaseline",
                                        "init_args": {"width": 0.125}}})
    assert main(["fit", "--config", str(config), "--experiment.wandb", "false"]) == 2
    err = capsys.readouterr().err
    assert ("xecg: error: --method attention needs xECGNet's attention map A, but the model "
            "CNNBaseline has no attention branch; use --method gradcam or ig") in err
    assert not (tmp_path / "runs" / "cnn" / "checkpoints").exists()
