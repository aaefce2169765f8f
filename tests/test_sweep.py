"""``xecg sweep``: an Optuna study of tiny experiments on the synthetic store. Through the real
command: a sweep writes its table, best config and plots and resumes to more trials without
rerunning any; a worker killed mid-trial leaves a FAIL trial and the next run completes the
study; two workers share a journal file. In process: pruning, a value enqueued outside a log
range, bad sweep files, the journal heartbeat and the sampler's view of the study."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from fixtures import ROOT, xecg_command, xecg_env
from optuna.trial import TrialState

from xecg.atomic import process_gone
from xecg.cli import main
from xecg.sweep.reports import write_reports
from xecg.sweep.spec import load_sweep
from xecg.sweep.storage import HEARTBEAT_KEY, JournalHeartbeatStorage, mask_url
from xecg.sweep.study import OUTSIDE_ATTR, SkipOutsideTrials, fail_dead_trials

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GAMMA = "model.loss.gamma"


def xecg(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess | subprocess.Popen:
    """The ``xecg`` command users type (this checkout's code first on the path); with
    ``popen=True`` a running process in its own process group."""
    command = xecg_command()
    env = xecg_env(WANDB_DIR=str(cwd))
    if kwargs.pop("popen", False):
        log = open(cwd / "popen.log", "w")  # noqa: SIM115 - closed by the caller's wait
        return subprocess.Popen([*command, *args], cwd=cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=kwargs.pop("timeout", 400))


def write_sweep(folder: Path, tiny_config, name: str = "sweep", wandb: bool = False,
                epochs: int = 2, train_batches: int = 2, **sections) -> Path:
    """A sweep of the tiny experiment (no attention images, 2 epochs of 2 batches, one
    validation and one test batch); ``sections`` replace the defaults' top-level keys."""
    experiment = tiny_config(folder, f"{name}-experiment",
                             trainer={"max_epochs": epochs, "limit_train_batches": train_batches,
                                      "limit_val_batches": 1, "limit_test_batches": 1},
                             attention={"num_records": 0})
    sweep = {
        "experiment": str(experiment),
        "overrides": {"experiment.wandb": wandb},
        "search_space": {GAMMA: {"type": "float", "low": 1.0e-4, "high": 10.0, "log": True},
                         "model.lr": {"type": "float", "low": 1.0e-3, "high": 5.0e-3,
                                      "log": True}},
        "objective": {"metric": "val/micro_f1_best", "direction": "maximize"},
        "n_trials": 3,
        "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 2},
        "pruner": {"name": "none"},
        **sections,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def load_study(storage: str, name: str = "sweep") -> optuna.Study:
    if "://" not in storage:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(storage))
    return optuna.load_study(study_name=name, storage=storage)


def read_table(out: Path) -> list[dict[str, str]]:
    with open(out / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Times and sizes of a run folder's files. W&B's own debug logs are left out: a W&B
    service that outlives a run may still append to them, although nothing reran."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in folder.rglob("*")
            if p.is_file() and not (p.parent.name == "logs" and p.name.startswith("debug"))}


def run_record(run: Path):
    from test_training import wandb_records

    (log,) = run.glob("run-*.wandb")
    return next(r.run for r in wandb_records(log) if r.WhichOneof("record_type") == "run")


# ------------------------------------------------------------------------- the real command

def test_sweep_writes_its_results_and_resumes_without_rerunning(tiny_config, tmp_path, capsys):
    """3 trials with W&B offline (the first enqueued with gamma 0, below the log range), then
    the same command with --n-trials 5."""
    sweep = write_sweep(tmp_path, tiny_config, wandb=True, enqueue=[{GAMMA: 0.0}])
    out = tmp_path / "out"
    result = xecg(["sweep", str(sweep), "--out", str(out)], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    rows = read_table(out)
    assert [(r["number"], r["state"]) for r in rows] == [(str(i), "COMPLETE") for i in range(3)]
    # The enqueued gamma 0 ran as given, outside the log range, and the sampler did not see it.
    assert float(rows[0][GAMMA]) == 0.0
    run0 = out / "trials" / "trial-0000"
    saved = yaml.safe_load((run0 / "config.yaml").read_text())
    assert saved["model"]["loss"]["init_args"]["gamma"] == 0.0
    study = load_study(str(out / "study.journal"))
    assert study.trials[0].user_attrs[OUTSIDE_ATTR] == [GAMMA]
    assert all(1e-4 <= t.params[GAMMA] <= 10 for t in study.trials[1:])
    assert study.user_attrs["versions"]["optuna"] == optuna.__version__
    assert study.user_attrs["versions"]["xecg"]

    for row, trial in zip(rows, study.trials):
        run = Path(row["run_dir"])
        report = json.loads((run / "metrics.json").read_text())
        assert report["trial"] == trial.number and report["params"] == trial.user_attrs["params"]
        # val/micro_f1_best: the best validation micro-F1 of the fit, the checkpoint's score.
        assert trial.value == pytest.approx(report["best_val_micro_f1"])
        assert float(row["val/micro_f1_best"]) == pytest.approx(trial.value)
        # Each trial's offline W&B run is in the study's group, as a trial.
        (wandb_run,) = (run / "wandb").glob("offline-run-*")
        record = run_record(wandb_run)
        assert (record.run_group, record.job_type) == ("sweep", "trial")
        assert record.display_name == f"trial-{trial.number:04d}"
    (summary,) = (out / "wandb").glob("offline-run-*")
    assert (run_record(summary).run_group, run_record(summary).job_type) == ("sweep", "summary")

    for name in ("history", "slice"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    best = out / "best.yaml"
    config = yaml.safe_load(best.read_text())
    assert config["experiment"]["name"] == "sweep-best"
    assert config["model"]["loss"]["init_args"]["gamma"] == study.best_trial.user_attrs[
        "params"][GAMMA]
    with pytest.raises(SystemExit) as exit_info:  # `xecg train --config best.yaml` parses it
        main(["train", "--config", str(best), "--print_config"])
    assert exit_info.value.code in (0, None)

    before = {i: snapshot(out / "trials" / f"trial-{i:04d}") for i in range(3)}
    capsys.readouterr()
    # The same command (in this process, to save a start-up) continues the study to 5.
    assert main(["sweep", str(sweep), "--out", str(out), "--n-trials", "5"]) == 0
    rows = read_table(out)
    assert [(r["number"], r["state"]) for r in rows] == [(str(i), "COMPLETE") for i in range(5)]
    for i in range(3):
        assert snapshot(out / "trials" / f"trial-{i:04d}") == before[i], f"trial {i} was rerun"
    assert "3 of 5 trials finished" in capsys.readouterr().out
    params = [(r[GAMMA], r["model.lr"]) for r in rows]
    assert len(set(params)) == 5


def test_a_killed_worker_leaves_its_trial_failed_and_the_study_goes_on(tiny_config, tmp_path):
    sweep = write_sweep(tmp_path, tiny_config, epochs=3, train_batches=6, n_trials=2)
    out, storage = tmp_path / "out", f"sqlite:///{tmp_path / 'study.db'}"
    args = ["sweep", str(sweep), "--out", str(out), "--storage", storage]
    proc = xecg(args, tmp_path, popen=True)
    try:
        deadline = time.monotonic() + 180
        while not (out / "trials" / "trial-0000").is_dir():
            assert proc.poll() is None, (tmp_path / "popen.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial started"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, as a crash would
        proc.wait()
    assert load_study(storage).trials[0].state == TrialState.RUNNING

    assert main(args) == 0
    study = load_study(storage)
    states = [t.state for t in study.trials]
    assert states[0] == TrialState.FAIL
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) == 2
    assert TrialState.RUNNING not in states
    # The killed trial's values were queued again once.
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["params"] == study.trials[0].user_attrs["params"]
    assert [r["state"] for r in read_table(out)][0] == "FAIL"


def test_ctrl_c_is_one_line_and_the_rerun_runs_the_interrupted_baseline(tiny_config,
                                                                         tmp_path):
    """Ctrl-C during the enqueued baseline (gamma 0): one line, no traceback (there were two),
    exit 130, the trial FAIL; the same command again queues the baseline anew and runs it
    (before, Optuna's skip_if_exists took the failed trial for done and the study never ran
    gamma 0)."""
    sweep = write_sweep(tmp_path, tiny_config, epochs=3, train_batches=6, n_trials=1,
                        enqueue=[{GAMMA: 0.0, "model.lr": 0.002}])
    out = tmp_path / "out"
    args = ["sweep", str(sweep), "--out", str(out)]
    proc = xecg(args, tmp_path, popen=True)
    try:
        deadline = time.monotonic() + 180
        while not list((out / "trials").glob("trial-0000/checkpoints/*.ckpt")):
            assert proc.poll() is None, (tmp_path / "popen.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint of trial 0"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole group
        assert proc.wait(timeout=120) == 130
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "popen.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    assert ("xecg sweep: interrupted; trial 0 is marked FAIL: run the same command again to "
            "continue") in log
    storage = str(out / "study.journal")
    assert [t.state for t in load_study(storage).trials] == [TrialState.FAIL]

    result = xecg(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "re-queued {'model.loss.gamma': 0.0, 'model.lr': 0.002} (trial 0 failed)" in (
        result.stdout)
    trials = load_study(storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["params"][GAMMA] == 0.0  # outside the space: not in .params


def _wait_for_trials(proc: subprocess.Popen, out: Path, numbers: list[int],
                     cwd: Path) -> optuna.Study:
    """The study once trials ``numbers`` of the sweep ``proc`` runs have their run folders."""
    deadline = time.monotonic() + 240
    while not all((out / "trials" / f"trial-{n:04d}").is_dir() for n in numbers):
        assert proc.poll() is None, (cwd / "popen.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the trials did not start"
        time.sleep(0.2)
    time.sleep(1.0)
    return load_study(str(out / "study.journal"))


def test_ctrl_c_of_the_command_stops_its_workers(tiny_config, tmp_path):
    """`kill -INT` of the command alone (not its group) reaches the workers: each fails its
    trial and exits, and trials.csv, written after them, says FAIL (SIGINT was ignored and the
    workers ran on; after a group Ctrl-C, trials.csv said RUNNING)."""
    sweep = write_sweep(tmp_path, tiny_config, epochs=3, train_batches=6, n_trials=4)
    out = tmp_path / "out"
    proc = xecg(["sweep", str(sweep), "--out", str(out), "--workers", "2"], tmp_path, popen=True)
    try:
        study = _wait_for_trials(proc, out, [0, 1], tmp_path)
        pids = {t.user_attrs["worker"]["pid"] for t in study.trials}
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130, (tmp_path / "popen.log").read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "popen.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    assert ("xecg sweep: interrupted; trials 0, 1 are marked FAIL: run the same command again "
            "to continue") in log, log[-3000:]
    assert all(process_gone(socket.gethostname(), pid) for pid in pids)
    trials = load_study(str(out / "study.journal")).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert [r["state"] for r in read_table(out)] == ["FAIL", "FAIL"]


def test_a_dead_worker_whose_trial_was_run_again_is_no_error(tiny_config, tmp_path):
    """kill -9 of one of two workers: the other runs its trial again and the study finishes,
    so the command exits 0 and says so (it exited 247 with the dead worker's progress bars)."""
    sweep = write_sweep(tmp_path, tiny_config, epochs=3, train_batches=6, n_trials=3)
    out = tmp_path / "out"
    proc = xecg(["sweep", str(sweep), "--out", str(out), "--workers", "2"], tmp_path, popen=True)
    try:
        study = _wait_for_trials(proc, out, [0, 1], tmp_path)
        pid = study.trials[1].user_attrs["worker"]["pid"]
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=400) == 0, (tmp_path / "popen.log").read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    trials = load_study(str(out / "study.journal")).trials
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 1)
    assert trials[1].state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    log = (tmp_path / "popen.log").read_text()
    assert (f"(pid {pid}) died (signal 9 (SIGKILL)) during trial 1, marked FAIL and run again "
            f"as trial {retry.number}; the study has its 3 trials") in log, log[-3000:]


def test_two_workers_share_a_journal_file(tiny_config, tmp_path):
    sweep = write_sweep(tmp_path, tiny_config, n_trials=4)
    out = tmp_path / "out"
    result = xecg(["sweep", str(sweep), "--out", str(out), "--workers", "2"], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = load_study(str(out / "study.journal"))
    trials = study.trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({(t.params[GAMMA], t.params["model.lr"]) for t in trials}) == 4
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2, "one worker ran all"
    assert len(read_table(out)) == 4
    for i in range(2):
        assert (out / "logs" / f"worker-{i}.log").is_file()


# ------------------------------------------------------------------------------ in process

def test_an_explanation_score_is_an_objective_of_a_multi_objective_sweep(tiny_config, tmp_path):
    """2 trials, micro-F1 against the chance-adjusted RMA of A (``val/expl_*``: not logged to the
    trainer, read from metrics.json's val section, the best checkpoint's scores): both values
    in trials.csv, and the Pareto front drawn (as sweeps/gamma_pareto.yaml)."""
    metric = "val/expl_rma_adj_attention"
    sweep = write_sweep(
        tmp_path, tiny_config, epochs=1,
        overrides={"experiment.wandb": False, "explanations.methods": ["attention"],
                   "explanations.max_records": 6},
        search_space={GAMMA: {"type": "float", "low": 1.0e-4, "high": 10.0, "log": True}},
        enqueue=[{GAMMA: 0.0}, {GAMMA: 1.0}], n_trials=2,
        objective=[{"metric": "val/micro_f1_best", "direction": "maximize"},
                   {"metric": metric, "direction": "maximize"}])
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--out", str(out)]) == 0
    rows = read_table(out)
    assert [(r["state"], float(r[GAMMA])) for r in rows] == [("COMPLETE", 0.0), ("COMPLETE", 1.0)]
    for row, trial in zip(rows, load_study(str(out / "study.journal")).trials):
        report = json.loads((Path(row["run_dir"]) / "metrics.json").read_text())
        score = report["val"]["expl_rma_adj_attention"]
        assert -1.0 <= score <= 1.0
        assert trial.values == pytest.approx([report["best_val_micro_f1"], score])
        assert [float(row["val/micro_f1_best"]), float(row[metric])] == pytest.approx(
            trial.values)
    assert (out / "plots" / "pareto.png").read_bytes()[:8] == PNG_MAGIC


def test_an_explanation_score_cannot_be_pruned_on(tiny_config, tmp_path, capsys):
    """Computed once at the end of training, it has no per-epoch value for a pruner."""
    sweep = write_sweep(tmp_path, tiny_config,
                        objective={"metric": "val/expl_coverage", "direction": "maximize"},
                        pruner={"name": "median"})
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"xecg: error: {sweep}: pruner: val/expl_coverage is an explanation")


@pytest.mark.parametrize(("metric", "hint"), [
    ("val/micro_f1_bst", "did you mean val/micro_f1_best?"),
    ("test/micro_f1_best", "did you mean test/micro_f1?"),  # the best is logged for val only
    ("val/expl_rma_adj_atention", "did you mean val/expl_rma_adj_attention?"),
])
def test_an_objective_no_run_logs_stops_the_sweep_before_any_trial(tiny_config, tmp_path,
                                                                   capsys, metric, hint):
    """Checked against the names the code logs (ECGMetrics, the loss terms, the explanation
    scores): a misspelt metric trained trial 0 to its end before an error with a traceback."""
    sweep = write_sweep(tmp_path, tiny_config, objective={"metric": metric,
                                                          "direction": "maximize"})
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"xecg: error: {sweep}: objective.metric: {metric} is not a metric xecg "
                   f"logs ({hint})")
    assert not (tmp_path / "out").exists()


def test_the_pruner_stops_a_trial_that_cannot_learn(tiny_config, tmp_path):
    """Two good learning rates, then an absurd one whose validation loss explodes in the first
    epoch (about 1e19 against about 1.4): the median pruner stops it at epoch 0."""
    sweep = write_sweep(
        tmp_path, tiny_config,
        search_space={"model.lr": {"type": "float", "low": 1.0e-4, "high": 100.0, "log": True}},
        enqueue=[{"model.lr": 0.003}, {"model.lr": 0.01}, {"model.lr": 10.0}],
        objective={"metric": "val/loss", "direction": "minimize"},
        pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0})
    out, storage = tmp_path / "out", f"sqlite:///{tmp_path / 'study.db'}"
    assert main(["sweep", str(sweep), "--out", str(out), "--storage", storage]) == 0
    trials = load_study(storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE,
                                         TrialState.PRUNED]
    assert trials[2].last_step == 0 and trials[2].intermediate_values[0] > 1e6
    assert read_table(out)[2]["pruned_at_epoch"] == "0"


@pytest.mark.parametrize(("change", "key"), [
    ({"n_trial": 3}, "n_trial"),
    ({"search_space": {"model.lr": {"type": "float", "low": 0.1, "high": 0.01}}},
     "search_space.model.lr"),
    ({"search_space": {"model.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}},
     "search_space.model.lr"),
    ({"search_space": {"model.lr": {"type": "uniform", "low": 0.0, "high": 0.1}}},
     "search_space.model.lr"),
    ({"enqueue": [{"model.momentum": 0.9}]}, "enqueue[0].model.momentum"),
    ({"enqueue": [{GAMMA: "zero"}]}, f"enqueue[0].{GAMMA}"),
    ({"objective": {"metric": "val/micro_f1", "direction": "up"}}, "objective.direction"),
    ({"pruner": {"name": "median", "warmup": 5}}, "pruner.warmup"),
    ({"overrides": {"trainer.devices": 2}}, "overrides.trainer.devices"),
    ({"overrides": {"model.gama": 0.1}}, "overrides.model.gama"),
    # a misspelt choice after the first (only the first was checked before 2026-11-28)
    ({"search_space": {"data.policy": {"type": "categorical", "choices": ["crop", "crp"]}}},
     "search_space.data.policy"),
    # a prefix of a key, which argparse's abbreviations took for the key
    ({"overrides": {"trainer.max_epoch": 3}}, "overrides.trainer.max_epoch"),
])
def test_a_bad_sweep_file_is_one_line_naming_file_and_key(tiny_config, tmp_path, capsys, change,
                                                           key):
    sweep = write_sweep(tmp_path, tiny_config, **change)
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"xecg: error: {sweep}: {key}:"), err
    assert not (tmp_path / "out").exists()


def test_the_real_command_exits_2_on_a_bad_sweep_file(tmp_path):
    sweep = tmp_path / "bad.yaml"
    sweep.write_text("experiment: nowhere.yaml\nsearch_space: {}\n")
    result = xecg(["sweep", str(sweep)], tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"xecg: error: {sweep}: search_space: missing"]


def test_passwords_of_storage_urls_are_never_shown(tiny_config, tmp_path, capsys):
    url = "postgresql://ecg:s3cret-pw@db.example.org:5432/sweeps"
    assert "s3cret-pw" not in mask_url(url) and "db.example.org" in mask_url(url)
    sweep = write_sweep(tmp_path, tiny_config)
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "out"), "--storage", url]) == 2
    captured = capsys.readouterr()
    assert "s3cret-pw" not in captured.err + captured.out
    assert "postgresql://ecg:***@db.example.org" in captured.err


