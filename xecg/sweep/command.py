"""``xecg sweep``: the command line, the study's record of how it was made, and the worker
processes on this machine (each runs this command in worker mode)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from xecg.errors import ConfigError
from xecg.sweep.reports import write_reports
from xecg.sweep.spec import SweepSpec, load_sweep
from xecg.sweep.storage import mask_url
from xecg.sweep.study import (
    WORKER_ATTR,
    counts,
    enqueue_missing,
    fail_dead_trials,
    open_study,
    sampler_settings,
)
from xecg.sweep.trials import check_against_experiment, run_worker

#: Environment variable with the storage URL (workers get it here, not on their command line).
STORAGE_ENV = "XECG_SWEEP_STORAGE"


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (none on a CPU)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xecg sweep", description="Run (or continue) an Optuna study of an experiment: "
        "see sweeps/README.md for the sweep file.")
    p.add_argument("sweep", type=Path, help="the sweep file (YAML)")
    p.add_argument("--n-trials", type=int, default=None,
                   help="finished trials the study should have (default: the file's n_trials)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine, one GPU each where there are GPUs")
    p.add_argument("--storage", default=None,
                   help="database URL (sqlite:///FILE, postgresql://...) or a journal file "
                   f"(default: OUT/study.journal; also ${STORAGE_ENV})")
    p.add_argument("--study-name", default=None, help="default: the sweep file's name")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: sweeps/runs/STUDY_NAME)")
    p.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    spec = load_sweep(args.sweep)
    n_trials = spec.n_trials if args.n_trials is None else args.n_trials
    if n_trials < 1 or args.workers < 1:
        raise ConfigError("--n-trials and --workers: positive integers")
    study_name = args.study_name or args.sweep.stem
    out = args.out or Path("sweeps") / "runs" / study_name
    storage_url = args.storage or os.environ.get(STORAGE_ENV) or str(out / "study.journal")
    optuna.logging.set_verbosity(optuna.logging.INFO)

    if args.worker_index is not None:  # a worker started by the command below
        study = open_study(spec, study_name, storage_url, args.worker_index + 1)
        try:
            run_worker(study, spec, study_name, out, n_trials,
                       gpu=os.environ.get("CUDA_VISIBLE_DEVICES"))
        except KeyboardInterrupt:  # from the command, which says what to do
            print("xecg sweep: worker interrupted; its running trial is marked FAIL", flush=True)
            return 130
        return 0

    check_against_experiment(spec)
    out.mkdir(parents=True, exist_ok=True)
    study = open_study(spec, study_name, storage_url, 0)
    _record_study(study, spec, storage_url)
    fail_dead_trials(study)  # first: a dead worker's trial is FAIL (and maybe retried) below
    for note in enqueue_missing(study, spec.enqueue):
        print(f"xecg sweep: {note}", flush=True)
    c = counts(study)
    print(f"xecg sweep: study {study_name} in {mask_url(storage_url)}: {c['finished']} of "
          f"{n_trials} trials finished, {c['RUNNING']} running, {c['WAITING']} queued; "
          f"sampler {sampler_settings(study.sampler)}", flush=True)
    code = 0
    failed_before = {t.number for t in study.get_trials(deepcopy=False,
                                                        states=(TrialState.FAIL,))}
    try:
        if c["finished"] < n_trials:
            if args.workers == 1:
                run_worker(study, spec, study_name, out, n_trials)
            else:
                code = _run_workers(args, spec, study, study_name, out, storage_url, n_trials)
    except KeyboardInterrupt:
        code = 130  # the reports below still say where the study stands
        failed = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                  if t.number not in failed_before]
        which = ("no trial was running" if not failed else f"trial {failed[0]} is marked FAIL"
                 if len(failed) == 1 else f"trials {', '.join(map(str, failed))} are marked FAIL")
        print(f"xecg sweep: interrupted; {which}: run the same command again to continue (a "
              "baseline that did not finish is queued again)", file=sys.stderr)
    finally:
        write_reports(study, spec, study_name, out)
    c = counts(study)
    if c["finished"] < n_trials:
        print(f"xecg sweep: {c['finished']} of {n_trials} trials finished: run the same "
              "command again to continue", file=sys.stderr)
        code = code or 1
    return code


def _record_study(study: optuna.Study, spec: SweepSpec, storage_url: str) -> None:
    from importlib import metadata

    import xecg

    versions = {"xecg": xecg.__version__, "optuna": optuna.__version__}
    with contextlib.suppress(metadata.PackageNotFoundError):
        versions["optuna_integration"] = metadata.version("optuna-integration")
    attrs = study.user_attrs
    if "created_with" not in attrs:
        study.set_user_attr("created_with", versions)
    study.set_user_attr("versions", versions)
    study.set_user_attr("sweep_file", str(spec.path))
    study.set_user_attr("sweep", spec.raw)
    study.set_user_attr("objectives", [o.__dict__ for o in spec.objectives])
    study.set_user_attr("sampler", sampler_settings(study.sampler))
    study.set_user_attr("pruner", {**spec.pruner, "monitor": spec.prune_monitor})


def _run_workers(args, spec: SweepSpec, study: optuna.Study, study_name: str, out: Path,
                 storage_url: str, n_trials: int) -> int:
    """Start ``args.workers`` processes of this command in worker mode and wait for them."""
    gpus = visible_gpus()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[int, subprocess.Popen, Path]] = []
    for i in range(args.workers):
        env = {**os.environ, STORAGE_ENV: storage_url}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        command = [sys.executable, "-m", "xecg.cli", "sweep", str(args.sweep),
                   "--n-trials", str(n_trials), "--study-name", study_name, "--out", str(out),
                   "--worker-index", str(i)]
        log = logs / f"worker-{i}.log"
        with open(log, "ab") as f:
            proc = subprocess.Popen(command, env=env, stdout=f, stderr=subprocess.STDOUT)
        procs.append((i, proc, log))
        gpu = f", GPU {env['CUDA_VISIBLE_DEVICES']}" if gpus else ""
        print(f"xecg sweep: worker {i} (pid {proc.pid}{gpu}) -> {log}", flush=True)

    stopped: list[int] = []

    def forward(signum, frame) -> None:
        # Ctrl-C (SIGINT) or SIGTERM: to every worker, which fails its running trial and exits;
        # this process waits for them, then writes trials.csv with the trials as they left them.
        # After a Ctrl-C in a terminal a worker gets SIGINT twice (its own and this one): it
        # takes the first only.
        stopped.append(signum)
        for _, proc, _ in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, forward) for s in handled}
    try:
        codes = [proc.wait() for _, proc, _ in procs]
    finally:
        for s in handled:
            signal.signal(s, previous[s])
    if stopped:
        raise KeyboardInterrupt  # the command's one line; the workers marked their trials FAIL
    done = counts(study)["finished"] >= n_trials
    for (i, proc, log), rc in zip(procs, codes):
        if rc == 0:
            continue
        if rc < 0 and done:  # e.g. kill -9: its trial was marked FAIL and run again by another
            print(f"xecg sweep: worker {i} (pid {proc.pid}) died ({_exit_text(rc)})"
                  f"{_retried(study, proc.pid)}; the study has its {n_trials} trials",
                  file=sys.stderr)
            continue
        # Not progress bars (a killed worker's last lines): the lines that say what went wrong.
        lines = [line for line in log.read_text(errors="replace").splitlines()
                 if "\r" not in line and "it/s]" not in line and line.strip()]
        print(f"xecg sweep: worker {i} (pid {proc.pid}) exited with {_exit_text(rc)}; the end "
              f"of {log}:\n  " + "\n  ".join(lines[-15:]), file=sys.stderr)
    if done:
        return 0
    return next((rc if rc > 0 else 1 for rc in codes if rc != 0), 0)


def _exit_text(rc: int) -> str:
    """``code 2`` or ``signal 9 (SIGKILL)`` for a worker's return code."""
    if rc >= 0:
        return f"code {rc}"
    try:
        return f"signal {-rc} ({signal.Signals(-rc).name})"
    except ValueError:
        return f"signal {-rc}"


def _retried(study: optuna.Study, pid: int) -> str:
    """``during trial 2, marked FAIL and run again as trial 4`` for worker process ``pid``."""
    trials = study.get_trials(deepcopy=False)
    own = [t for t in trials if (t.user_attrs.get(WORKER_ATTR) or {}).get("pid") == pid
           and t.state == TrialState.FAIL]
    parts = []
    for t in own:
        again = [r.number for r in trials if r.system_attrs.get("failed_trial") == t.number]
        parts.append(f"trial {t.number}, marked FAIL and run again as trial "
                     f"{', '.join(map(str, again))}" if again else f"trial {t.number}, marked FAIL")
    return f" during {'; '.join(parts)}" if parts else ""
