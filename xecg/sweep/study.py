"""The study: opened with the sweep's sampler and pruner (enqueued values outside the search
space hidden from the sampler), its trial counts, and its dead workers' trials marked FAIL."""

from __future__ import annotations

import copy
import socket
import sys
import warnings
import zlib
from typing import Any

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import TrialState

from xecg.atomic import process_gone
from xecg.errors import ConfigError, one_line
from xecg.sweep.spec import PRUNERS, SAMPLERS, SweepSpec
from xecg.sweep.storage import make_storage, mask_url, scrub

#: The states of a trial that counts toward ``n_trials``.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: Trial user attributes: the values a trial trained with, those outside the search space, its
#: run folder, the worker that ran it.
PARAMS_ATTR = "params"
OUTSIDE_ATTR = "outside_search_space"
RUN_DIR_ATTR = "run_dir"
WORKER_ATTR = "worker"
TAGS_ATTR = "tags"


class _StudyWithoutOutsideTrials(optuna.Study):
    """The study as the sampler sees it: without trials that ran values outside the search
    space (they cannot be expressed in its distributions). Shares the study's state."""

    def __init__(self, study: optuna.Study) -> None:  # noqa: D107 - a view, not a new study
        self.__dict__ = study.__dict__

    def _get_trials(self, deepcopy=True, states=None, use_cache=False):
        trials = super()._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return [t for t in trials if OUTSIDE_ATTR not in t.user_attrs]


class SkipOutsideTrials(optuna.samplers.BaseSampler):
    """Delegates to ``sampler``, hiding trials with values outside the search space."""

    def __init__(self, sampler: optuna.samplers.BaseSampler) -> None:
        self.sampler = sampler

    def infer_relative_search_space(self, study, trial):
        return self.sampler.infer_relative_search_space(_StudyWithoutOutsideTrials(study), trial)

    def sample_relative(self, study, trial, search_space):
        return self.sampler.sample_relative(_StudyWithoutOutsideTrials(study), trial,
                                            search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.sampler.sample_independent(_StudyWithoutOutsideTrials(study), trial,
                                               param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self.sampler.before_trial(_StudyWithoutOutsideTrials(study), trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.sampler.after_trial(_StudyWithoutOutsideTrials(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()


def sampler_seed(seed: int | None, worker: int, n_existing: int) -> int | None:
    """The seed of one process's sampler: the file's seed for the first worker of a new study;
    otherwise drawn from (seed, worker, trials already in the study, host) so that parallel
    workers and resumed runs do not replay the same random draws (a sampler's random state is
    not stored in the study)."""
    if seed is None:
        return None
    if worker == 0 and n_existing == 0:
        return seed
    import numpy as np

    host = zlib.crc32(socket.gethostname().encode())
    return int(np.random.SeedSequence([seed, worker, n_existing, host]).generate_state(1)[0])


def make_sampler(spec: SweepSpec, seed: int | None) -> optuna.samplers.BaseSampler:
    options = {k: v for k, v in spec.sampler.items() if k != "name"}
    if "seed" in options or seed is not None:
        options["seed"] = seed
    cls = getattr(optuna.samplers, SAMPLERS[spec.sampler["name"]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return SkipOutsideTrials(cls(**options))
        except Exception as err:
            raise ConfigError(f"{spec.path}: sampler: {one_line(err)}") from None


def sampler_settings(sampler: optuna.samplers.BaseSampler) -> dict[str, Any]:
    """What the study records about its sampler (TPE's defaults changed in Optuna 5)."""
    inner = getattr(sampler, "sampler", sampler)
    out: dict[str, Any] = {"class": type(inner).__name__}
    for name in ("multivariate", "constant_liar", "n_startup_trials", "group"):
        if hasattr(inner, f"_{name}"):
            out[name] = getattr(inner, f"_{name}")
    if out.get("multivariate", False) is None:
        out["multivariate"] = "auto (True for one objective, Optuna 5)"
    return out


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    options = {k: v for k, v in spec.pruner.items() if k != "name"}
    cls = getattr(optuna.pruners, PRUNERS[spec.pruner["name"]])
    try:
        return cls(**options)
    except Exception as err:
        raise ConfigError(f"{spec.path}: pruner: {one_line(err)}") from None


def open_study(spec: SweepSpec, study_name: str, storage_url: str, worker: int) -> optuna.Study:
    storage = make_storage(storage_url, spec.heartbeat)
    directions = spec.directions
    try:
        study = optuna.create_study(storage=storage, study_name=study_name,
                                    directions=directions, load_if_exists=True,
                                    pruner=make_pruner(spec))
    except Exception as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"study {study_name} in {mask_url(storage_url)}: cannot open "
                          f"({scrub(one_line(err, 240), storage_url)})") from None
    found = [d.name.lower() for d in study.directions]
    if found != directions:
        raise ConfigError(f"{spec.path}: objective: study {study_name} in "
                          f"{mask_url(storage_url)} has directions {found}, the sweep file "
                          f"{directions}: use another --study-name")
    n_existing = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(spec, sampler_seed(spec.sampler.get("seed"), worker,
                                                    n_existing))
    return study


def counts(study: optuna.Study) -> dict[str, int]:
    out = {s.name: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] += 1
    out["finished"] = sum(out[s.name] for s in FINISHED)
    return out


def enqueue_missing(study: optuna.Study, wanted: list[dict[str, Any]]) -> list[str]:
    """Enqueue each parameter set of ``wanted`` (the sweep's baselines, gamma 0 and the
    paper's 0.01) that no trial has finished, is running or waits with. A set whose trials all
    FAILed (a Ctrl-C, a rejected argument) is enqueued again: Optuna's ``skip_if_exists``
    counted a failed trial as done, and the study lost its baseline for good. Returns a note per
    set enqueued again. Only the command (not its workers) calls it; two commands started at
    the same moment on one study may queue one duplicate, which then runs once more."""
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    trials = study.get_trials(deepcopy=False)
    notes = []
    for params in wanted:
        same = [t for t in trials if _has_params(t, params)]
        if any(t.state in live for t in same):
            continue
        study.enqueue_trial(params)
        if same:
            failed = ", ".join(str(t.number) for t in same)
            notes.append(f"re-queued {params} (trial {failed} failed)")
    return notes


def _has_params(trial: optuna.trial.FrozenTrial, params: dict[str, Any]) -> bool:
    """Whether ``trial`` ran (or, waiting, will run) with every value of ``params``."""
    given = (trial.system_attrs.get("fixed_params") or {} if trial.state == TrialState.WAITING
             else {**(trial.system_attrs.get("fixed_params") or {}), **trial.params})
    return all(k in given and given[k] == v for k, v in params.items())


# ------------------------------------------------------------------------------ dead workers

def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker is gone: those of a worker process on this
    machine that no longer exists (at once), and those whose heartbeat is older than the grace
    period (Optuna's ``fail_stale_trials``). Each is re-queued once by the heartbeat's
    callback. Returns the numbers of the trials failed here."""
    storage = study._storage
    callback = (storage.get_heartbeat_stale_trial_callback()
                if is_heartbeat_enabled(storage) else None)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR) or {}
        if (worker.get("trial") != trial.number
                or not process_gone(worker.get("host"), worker.get("pid"))):
            continue
        try:
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process got there first
        failed.append(trial.number)
        print(f"xecg sweep: trial {trial.number} was left RUNNING by worker process "
              f"{worker.get('pid')}, which is gone: marked FAIL", file=sys.stderr)
        if callback is not None:
            callback(study, copy.deepcopy(storage.get_trial(trial._trial_id)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return failed


