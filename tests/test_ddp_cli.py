"""DDP through the command users type: ``xecg train`` and ``xecg fit`` with two CPU (gloo)
processes. Lightning's DDP launcher starts rank 1 by running the same command line again, so
this must go through the real ``xecg`` script in a subprocess: an in-process call would not
exercise the relaunch (a DDP test on a bare Trainer passed while this command failed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import xecg_command, xecg_env

XECG = Path(sys.executable).with_name("xecg")


def run_xecg(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*xecg_command(), *args], cwd=cwd, env=xecg_env(WANDB_DIR=str(cwd)),
                          capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(xecg_command()[0] != str(XECG),
                    reason=f"the xecg script of this checkout is not installed at {XECG}")
# `xecg fit` on two processes also runs in test_ddp_equivalence and (through torchrun) in
# test_multinode; here it is slow, to keep `make test` within its time.
@pytest.mark.parametrize("command", ["train", pytest.param("fit", marks=pytest.mark.slow)])
def test_ddp_two_processes_through_the_cli(tiny_config, tiny_data, tmp_path, command):
    """The test split holds one record: the second process runs a copy of it (every process
    takes part in the epoch's collectives), which the test stage does not count."""
    from xecg.data.splits import load_split, save_split

    split = load_split(tiny_data.split)
    split["test"] = split["test"][:1]
    save_split(split, tmp_path / "split.json")
    config = tiny_config(tmp_path, f"ddp-{command}",
                         trainer={"limit_train_batches": 2, "limit_val_batches": 2,
                                  "max_epochs": 2},
                         data={"split": str(tmp_path / "split.json")})
    result = run_xecg([command, "--config", str(config), "--trainer.devices", "2",
                       "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "runs" / f"ddp-{command}"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["val"]["micro_f1"] <= 1
    if command == "train":  # fit, then validate and test the best checkpoint
        assert 0 <= metrics["test"]["micro_f1"] <= 1
        assert metrics["intervals"]["test"]["records"] == 1  # the copy is not counted
        assert metrics["val_of"].startswith("best-epoch")
    assert (run / "checkpoints" / "last.ckpt").is_file()
    # Both ranks ran: Lightning reports the group it initialised.
    assert "MEMBER: 2/2" in result.stdout + result.stderr
