"""The launch forms of docs/multinode.md: ``torchrun -m xecg`` (here one node of two CPU
processes over gloo, c10d rendezvous on localhost) and the SLURM script
``experiments/slurm/train.sbatch`` (valid bash; with ``srun`` stubbed and SLURM's variables set,
its ``xecg train`` command line is accepted by the parser)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fixtures import ROOT, xecg_env

TORCHRUN = Path(sys.executable).with_name("torchrun")
SBATCH = ROOT / "experiments" / "slurm" / "train.sbatch"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not TORCHRUN.is_file(), reason=f"torchrun is not installed at {TORCHRUN}")
def test_torchrun_runs_the_module_on_two_processes(tiny_config, tmp_path):
    config = tiny_config(tmp_path, "torchrun", experiment={"wandb": False},
                         trainer={"limit_train_batches": 2, "limit_val_batches": 2,
                                  "num_sanity_val_steps": 0},
                         explanations={"methods": ["attention"], "max_records": 4})
    cmd = [str(TORCHRUN), "--nnodes", "1", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{_free_port()}",
           "-m", "xecg", "fit", "--config", str(config),
           "--trainer.num_nodes", "1", "--trainer.devices", "2", "--trainer.strategy", "ddp",
           "--trainer.accelerator", "cpu"]
    result = subprocess.run(cmd, cwd=tmp_path, env=xecg_env(WANDB_MODE="disabled"),
                            capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    metrics = json.loads((tmp_path / "runs" / "torchrun" / "metrics.json").read_text())
    assert 0 <= metrics["val"]["micro_f1"] <= 1 and 0 <= metrics["val"]["auroc"] <= 1
    # torchrun started both ranks; Lightning joined them and launched no processes of its own.
    assert out.count("MEMBER: 1/2") == 1 and out.count("MEMBER: 2/2") == 1, out[-4000:]


def test_the_slurm_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    text = SBATCH.read_text()
    assert "srun python -m xecg train" in text
    assert "--ntasks-per-node=4" in text and "--gres=gpu:4" in text  # one task per GPU


def test_the_slurm_command_line_is_accepted(tmp_path):
    """The script as sbatch would run it on 2 nodes x 4 tasks, with ``srun`` replaced by a stub
    that runs its command with ``--print_config`` appended (parse, print, exit: nothing
    trains), and ``python`` by this interpreter."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {"srun": '#!/bin/sh\nexec "$@" --print_config\n',
             "python": f'#!/bin/sh\nexec "{sys.executable}" "$@"\n'}
    for name, body in stubs.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(stat.S_IRWXU)
    env = xecg_env(WANDB_MODE="disabled", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                   SLURM_SUBMIT_DIR=str(ROOT), SLURM_NNODES="2", SLURM_NTASKS_PER_NODE="4",
                   SLURM_CPUS_PER_TASK="8", VIRTUAL_ENV=str(Path(sys.executable).parents[1]))
    result = subprocess.run(["bash", str(SBATCH), "--data.batch_size", "16"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    printed = yaml.safe_load(result.stdout)
    # devices is a string here ("4"), which Lightning reads as a count, like the int 4.
    assert printed["trainer"]["num_nodes"] == 2 and str(printed["trainer"]["devices"]) == "4"
    assert printed["trainer"]["strategy"] == "ddp"
    assert printed["data"]["batch_size"] == 16  # arguments after the script reach xecg train
    assert printed["experiment"]["name"] == "xecgnet"  # the default CONFIG
