"""`make sim2real` and `make finetune-cv` as a user types them (with REAL, ARGS and FOLDS), in
a subprocess: the Makefile's own steps (train, find the best checkpoint, `xecg evaluate`; the
cross-validation script and its summary) run, at a size of seconds. The Makefile's `setup`
target is this test run's environment (`-o` keeps make from reinstalling it). `make test` on
another torch is checked by what make would run (`-n`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures import ROOT, write_wfdb_record, xecg_env

from xecg.data.synthetic import synth_record

VENV = Path(sys.prefix)
# A model of seconds: few short records, one short epoch, a narrow network.
TINY = ("--data.synthetic.n 60 --data.synthetic.durations [6.0,8.0] --trainer.max_epochs 1 "
        "--trainer.limit_train_batches 2 --trainer.limit_val_batches 2 --data.length 972 "
        "--model.net.init_args.width 0.125 --experiment.wandb false "
        "--trainer.enable_progress_bar false --attention.num_records 0")

pytestmark = pytest.mark.skipif(
    shutil.which("make") is None or not (VENV / "bin" / "xecg").exists(),
    reason="needs make and the xecg command in this environment")


def make(target: str, cwd: Path, **variables: str) -> subprocess.CompletedProcess:
    """``make TARGET VAR=VALUE ...`` with the repository's Makefile, run in ``cwd`` (which links
    the repository's experiments/), without its setup step."""
    command = ["make", "-f", str(ROOT / "Makefile"), "-o", str(VENV / ".installed"), target,
               f"VENV={VENV}", *[f"{k}={v}" for k, v in variables.items()]]
    return subprocess.run(command, cwd=cwd, env=xecg_env(), capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with experiments/ linked and REAL: 20 synthetic records written as Challenge
    2020 WFDB files (a real file format; labels in the header)."""
    work = tmp_path_factory.mktemp("make")
    (work / "experiments").symlink_to(ROOT / "experiments")
    for i in range(20):
        labels = [("Normal",), ("AF",), ("RBBB",), ("PVC",)][i % 4]
        rec = synth_record(7, i, labels=list(labels), duration_s=8.0)
        write_wfdb_record(work / "real", f"A{i + 1:04d}", rec.signal, list(labels))
    return work


def test_make_sim2real_trains_on_synthetic_data_and_evaluates_the_real_records(workdir):
    """A run per seed of SEEDS (the first in runs/sim2real, the others beside it, ARGS given to
    each), then ``xecg evaluate`` of their best checkpoints as one ensemble."""
    done = make("sim2real", workdir, REAL="real", ARGS=TINY, SEEDS="0 1")
    assert done.returncode == 0, done.stderr[-3000:]
    run = workdir / "runs" / "sim2real"
    best = [Path(json.loads((workdir / "runs" / name / "metrics.json").read_text())
                 ["best_checkpoint"]) for name in ("sim2real", "sim2real-seed1")]
    result = json.loads((run / "real" / "metrics.json").read_text())
    assert result["records"] == 20 and [Path(c) for c in result["checkpoints"]] == best
    assert result["protocol"]["members"] == 2
    assert {"micro_f1", "auroc", "cpsc_f1", "auroc_AF"} <= set(result["evaluate"])
    # each run its own seed: the two networks start apart
    first, second = (torch.load(b, map_location="cpu", weights_only=True)["state_dict"]
                     for b in best)
    name = next(k for k in first if k.endswith("weight") and first[k].dim() == 3)
    assert not torch.equal(first[name], second[name])
    # sim2real.yaml's settings reached the data and the checkpoint.
    assert (workdir / "data" / "synthetic-sim2real" / "derived" / "bandpass-0.5-40Hz").is_dir()
    meta = json.loads((workdir / "data" / "synthetic-sim2real" / "meta.json").read_text())
    assert meta["fingerprint"].endswith(" st_variety=True lead_gains=adult")
    saved = torch.load(best[0], map_location="cpu", weights_only=True)
    assert saved["xecg_bandpass"] == [0.5, 40.0]

    missing = make("sim2real", workdir, REAL="nowhere", ARGS=TINY, NAME="sim2real-2", SEEDS="0")
    assert missing.returncode == 0 and "no real records at nowhere" in missing.stdout
    assert (workdir / "runs" / "sim2real-2" / "metrics.json").is_file()


def test_make_finetune_cv_runs_both_arms_on_every_fold(workdir):
    if not (workdir / "runs" / "sim2real" / "metrics.json").exists():
        pytest.skip("needs the make sim2real run of the test before")
    done = make("finetune-cv", workdir, REAL="real", FOLDS="2", ARGS=TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = (workdir / "runs" / "finetune-cv" / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith(("| scratch", "| finetune"))]
    assert [r.split("|")[1:3] for r in rows] == [[" scratch ", " 2 "], [" finetune ", " 2 "]]
    for fold in (0, 1):
        tested = json.loads((workdir / "runs" / "finetune-cv" / f"finetune-fold{fold}"
                             / "metrics.json").read_text())
        assert "test" in tested


def test_make_test_on_another_torch_builds_its_own_environment(tmp_path):
    """README "Tests": ``make VENV=.venv-2.11 TORCH=torch==2.11.0 test``. Installing that torch
    takes GBs, so make only prints what it would run (``-n``): a new environment at VENV, the
    torch that TORCH names installed into it before xecg, and the suite run by its Python."""
    venv = tmp_path / ".venv-2.11"
    done = subprocess.run(["make", "-n", "-f", str(ROOT / "Makefile"), f"VENV={venv}",
                           "TORCH=torch==2.11.0", "test"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    steps = [next(i for i, line in enumerate(lines) if what in line) for what in (
        f"-m venv {venv}", f"{venv}/bin/python -m pip install -q \"torch==2.11.0\"",
        f"{venv}/bin/python -m pip install -q -e \".[dev]\"", f"{venv}/bin/python -m pytest")]
    assert steps == sorted(steps)  # in this order
