"""Reliability of training runs, each fault caused for real: a non-finite loss stops the run
with the step, epoch and records and keeps the last good checkpoint; ``xecg train`` killed with
SIGKILL in the middle of an epoch resumes with ``--ckpt_path last`` to the state an
uninterrupted run reaches; failed writes (full disk, a file where the run folder should be) are
one line and leave the files written before complete."""

from __future__ import annotations

import errno
import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from fixtures import xecg_command, xecg_env
from kill_points import HOLD_FILE
from lightning.pytorch.callbacks import ModelCheckpoint
from test_reliability_store import error_lines
from test_training import offline_runs

from xecg.cli import main
from xecg.data.datamodule import CPSCDataModule
from xecg.guards import NonFiniteLossError, NonFiniteLossGuard
from xecg.models import XECGNet
from xecg.module import XECGModule


class NaNAt(XECGModule):
    """The loss turns NaN at one global step (as a diverging run's would); records the ids of
    that batch."""

    def __init__(self, *args, nan_step: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_step = nan_step
        self.bad_ids: list[str] = []

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if self.global_step == self.nan_step:
            store = self.trainer.datamodule.store
            self.bad_ids = [store.ids[i] for i in batch["index"].tolist()]
            return loss * float("nan")
        return loss


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    L.seed_everything(0)
    dm = CPSCDataModule(str(tiny_data.store), split=str(tiny_data.split), length=972,
                        batch_size=16, num_workers=0)
    module = NaNAt(XECGNet(width=0.125), lr=3e-3, nan_step=4)  # epoch 1, its second batch
    last = tmp_path / "last.ckpt"
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=3, limit_train_batches=3,
                        limit_val_batches=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[NonFiniteLossGuard(),
                                   ModelCheckpoint(dirpath=tmp_path, filename="last",
                                                   enable_version_counter=False)])
    with pytest.raises(NonFiniteLossError) as caught:
        trainer.fit(module, datamodule=dm)
    message = str(caught.value)
    assert message.startswith("non-finite training loss (nan) at epoch 1, step 4 (batch 1 of "
                              "the epoch); records in the batch: " + ", ".join(module.bad_ids))
    assert len(module.bad_ids) == 16 and "\n" not in message
    assert "; the optimiser took no step from it; " in message
    assert f"the last good checkpoint is {last}" in message
    # last.ckpt is the end of epoch 0, and the weights never saw the NaN.
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 3)
    weights = [v for v in saved["state_dict"].values() if v.is_floating_point()]
    assert all(torch.isfinite(v).all() for v in weights)
    # No step waited for the verdict: the epoch ran to its end (steps 5 and 6 trained on) and
    # the guard read the verdicts back there, before validation and any checkpoint. Adam (fused)
    # skipped step 4 on the device: 5 of its 6 steps were taken, and no weight is NaN.
    assert trainer.global_step == 6
    (opt,) = trainer.optimizers
    assert {int(state["step"]) for state in opt.state.values()} == {5}
    assert all(torch.isfinite(p).all() for p in module.parameters())


class UnfusedNaNAt(NaNAt):
    """The same with an optimiser that cannot skip a step on the device (a user's own)."""

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, fused=False)


def test_with_an_unfused_optimiser_the_guard_stops_before_the_step(tiny_data, tmp_path):
    """Without ``found_inf`` the guard reads each loss before its backward (a sync per step) and
    stops at once."""
    dm = CPSCDataModule(str(tiny_data.store), split=str(tiny_data.split), length=972,
                        batch_size=16, num_workers=0)
    module = UnfusedNaNAt(XECGNet(width=0.125), lr=3e-3, nan_step=4)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=3, limit_train_batches=3,
                        limit_val_batches=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        enable_checkpointing=False, callbacks=[NonFiniteLossGuard()])
    with pytest.raises(NonFiniteLossError, match=r"^non-finite training loss \(nan\) at epoch 1, "
                       r"step 4 .*; training stopped before this step changed the weights; "):
        trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 4
    assert all(torch.isfinite(p).all() for p in module.parameters())