def test_the_journal_heartbeat_fails_stale_trials_and_requeues_them(tmp_path):
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    storage = JournalHeartbeatStorage(JournalFileBackend(str(tmp_path / "j.journal")),
                                      heartbeat_interval=1, grace_period=1,
                                      stale_trial_callback=RetryHeartbeatStaleTrialCallback(1))
    study = optuna.create_study(storage=storage, study_name="hb")
    stale, alive = study.ask(), study.ask()
    stale.suggest_float("x", 0, 1)
    storage.record_heartbeat(stale._trial_id)
    storage.record_heartbeat(alive._trial_id)
    time.sleep(1.6)
    storage.record_heartbeat(alive._trial_id)
    assert HEARTBEAT_KEY in storage.get_trial_system_attrs(alive._trial_id)
    fail_dead_trials(study)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert trials[2].system_attrs["failed_trial"] == 0 and trials[2].params == trials[0].params


def test_a_baseline_whose_trial_failed_is_queued_again(tmp_path):
    """An enqueued baseline (gamma 0) whose trial failed (a Ctrl-C during it, as a QA run did)
    is queued again on the next start: Optuna's ``skip_if_exists`` counted the failed trial as
    done and the study never ran its baseline. Finished, running and waiting ones are not
    queued twice. A real journal file."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from xecg.sweep.study import enqueue_missing

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "j.journal")))
    study = optuna.create_study(storage=storage, study_name="baseline")
    baseline, paper = {"model.loss.gamma": 0.0}, {"model.loss.gamma": 0.01}
    assert enqueue_missing(study, [baseline, paper]) == []
    first = study.ask()  # the baseline, interrupted
    assert first.suggest_float("model.loss.gamma", 0.0, 1.0) == 0.0
    study.tell(first, state=TrialState.FAIL)
    second = study.ask()  # the paper's gamma, finished
    study.tell(second, second.suggest_float("model.loss.gamma", 0.0, 1.0))
    notes = enqueue_missing(study, [baseline, paper])
    assert notes == ["re-queued {'model.loss.gamma': 0.0} (trial 0 failed)"]
    assert enqueue_missing(study, [baseline, paper]) == []  # waiting now: not twice
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE,
                                               TrialState.WAITING]
    again = study.ask()
    assert again.suggest_float("model.loss.gamma", 0.0, 1.0) == 0.0


def test_the_sampler_does_not_see_trials_outside_the_search_space():
    """A trial that ran gamma 0 (no log-range parameter) would drop gamma from multivariate
    TPE's joint search space; hidden from the sampler, it does not."""
    space = {GAMMA: optuna.distributions.FloatDistribution(1e-4, 10, log=True),
             "model.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    tpe = optuna.samplers.TPESampler(seed=0, n_startup_trials=1, multivariate=True)
    study = optuna.create_study(sampler=SkipOutsideTrials(tpe))
    study.add_trial(optuna.create_trial(params={"model.lr": 1e-3},
                                        distributions={"model.lr": space["model.lr"]},
                                        value=0.5, user_attrs={OUTSIDE_ATTR: [GAMMA]}))
    for g in (0.01, 1.0):
        study.add_trial(optuna.create_trial(params={GAMMA: g, "model.lr": 1e-3},
                                            distributions=space, value=g))
    trial = study.ask()
    assert set(trial.relative_params) == set(space)  # sampled jointly
    assert trial.suggest_float(GAMMA, 1e-4, 10, log=True) > 0
    plain = optuna.samplers.TPESampler(multivariate=True)  # on the whole study
    assert set(plain.infer_relative_search_space(study, study.trials[-1])) == {"model.lr"}


def test_the_reports_of_a_multi_objective_study(tmp_path):
    """Table, best.yaml (the Pareto-optimal trial best on the first objective) and plots,
    Pareto front included, from a study of recorded trials (no training)."""
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text("experiment: {name: x}\n")
    sweep = tmp_path / "multi.yaml"
    sweep.write_text(yaml.safe_dump({
        "experiment": str(experiment),
        "search_space": {GAMMA: {"type": "float", "low": 1e-4, "high": 10.0, "log": True},
                         "model.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        "objective": [{"metric": "val/micro_f1_best", "direction": "maximize"},
                      {"metric": "val/loss", "direction": "minimize"}]}))
    spec = load_sweep(sweep)
    out = tmp_path / "out"
    study = optuna.create_study(directions=spec.directions, study_name="multi")
    results = [(0.01, 1e-3, 0.70, 0.50), (0.1, 2e-3, 0.80, 0.60), (1.0, 5e-4, 0.60, 0.40),
               (5.0, 1e-4, 0.50, 0.70), (0.001, 3e-3, 0.75, 0.45)]
    for i, (gamma, lr, f1, loss) in enumerate(results):
        run = out / "trials" / f"trial-{i:04d}"
        run.mkdir(parents=True)
        params = {GAMMA: gamma, "model.lr": lr}
        (run / "config.yaml").write_text(yaml.safe_dump({
            "experiment": {"name": run.name, "wandb": False, "tags": ["synthetic", "sweep"]},
            "trainer": {"default_root_dir": str(run)}, "model": {"lr": lr}}))
        study.add_trial(optuna.create_trial(
            params=params, distributions=spec.space, values=[f1, loss],
            user_attrs={"params": params, "run_dir": str(run), "tags": ["sweep", "multi"]}))
    write_reports(study, spec, "multi", out)

    rows = read_table(out)
    assert [float(r["val/micro_f1_best"]) for r in rows] == [r[2] for r in results]
    assert [float(r["val/loss"]) for r in rows] == [r[3] for r in results]
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["model"]["lr"] == 2e-3 and best["trainer"]["default_root_dir"] is None
    assert best["experiment"]["tags"] == ["synthetic", "multi-best"]
    for name in ("pareto", "history-val_micro_f1_best", "history-val_loss", "slice-val_loss"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == PNG_MAGIC, name


def test_the_pareto_plot_of_a_one_parameter_search_labels_its_points(tmp_path):
    """Each point carries its gamma; trials at the same place share one label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xecg.sweep.reports import _label_points

    experiment = tmp_path / "experiment.yaml"
    experiment.write_text("experiment: {name: x}\n")
    sweep = tmp_path / "pareto.yaml"
    sweep.write_text(yaml.safe_dump({
        "experiment": str(experiment),
        "search_space": {GAMMA: {"type": "float", "low": 1e-4, "high": 10.0, "log": True}},
        "objective": [{"metric": "val/micro_f1_best", "direction": "maximize"},
                      {"metric": "val/expl_rma_adj_attention", "direction": "maximize"}]}))
    spec = load_sweep(sweep)
    trials = [optuna.create_trial(params={}, distributions={}, values=values,
                                  user_attrs={"params": {GAMMA: gamma}})
              for gamma, values in ((0.0, [0.97, 0.002]), (0.01, [0.97, 0.002]),
                                    (0.05547, [0.90, 0.037]))]
    _, ax = plt.subplots()
    _label_points(ax, trials, spec)
    assert sorted(t.get_text() for t in ax.texts) == ["gamma=0, 0.01", "gamma=0.05547"]
    plt.close("all")


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_parses_against_its_experiment(path, monkeypatch):
    """Each file in sweeps/ loads, and its overrides, a value of each parameter and each
    enqueued trial parse as its experiment's training arguments (as `xecg sweep` checks before
    it starts), from the repository's root, where README runs them."""
    from xecg.sweep.trials import check_against_experiment

    monkeypatch.chdir(ROOT)
    spec = load_sweep(path)
    assert check_against_experiment(spec)["project"]