DDP_NAN_SCRIPT = """
import json, sys
import lightning as L, torch
from xecg.data.datamodule import CPSCDataModule
from xecg.guards import NonFiniteLossError, NonFiniteLossGuard
from xecg.models import XECGNet
from xecg.module import XECGModule

class NaNOnRank1(XECGModule):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step == 1 and self.global_rank == 1 else loss

store, split, out = sys.argv[1:4]
L.seed_everything(0)
dm = CPSCDataModule(store, split=split, length=972, batch_size=8, num_workers=0)
module = NaNOnRank1(XECGNet(width=0.125), lr=3e-3)
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1,
                    limit_train_batches=3, limit_val_batches=0, logger=False,
                    enable_progress_bar=False, enable_model_summary=False,
                    enable_checkpointing=False, use_distributed_sampler=False,
                    callbacks=[NonFiniteLossGuard()])
try:
    trainer.fit(module, datamodule=dm)
    message = None
except NonFiniteLossError as err:
    message = str(err)
(opt,) = trainer.optimizers
with open(f"{out}/rank{trainer.global_rank}.json", "w") as f:
    json.dump({"message": message, "step": trainer.global_step,
               "adam_steps": sorted({int(s["step"]) for s in opt.state.values()}),
               "weights": [float(p.double().sum()) for p in module.parameters()]}, f)
"""


def test_a_nan_on_one_ddp_rank_stops_every_rank_with_no_step_taken(tiny_data, tmp_path):
    """Two gloo processes, a NaN loss on rank 1 at step 1: every process skips that step (the
    verdict is all-reduced on the device, so the replicas stay equal) and both stop at the
    epoch's end, rank 1 naming its records, rank 0 naming the other process."""
    script = tmp_path / "ddp_nan.py"
    script.write_text(DDP_NAN_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(tiny_data.store),
                           str(tiny_data.split), str(tmp_path)], cwd=tmp_path, env=xecg_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["message"].startswith("another process's training loss was not finite at "
                                          "epoch 0, step 1 (batch 1 of the epoch); the optimiser "
                                          "took no step from it")
    assert ranks[1]["message"].startswith("non-finite training loss (nan) at epoch 0, step 1 "
                                          "(batch 1 of the epoch); records in the batch: ")
    for r in ranks:
        assert r["step"] == 3 and r["adam_steps"] == [2]  # 3 steps run, step 1 skipped
    assert ranks[0]["weights"] == ranks[1]["weights"]  # the replicas stayed equal
    assert all(math.isfinite(w) for w in ranks[0]["weights"])


def test_a_diverging_run_stops_with_one_line_from_the_command(tiny_config, tmp_path, capfd):
    """A learning rate of 1e30: the second step's loss is NaN; `xecg fit` exits 2."""
    config = tiny_config(tmp_path, "diverge", trainer={"limit_train_batches": 3})
    assert main(["fit", "--config", str(config), "--model.lr", "1e30",
                 "--experiment.wandb", "false"]) == 2
    err = capfd.readouterr().err
    (line,) = error_lines(err)
    assert line.startswith("xecg: error: non-finite training loss (nan) at epoch 0, step 1 "
                           "(batch 1 of the epoch); records in the batch: ")
    assert "Traceback" not in err
    assert not (tmp_path / "runs" / "diverge" / "checkpoints" / "last.ckpt").exists()


# -------------------------------------------------------------------------- SIGKILL, resume

def _load(path: Path) -> dict | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError):
        return None


def _wait_for_checkpoint(path: Path, proc: subprocess.Popen, timeout: float = 240) -> dict:
    """Poll (no callback in the run) until ``path`` holds a whole checkpoint."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and (ckpt := _load(path)) is not None:
            return ckpt
        assert proc.poll() is None, f"the run ended first ({proc.returncode})"
        time.sleep(0.02)
    raise AssertionError(f"no {path} after {timeout} s")


def _wait_for_hold(flag: Path, proc: subprocess.Popen, timeout: float = 240) -> int:
    """Poll until the run held by ``kill_points.HoldAtEpoch`` writes ``flag``; its global step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if flag.is_file() and (text := flag.read_text()):
            return int(text)
        assert proc.poll() is None, f"the run ended first ({proc.returncode})"
        time.sleep(0.05)
    raise AssertionError(f"the run did not reach its hold point in {timeout} s")


def _callback_state(ckpt: dict, name: str) -> dict:
    (key,) = [k for k in ckpt["callbacks"] if k.startswith(name)]
    return ckpt["callbacks"][key]


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_train_killed_mid_epoch_resumes_to_the_uninterrupted_state(tiny_config, tmp_path):
    sections = {"trainer": {"max_epochs": 3, "limit_train_batches": 4, "limit_val_batches": 1},
                "attention": {"num_records": 0},
                # threshold 0.2: a few steps give micro-F1 above 0 that changes between epochs,
                # so the best checkpoint and early stopping have scores to keep.
                "model": {"scheduler": "cosine", "threshold": 0.2},
                "early_stopping": {"patience": 5}}
    # The reference: the same run, not interrupted (in this process).
    (tmp_path / "ref").mkdir()
    reference = tiny_config(tmp_path / "ref", "run", **sections)
    assert main(["train", "--config", str(reference)]) == 0
    ref_run = tmp_path / "ref" / "runs" / "run"

    # The same run with a callback that holds it before epoch 1's first step (kill_points.py),
    # where it is killed: no race with the run's next checkpoint, however busy the machine.
    hold = {"callbacks": [{"class_path": "kill_points.HoldAtEpoch", "init_args": {"epoch": 1}}]}
    config = tiny_config(tmp_path, "run",
                         **{**sections, "trainer": {**sections["trainer"], **hold}})
    run = tmp_path / "runs" / "run"
    last = run / "checkpoints" / "last.ckpt"
    command = [*xecg_command(), "train", "--config", str(config)]
    env = xecg_env(WANDB_DIR=str(tmp_path))
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env["PYTHONPATH"]])
    flag = tmp_path / "held"
    proc = subprocess.Popen(command, env={**env, HOLD_FILE: str(flag)}, cwd=tmp_path,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        held_at = _wait_for_hold(flag, proc)
        first = _load(last)
        os.kill(proc.pid, signal.SIGKILL)  # in epoch 1, 4 training steps to go
        proc.wait(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # W&B's service process, if it is still there
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL
    killed = _load(last)
    assert held_at == 4 and first is not None
    assert (first["epoch"], killed["epoch"], killed["global_step"]) == (0, 0, 4)
    run_id = (run / "wandb_id").read_text()
    # whole, from epoch 0, and marked unfinished (xecg compare --split val leaves it out)
    assert json.loads((run / "metrics.json").read_text())["fit_finished"] is False

    resumed = subprocess.run([*command, "--ckpt_path", "last"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    ours, ref = _load(last), _load(ref_run / "checkpoints" / "last.ckpt")
    assert (ours["epoch"], ours["global_step"]) == (ref["epoch"], ref["global_step"]) == (2, 12)
    for name, value in ref["state_dict"].items():
        torch.testing.assert_close(ours["state_dict"][name], value, rtol=0, atol=0, msg=name)
    (opt,), (ref_opt,) = ours["optimizer_states"], ref["optimizer_states"]
    assert opt["param_groups"] == ref_opt["param_groups"]
    for i, state in ref_opt["state"].items():
        assert float(opt["state"][i]["step"]) == float(state["step"]) == 12
        torch.testing.assert_close(opt["state"][i]["exp_avg_sq"], state["exp_avg_sq"],
                                   rtol=0, atol=0)
    assert ours["lr_schedulers"] == ref["lr_schedulers"]
    assert ours["lr_schedulers"][0]["last_epoch"] == 3
    stopping, ref_stopping = (_callback_state(c, "EarlyStopping") for c in (ours, ref))
    assert stopping == ref_stopping
    best, ref_best = (_callback_state(c, "ModelCheckpoint{'monitor': 'val/micro_f1'")
                      for c in (ours, ref))
    assert best["best_model_score"] == ref_best["best_model_score"] == stopping["best_score"]
    assert Path(best["best_model_path"]).name == Path(ref_best["best_model_path"]).name
    assert Path(best["best_model_path"]).parent == run / "checkpoints"

    # metrics.json: one whole JSON object, the same numbers as the uninterrupted run's.
    metrics = json.loads((run / "metrics.json").read_text())
    ref_metrics = json.loads((ref_run / "metrics.json").read_text())
    for key in ("val", "test", "val_of", "test_of", "best_val_micro_f1", "thresholds",
                "best_checkpoint_score", "fit_finished"):
        assert json.dumps(metrics[key]) == json.dumps(ref_metrics[key]), key  # NaN == NaN
    assert metrics["fit_finished"] is True
    assert not [p for p in run.rglob(".*.tmp")], "a temporary file was left behind"
    # The W&B run keeps its id: both parts are offline runs of the same id.
    assert (run / "wandb_id").read_text() == run_id
    parts = offline_runs(run)
    assert len(parts) == 2 and all(p.name.endswith(f"-{run_id.strip()}") for p in parts)


# --------------------------------------------------------------------------- failed writes

def test_a_full_disk_at_metrics_json_keeps_the_previous_file(tiny_config, tmp_path,
                                                             monkeypatch, capsys):
    """ENOSPC when the second epoch's metrics.json is put in place."""
    config = tiny_config(tmp_path, "full", trainer={"max_epochs": 2, "limit_train_batches": 2,
                                                    "limit_val_batches": 1})
    metrics = tmp_path / "runs" / "full" / "metrics.json"
    real, calls = os.replace, []

    def full_disk(src, dst):
        if Path(dst) == metrics:
            calls.append(dst)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    assert main(["fit", "--config", str(config), "--experiment.wandb", "false"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line == (f"xecg: error: could not write {metrics}: No space left on device; "
                    "nothing was written there")
    assert json.loads(metrics.read_text())["val_of"] == "fit epoch 0"
    assert not [p.name for p in metrics.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_previous_one(tiny_config, tmp_path,
                                                                     monkeypatch, capsys):
    """The disk is full when epoch 1's last.ckpt is flushed (where a full disk or quota shows
    on many file systems)."""
    config = tiny_config(tmp_path, "ckpt", trainer={"max_epochs": 2, "limit_train_batches": 2,
                                                    "limit_val_batches": 1})
    checkpoints = tmp_path / "runs" / "ckpt" / "checkpoints"
    fsync, flushed = os.fsync, []

    def full_disk(fd):
        if ".last.ckpt." in os.readlink(f"/proc/self/fd/{fd}"):
            flushed.append(fd)
            if len(flushed) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    assert main(["fit", "--config", str(config), "--experiment.wandb", "false"]) == 2
    monkeypatch.undo()
    (line,) = error_lines(capsys.readouterr().err)
    assert line == (f"xecg: error: could not write {checkpoints / 'last.ckpt'}: No space left "
                    "on device; the previous checkpoint there is unchanged")
    assert _load(checkpoints / "last.ckpt")["epoch"] == 0
    assert not [p.name for p in checkpoints.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_on_disk_is_one_line(tiny_config, tmp_path):
    """A real write failure in a real process: files of at most 256 KiB (RLIMIT_FSIZE; Python
    ignores SIGXFSZ, so writes fail with EFBIG as on a full disk). The first checkpoint (about
    1 MB) fails and leaves no partial file."""
    config = tiny_config(tmp_path, "small", trainer={"limit_train_batches": 2,
                                                     "limit_val_batches": 1},
                         attention={"num_records": 0})
    limit = 256 << 10

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run([*xecg_command(), "fit", "--config", str(config),
                             "--experiment.wandb", "false"], env=xecg_env(), cwd=tmp_path,
                            capture_output=True, text=True, preexec_fn=small_files, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    checkpoints = tmp_path / "runs" / "small" / "checkpoints"
    assert line.startswith(f"xecg: error: could not write {checkpoints}/")
    assert line.endswith(".ckpt: File too large; the previous checkpoint there is unchanged")
    assert "Traceback" not in result.stderr
    assert not list(checkpoints.iterdir()), "a partial checkpoint was left"


def test_a_run_folder_under_a_file_is_one_line(tiny_config, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    config = tiny_config(tmp_path, "nowhere")
    assert main(["fit", "--config", str(config), "--experiment.runs_dir",
                 str(tmp_path / "file" / "runs"), "--experiment.wandb", "false"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line == (f"xecg: error: could not write {tmp_path / 'file' / 'runs' / 'nowhere'}: "
                    "Not a directory; the run folder cannot be made")


# ------------------------------------------------------------------------- a DDP rank dies

def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_a_ddp_rank_that_dies_stops_the_job_and_it_resumes(tiny_config, tmp_path):
    """Two CPU processes; rank 1 is killed (SIGKILL) in epoch 1. Rank 0 does not wait for the
    collective timeout: gloo reports the closed connection at the next gradient all-reduce
    (one line, exit 2), or Lightning's launcher in rank 0, which polls its child processes
    every 5 s, kills the job (SIGKILL; what NCCL runs get). last.ckpt (epoch 0, written by
    rank 0) is whole, and the job resumes from it."""
    config = tiny_config(tmp_path, "ddp", trainer={"max_epochs": 3, "limit_train_batches": 6,
                                                   "limit_val_batches": 1},
                         attention={"num_records": 0})
    ddp = ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--experiment.wandb", "false"]
    command = [*xecg_command(), "fit", "--config", str(config), *ddp]
    last = tmp_path / "runs" / "ddp" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(command, env=xecg_env(), cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(last, proc, timeout=400)
        ranks = [p for p in _children(proc.pid)
                 if "xecg" in Path(f"/proc/{p}/cmdline").read_text()]
        assert len(ranks) == 1, ranks
        killed_at = time.monotonic()
        os.kill(ranks[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
        stopped_after = time.monotonic() - killed_at
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode in (2, -signal.SIGKILL), err[-3000:]
    if proc.returncode == 2:
        (line,) = error_lines(err)
        assert line.startswith("xecg: error: another process of this distributed run stopped")
        assert "Traceback" not in err
    assert stopped_after < 60, f"the job took {stopped_after:.0f} s to stop"
    assert _load(last)["epoch"] == 0
    resumed = subprocess.run([*command, "--ckpt_path", "last"], env=xecg_env(), cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ckpt = _load(last)
    assert (ckpt["epoch"], ckpt["global_step"]) == (2, 9)  # 6 batches of 2 ranks: 3 steps each


# ------------------------------------------------- a resume onto other data or another network

def test_a_resume_onto_another_split_stops_and_a_test_on_training_records_warns(
        tiny_config, tiny_data, tmp_path, capfd):
    """A store prepared again from changed data remakes xecg's split, so records the checkpoint
    trained on can land in the test split. A resume refuses that in one line naming the moved
    records; a test of the checkpoint on such a split runs and warns that they are not held
    out. The split's digest is in metrics.json, so two runs' splits can be compared."""
    from xecg.data.splits import load_split, save_split, split_digest

    split = load_split(tiny_data.split)
    path = tmp_path / "split.json"
    save_split(split, path)
    config = tiny_config(tmp_path, "moved", data={"split": str(path)},
                         trainer={"limit_train_batches": 2, "limit_val_batches": 1})
    args = ["--config", str(config), "--experiment.wandb", "false"]
    assert main(["fit", *args]) == 0
    metrics = json.loads((tmp_path / "runs" / "moved" / "metrics.json").read_text())
    assert metrics["protocol"]["split_digest"] == split_digest(split)
    moved = split["train"][0]
    split["train"], split["test"] = split["train"][1:], [moved, *split["test"]]
    save_split(split, path)
    capfd.readouterr()
    assert main(["fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", "last"]) == 2
    err = capfd.readouterr().err
    (line,) = error_lines(err)
    assert line == (f"xecg: error: the checkpoint was trained on another split than {path} holds "
                    "now (train/val/test 96/80/24 records, now 95/80/25; 1 of the test and 0 of "
                    f"the validation records were training records (first: {moved})). Resume "
                    "with the data and split it was trained on, or start a new run (without "
                    "--ckpt_path)")
    assert "Traceback" not in err
    last = tmp_path / "runs" / "moved" / "checkpoints" / "last.ckpt"
    with pytest.warns(UserWarning, match=f"training records \\(first: {moved}\\)\\): numbers "
                      "on those records are not held out"):
        assert main(["test", *args, "--ckpt_path", str(last)]) == 0


def test_a_resume_with_another_network_is_one_line(tiny_config, tmp_path, capfd):
    config = tiny_config(tmp_path, "wider", trainer={"limit_train_batches": 2,
                                                     "limit_val_batches": 1})
    args = ["--config", str(config), "--experiment.wandb", "false"]
    assert main(["fit", *args]) == 0
    capfd.readouterr()
    assert main(["fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", "last",
                 "--model.net.init_args.width", "0.25"]) == 2
    err = capfd.readouterr().err
    (line,) = error_lines(err)
    last = tmp_path / "runs" / "wider" / "checkpoints" / "last.ckpt"
    assert line.startswith(f"xecg: error: {last}: its network does not fit this run's (size "
                           "mismatch for net.")
    assert line.endswith("more): use the settings it was trained with (its run folder's "
                         "config.yaml)")
    assert "Traceback" not in err
