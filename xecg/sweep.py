"""``xecg sweep SWEEP.yaml``: an Optuna study over experiment settings (``make sweep``).

A sweep file names the experiment (``--config`` files), fixed ``overrides``, a ``search_space``
of dotted config keys, trials to ``enqueue`` first, the ``objective`` (one metric or several),
``n_trials``, the ``sampler`` and the ``pruner`` (format: ``sweeps/README.md``). Every trial is
:func:`xecg.lightning_cli.fit_and_test` in the worker process, on one device, with its own run
folder ``OUT/trials/trial-NNNN`` and W&B run (group: the study, job type ``trial``).

Design:

- **Storage**: a journal file ``OUT/study.journal`` by default (``JournalFileBackend`` with its
  default ``JournalFileSymlinkLock``, which also works on NFS; ``JournalFileOpenLock`` on
  Windows), or any SQLAlchemy URL (``--storage sqlite:///...`` / ``postgresql://...``). Passwords
  of URLs are masked in everything printed or written; workers get the URL through the
  environment, not their command line.
- **Workers**: ``--workers K`` starts K processes running this command in worker mode; each calls
  ``study.optimize`` on the shared storage (no scheduler of our own) and gets one GPU through
  ``CUDA_VISIBLE_DEVICES`` (round-robin over the visible ones). A worker stops when the finished
  (COMPLETE or PRUNED) plus running trials reach N (``MaxTrialsCallback`` counting RUNNING too),
  and waits while other workers finish the last ones, so the study ends with N finished trials
  and no extra ones; if a running trial fails meanwhile, a waiting worker runs another.
- **Dead workers**: Optuna's heartbeat (RDB storages; Optuna 5's ``JournalStorage`` has none, so
  :class:`JournalHeartbeatStorage` adds one) marks a RUNNING trial whose heartbeat is older than
  the grace period FAIL, and re-queues its parameters once (``RetryHeartbeatStaleTrialCallback``).
  A trial whose worker process on this machine is gone is marked FAIL at once, without waiting
  for the grace period. Finished trials are never repeated.
- **Enqueued values outside the search space** (gamma 0 below a log range): Optuna 5 cannot
  record them as parameters of the log distribution (``suggest_float`` raises), so such a trial
  runs with the value as given, records it in its ``params`` user attribute and is hidden from
  the sampler (the sampler's model covers the search space only; the trial stays in the study,
  its table, plots and the pruner's medians).
- **Objective**: ``test/X`` is metrics.json["test"][X] (the best checkpoint's test); ``val/X`` is
  the value logged by the validation of the best checkpoint after the fit, so
  ``val/micro_f1_best`` is the best validation micro-F1 of the fit's epochs (the checkpoint's
  score) and ``val/micro_f1`` the best checkpoint's, or else metrics.json["val"][X]: the
  explanation scores ``val/expl_*`` that ``ExplanationScores`` writes there (of the best
  checkpoint; not logged to the trainer, so no pruning on them); ``train/X`` is the fit's last
  logged value.
- **Pruning**: optuna-integration's ``PyTorchLightningPruningCallback`` reports a per-epoch
  validation metric every validation epoch: the objective's metric without ``_best`` (and
  ``val/`` for ``test/``), e.g. ``val/micro_f1`` for ``val/micro_f1_best``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import TrialState

from xecg.atomic import process_gone, write_atomic, write_csv
from xecg.cli import load_mapping, override_args
from xecg.errors import ConfigError, one_line

SWEEP_KEYS = ("experiment", "overrides", "search_space", "enqueue", "objective", "n_trials",
              "sampler", "pruner", "heartbeat")
#: Keys the sweep sets for every trial (run folder, W&B grouping, one device).
RESERVED_KEYS = ("experiment.name", "experiment.runs_dir", "experiment.group",
                 "experiment.job_type", "report.meta", "trainer.devices", "trainer.num_nodes",
                 "trainer.strategy", "trainer.default_root_dir", "checkpoint.dirpath")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: Environment variable with the storage URL (workers get it here, not on their command line).
STORAGE_ENV = "XECG_SWEEP_STORAGE"
#: Trial user attributes: the values a trial trained with, those outside the search space, its
#: run folder, the worker that ran it.
PARAMS_ATTR = "params"
OUTSIDE_ATTR = "outside_search_space"
RUN_DIR_ATTR = "run_dir"
WORKER_ATTR = "worker"
TAGS_ATTR = "tags"
#: Trial system attribute: the last heartbeat (journal storage).
HEARTBEAT_KEY = "xecg:heartbeat"
HEARTBEAT_DEFAULTS = {"interval": 60, "grace_period": 180, "retries": 1}
#: Metric names of the explanation scores (metrics.json's val section, not logged per epoch).
EXPLANATION_PREFIX = "/expl_"
#: Seconds a worker waits between looks at the study while others finish the last trials.
POLL_SECONDS = 2.0


# ------------------------------------------------------------------------------ the sweep file

@dataclass
class Objective:
    metric: str
    direction: str


@dataclass
class SweepSpec:
    """A validated sweep file."""

    path: Path
    experiments: list[str]
    overrides: dict[str, Any]
    space: dict[str, BaseDistribution]
    enqueue: list[dict[str, Any]]
    objectives: list[Objective]
    n_trials: int
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    heartbeat: dict[str, int]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def prune_monitor(self) -> str | None:
        """The per-epoch metric the pruner watches, or None without pruning."""
        if self.pruner["name"] == "none":
            return None
        stage, _, name = self.metrics[0].partition("/")
        name = name.removesuffix("_best")
        return f"val/{name}" if stage == "test" else f"{stage}/{name}"


SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "gp": "GPSampler",
            "cmaes": "CmaEsSampler", "nsgaii": "NSGAIISampler", "nsgaiii": "NSGAIIISampler",
            "qmc": "QMCSampler"}
PRUNERS = {"median": "MedianPruner", "percentile": "PercentilePruner",
           "hyperband": "HyperbandPruner", "successive_halving": "SuccessiveHalvingPruner",
           "none": "NopPruner"}


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Read and check a sweep file; a problem raises :class:`ConfigError` naming file and key."""
    path = Path(path)
    raw = load_mapping(path, "sweep file", SWEEP_KEYS)

    def bad(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{path}: {key}: {problem}")

    for key in ("experiment", "search_space", "objective"):
        if raw.get(key) in (None, "", [], {}):
            raise bad(key, "missing")

    experiments = raw["experiment"]
    experiments = [experiments] if isinstance(experiments, str) else experiments
    if not isinstance(experiments, list) or not all(isinstance(e, str) for e in experiments):
        raise bad("experiment", "one config path or a list of them")
    for e in experiments:
        if not Path(e).is_file():
            raise bad("experiment", f"{e} not found (paths are relative to the current folder)")

    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise bad("overrides", "a mapping of dotted config keys to values")
    space_raw = raw["search_space"]
    if not isinstance(space_raw, dict):
        raise bad("search_space", "a mapping of dotted config keys to distributions")
    for section, keys in (("overrides", overrides), ("search_space", space_raw)):
        for key in keys:
            if not isinstance(key, str) or not key.strip() or " " in key:
                raise bad(f"{section}.{key}", "not a dotted config key")
            if key.removeprefix("--") in RESERVED_KEYS:
                raise bad(f"{section}.{key}", "set by the sweep for every trial (a trial runs on "
                          "one device in its own run folder OUT/trials/trial-NNNN)")
    both = set(overrides) & set(space_raw)
    if both:
        raise bad(f"overrides.{sorted(both)[0]}", "also in search_space: give it in one place")
    space = {key: _distribution(path, f"search_space.{key}", spec)
             for key, spec in space_raw.items()}

    enqueue = raw.get("enqueue") or []
    if not isinstance(enqueue, list):
        raise bad("enqueue", "a list of mappings {key: value}")
    for i, params in enumerate(enqueue):
        if not isinstance(params, dict) or not params:
            raise bad(f"enqueue[{i}]", "a mapping of search_space keys to values")
        for key, value in params.items():
            if key not in space:
                raise bad(f"enqueue[{i}].{key}", "not a key of search_space")
            _check_enqueued(path, f"enqueue[{i}].{key}", space[key], value)

    objectives = _objectives(path, raw["objective"])

    n_trials = raw.get("n_trials", 20)
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise bad("n_trials", f"a positive integer (got {n_trials!r})")
    if len(enqueue) > n_trials:
        warnings.warn(f"{path}: {len(enqueue)} enqueued trials but n_trials {n_trials}",
                      stacklevel=2)

    sampler = _named(path, "sampler", raw.get("sampler") or {"name": "tpe"}, SAMPLERS)
    pruner = _named(path, "pruner", raw.get("pruner") or {"name": "none"}, PRUNERS)
    if len(objectives) > 1 and pruner["name"] != "none":
        raise bad("pruner", "Optuna prunes single-objective studies only: use {name: none} "
                  "with several objectives")
    if pruner["name"] != "none" and EXPLANATION_PREFIX in objectives[0].metric:
        raise bad("pruner", f"{objectives[0].metric} is an explanation score, computed once at "
                  "the end of training (no per-epoch value to prune on): use {name: none}")
    heartbeat = dict(HEARTBEAT_DEFAULTS)
    given = raw.get("heartbeat") or {}
    if not isinstance(given, dict):
        raise bad("heartbeat", "a mapping {interval, grace_period, retries}")
    for key, value in given.items():
        if key not in HEARTBEAT_DEFAULTS:
            raise bad(f"heartbeat.{key}", "unknown key (interval, grace_period, retries)")
        low = 0 if key == "retries" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise bad(f"heartbeat.{key}", f"an integer >= {low} (seconds; retries: a count)")
        heartbeat[key] = value
    return SweepSpec(path, experiments, overrides, space, enqueue, objectives, n_trials,
                     sampler, pruner, heartbeat, raw)


def _number(path: Path, key: str, value: Any, kind: type) -> float | int:
    """A bound or step. YAML 1.1 reads ``1e-4`` (no dot) as a string: accepted as a number."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{path}: {key}: a number (got {value!r})")
    if kind is int:
        if float(value) != int(value):
            raise ConfigError(f"{path}: {key}: an integer for type int (got {value!r})")
        return int(value)
    return float(value)


def _distribution(path: Path, key: str, spec: Any) -> BaseDistribution:
    types = ("float", "int", "categorical")
    if not isinstance(spec, dict) or spec.get("type") not in types:
        raise ConfigError(f"{path}: {key}: a distribution {{type: float|int|categorical, ...}} "
                          f"(got {spec!r})")
    kind = spec["type"]
    allowed = {"float": {"type", "low", "high", "log", "step"},
               "int": {"type", "low", "high", "log", "step"},
               "categorical": {"type", "choices"}}[kind]
    extra = sorted(set(spec) - allowed)
    if extra:
        raise ConfigError(f"{path}: {key}.{extra[0]}: not an option of type {kind} "
                          f"({', '.join(sorted(allowed - {'type'}))})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{path}: {key}.choices: a non-empty list")
        for c in choices:
            if c is not None and not isinstance(c, (bool, int, float, str)):
                raise ConfigError(f"{path}: {key}.choices: {c!r} is not a number, string, "
                                  "boolean or null")
        if len({json.dumps(c) for c in choices}) < len(choices):
            raise ConfigError(f"{path}: {key}.choices: repeated values")
        return CategoricalDistribution(choices)
    number = float if kind == "float" else int
    for bound in ("low", "high"):
        if bound not in spec:
            raise ConfigError(f"{path}: {key}.{bound}: missing")
    low = _number(path, f"{key}.low", spec["low"], number)
    high = _number(path, f"{key}.high", spec["high"], number)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{path}: {key}.log: true or false")
    step = spec.get("step")
    if step is not None:
        step = _number(path, f"{key}.step", step, number)
    try:
        if kind == "float":
            return FloatDistribution(low, high, log=log, step=step)
        return IntDistribution(low, high, log=log, step=1 if step is None else step)
    except ValueError as err:
        raise ConfigError(f"{path}: {key}: {one_line(err)}") from None


def _check_enqueued(path: Path, key: str, dist: BaseDistribution, value: Any) -> None:
    """Values outside the distribution are allowed (a baseline such as gamma 0 below a log
    range); values of the wrong kind are not."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(dist, FloatDistribution) and not (numeric and math.isfinite(value)):
        raise ConfigError(f"{path}: {key}: a number for a float parameter (got {value!r})")
    if isinstance(dist, IntDistribution) and not (numeric and float(value) == int(value)):
        raise ConfigError(f"{path}: {key}: an integer for an int parameter (got {value!r})")
    if isinstance(dist, CategoricalDistribution) and not (
            value is None or isinstance(value, (bool, int, float, str))):
        raise ConfigError(f"{path}: {key}: a number, string, boolean or null (got {value!r})")


def _objectives(path: Path, raw: Any) -> list[Objective]:
    items = raw if isinstance(raw, list) else [raw]
    out: list[Objective] = []
    for i, item in enumerate(items):
        key = "objective" if not isinstance(raw, list) else f"objective[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{path}: {key}: a mapping {{metric, direction}}")
        extra = sorted(set(item) - {"metric", "direction"})
        if extra:
            raise ConfigError(f"{path}: {key}.{extra[0]}: unknown key (metric, direction)")
        metric, direction = item.get("metric"), item.get("direction")
        if not isinstance(metric, str) or metric.partition("/")[0] not in ("val", "test",
                                                                             "train"):
            raise ConfigError(f"{path}: {key}.metric: a logged metric such as "
                              f"val/micro_f1_best or test/micro_f1 (got {metric!r})")
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"{path}: {key}.direction: maximize or minimize "
                              f"(got {direction!r})")
        if metric in [o.metric for o in out]:
            raise ConfigError(f"{path}: {key}.metric: {metric} is given twice")
        out.append(Objective(metric, direction))
    return out


def _named(path: Path, key: str, raw: Any, table: dict[str, str]) -> dict[str, Any]:
    """``{name: ..., **options}`` for a sampler or pruner; options are checked against the
    Optuna class's arguments."""
    if not isinstance(raw, dict) or raw.get("name") not in table:
        raise ConfigError(f"{path}: {key}: {{name: {'|'.join(table)}, ...options}} "
                          f"(got {raw!r})")
    import inspect

    module = optuna.samplers if key == "sampler" else optuna.pruners
    cls = getattr(module, table[raw["name"]])
    params = inspect.signature(cls.__init__).parameters
    for option in raw:
        if option == "name":
            continue
        if option not in params or option == "self":
            accepted = ", ".join(p for p in params if p not in ("self", "args", "kwargs"))
            raise ConfigError(f"{path}: {key}.{option}: not an option of {cls.__name__} "
                              f"({accepted or 'none'})")
    return dict(raw)


# --------------------------------------------------------------------- trial command lines

def short_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def param_tags(params: dict[str, Any]) -> list[str]:
    """W&B tags for a trial's values, e.g. ``gamma=0.01`` (W&B allows 64 characters)."""
    return [f"{k.rsplit('.', 1)[-1]}={short_value(v)}"[:64] for k, v in params.items()]


def trial_name(number: int) -> str:
    return f"trial-{number:04d}"


def trial_args(spec: SweepSpec, study_name: str, out: Path, number: int,
               params: dict[str, Any]) -> list[str]:
    """The LightningCLI arguments of trial ``number``."""
    run_dir = out / "trials" / trial_name(number)
    args = override_args({**spec.overrides, **params}, spec.experiments)
    tags = ["sweep", study_name, *param_tags(params)]
    meta = {"study": study_name, "trial": number, "params": params}
    args += [
        f"--experiment.name={trial_name(number)}",
        f"--experiment.runs_dir={out / 'trials'}",
        f"--experiment.group={study_name}",
        "--experiment.job_type=trial",
        f"--experiment.tags+={json.dumps(tags)}",
        f"--trainer.default_root_dir={run_dir}",
        f"--checkpoint.dirpath={run_dir / 'checkpoints'}",
        # One device per trial (see sweeps/README.md: pruning under DDP).
        "--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto",
        f"--report.meta={json.dumps(meta)}",
    ]
    return args


def check_against_experiment(spec: SweepSpec) -> dict[str, Any]:
    """Parse the experiment with the overrides and a value of every parameter as a trial would
    (no training), so that a key the experiment does not have, or a value of the wrong type,
    stops the sweep before it starts. Returns the resolved ``experiment`` block."""
    from xecg.lightning_cli import XECGCLI

    class _ParseOnly(XECGCLI):
        def _set_seed(self) -> None:
            pass

        def before_instantiate_classes(self) -> None:
            pass

        def instantiate_classes(self) -> None:
            pass

    def parse(extra: list[str]):
        with contextlib.redirect_stderr(io.StringIO()):
            return _ParseOnly(args=override_args({}, spec.experiments) + extra, run=False,
                              parser_kwargs={"exit_on_error": False}).config

    items = [("overrides", k, v) for k, v in spec.overrides.items()]
    items += [("search_space", k, _sample_value(d)) for k, d in spec.space.items()]
    try:
        config = parse(override_args({k: v for _, k, v in items}))
    except ConfigError:
        raise
    except Exception as err:  # name the culprit: one key at a time
        for section, key, value in items:
            _parse_one(parse, spec, section, key, value, [])
        raise ConfigError(f"{spec.path}: overrides, search_space: the experiment does not "
                          f"accept them together ({one_line(err, 240)})") from None
    fixed = override_args(spec.overrides)
    for i, params in enumerate(spec.enqueue):
        for key, value in params.items():
            _parse_one(parse, spec, f"enqueue[{i}]", key, value, fixed)
    experiment = config.experiment
    return {"project": experiment.project, "wandb": bool(experiment.wandb),
            "tags": list(experiment.tags or [])}


def _parse_one(parse, spec: SweepSpec, section: str, key: str, value: Any,
               before: list[str]) -> None:
    try:
        parse([*before, *override_args({key: value})])
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"{spec.path}: {section}.{key}: the experiment does not accept "
                          f"{value!r} ({one_line(err, 240)})") from None


def _sample_value(dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[0]
    return dist.low


# --------------------------------------------------------------------------------- storage

def scrub(text: str, url: str) -> str:
    """``text`` (an error message) without the password of ``url``."""
    if "://" in url:
        with contextlib.suppress(Exception):
            from sqlalchemy.engine import make_url

            password = make_url(url).password
            if password:
                text = text.replace(str(password), "***")
    return text.replace(url, mask_url(url))


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for anything printed or written)."""
    if "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        scheme, _, rest = url.partition("://")
        creds, at, host = rest.rpartition("@")
        if at and ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
        return url


class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
    """A journal storage with Optuna's heartbeat (Optuna 5 has it for RDB storages only): a
    running trial's worker writes the time into a system attribute every ``heartbeat_interval``
    seconds; a RUNNING trial that has not done so for ``grace_period`` seconds is stale, and
    ``optuna.storages.fail_stale_trials`` (which ``study.optimize`` calls before every trial)
    marks it FAIL and calls ``stale_trial_callback``. Times are the workers' clocks."""

    def __init__(self, backend, heartbeat_interval: int, grace_period: int | None = None,
                 stale_trial_callback=None) -> None:
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period or 2 * heartbeat_interval
        self.stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False,
                                         states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_KEY)
            if beat is None:  # as RDBStorage: a trial that never beat is not judged
                continue
            # A re-queued trial carries the heartbeat of the one it retries: count from its start.
            start = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
            if now - max(float(beat), start) > self.grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self.stale_trial_callback


def make_storage(url: str, heartbeat: dict[str, int]):
    """An Optuna storage with heartbeat: a SQLAlchemy URL (``scheme://...``) or a journal file."""
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = (RetryHeartbeatStaleTrialCallback(max_retry=heartbeat["retries"])
                 if heartbeat["retries"] else None)
    options = {"heartbeat_interval": heartbeat["interval"],
               "grace_period": heartbeat["grace_period"]}
    if "://" in url:
        if url.startswith("redis"):
            raise ConfigError(f"--storage {mask_url(url)}: Redis is not supported; use a "
                              "database URL or a journal file")
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return RDBStorage(url, engine_kwargs=engine,
                                  heartbeat_stale_trial_callback=retry, **options)
            except Exception as err:
                raise ConfigError(f"--storage {mask_url(url)}: cannot open "
                                  f"({scrub(one_line(err, 240), url)})") from None
    from optuna.storages.journal import (
        JournalFileBackend,
        JournalFileOpenLock,
        JournalFileSymlinkLock,
    )

    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Optuna's default lock (a symlink, atomic on NFS too); Windows needs admin rights for it.
    lock = (JournalFileOpenLock if os.name == "nt" else JournalFileSymlinkLock)(str(path))
    return JournalHeartbeatStorage(JournalFileBackend(str(path), lock_obj=lock),
                                   stale_trial_callback=retry, **options)


# ------------------------------------------------------------------ sampler, pruner, study

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
    out["finished"] = out["COMPLETE"] + out["PRUNED"]
    return out


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


# ---------------------------------------------------------------------------------- trials

def _capture_callback():
    import lightning as L

    class CaptureMetrics(L.Callback):
        """The trainer's logged metrics at the end of the fit, of the validation of the best
        checkpoint and of its test."""

        def __init__(self) -> None:
            self.metrics: dict[str, dict[str, float]] = {"fit": {}, "validate": {}, "test": {}}

        def _keep(self, trainer, stage: str) -> None:
            self.metrics[stage] = {k: float(v) for k, v in trainer.callback_metrics.items()}

        def on_fit_end(self, trainer, pl_module) -> None:
            self._keep(trainer, "fit")

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.state.fn == "validate":
                self._keep(trainer, "validate")

        def on_test_end(self, trainer, pl_module) -> None:
            self._keep(trainer, "test")

    return CaptureMetrics()


def objective_value(metric: str, run_dir: Path, captured: dict[str, dict[str, float]]) -> float:
    """The value of ``metric`` for a finished run (see the module's docstring)."""
    stage, _, name = metric.partition("/")
    report_path = run_dir / "metrics.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    if stage == "test":
        if name in (report.get("test") or {}):
            return float(report["test"][name])
        source = captured["test"]
    elif stage == "val":
        source = captured["validate"] or captured["fit"]
        # Explanation scores (expl_*) are not logged to the trainer: ExplanationScores writes
        # them into metrics.json's val section, those of the best checkpoint's validation.
        if metric not in source and name in (report.get("val") or {}):
            return float(report["val"][name])
    else:
        source = captured["fit"]
    if metric not in source:
        written = sorted(f"{stage}/{k}" for k in report.get(stage) or {}
                         if f"{stage}/{k}" not in source)
        raise RuntimeError(f"objective {metric}: not logged by the run in {run_dir} (logged: "
                           f"{', '.join(sorted(source)) or 'nothing'}"
                           + (f"; in metrics.json: {', '.join(written)}" if written else "")
                           + ")")
    return float(source[metric])


def _inside(dist: BaseDistribution, value: Any) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def _suggest(trial: optuna.Trial, key: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(key, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_categorical(key, dist.choices)


def make_objective(spec: SweepSpec, study_name: str, out: Path, gpu: str | None = None):
    def objective(trial: optuna.Trial):
        from xecg.lightning_cli import fit_and_test

        trial.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": os.getpid(),
                                          "trial": trial.number, "gpu": gpu})
        fixed = trial.storage.get_trial_system_attrs(trial._trial_id).get("fixed_params", {})
        outside = {k: v for k, v in fixed.items()
                   if k in spec.space and not _inside(spec.space[k], v)}
        if outside:  # before any suggestion: the sampler must not see this trial
            trial.set_user_attr(OUTSIDE_ATTR, sorted(outside))
        params = {k: outside[k] if k in outside else _suggest(trial, k, d)
                  for k, d in spec.space.items()}
        run_dir = out / "trials" / trial_name(trial.number)
        trial.set_user_attr(PARAMS_ATTR, params)
        trial.set_user_attr(RUN_DIR_ATTR, str(run_dir))
        trial.set_user_attr(TAGS_ATTR, ["sweep", study_name, *param_tags(params)])
        print(f"xecg sweep: trial {trial.number} {params} -> {run_dir}", flush=True)
        capture = _capture_callback()
        callbacks = [capture]
        if spec.prune_monitor:
            from optuna_integration import PyTorchLightningPruningCallback

            callbacks.append(PyTorchLightningPruningCallback(trial, monitor=spec.prune_monitor))
        try:
            run_dir = fit_and_test(trial_args(spec, study_name, out, trial.number, params),
                                   callbacks=callbacks)
        except SystemExit as err:  # jsonargparse on a bad argument, Lightning after Ctrl-C
            raise RuntimeError(f"trial {trial.number}: the run exited with code {err.code} "
                               "(a rejected argument or an interrupt)") from None
        values = [objective_value(m, run_dir, capture.metrics) for m in spec.metrics]
        return values[0] if len(values) == 1 else values

    return objective


def run_worker(study: optuna.Study, spec: SweepSpec, study_name: str, out: Path,
               n_trials: int, gpu: str | None = None) -> None:
    """Run trials until the study has ``n_trials`` finished (COMPLETE or PRUNED) ones."""
    objective = make_objective(spec, study_name, out, gpu)
    # Running trials count as taken: no worker starts a trial the study will not need.
    enough = optuna.study.MaxTrialsCallback(
        n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))

    def after_trial(study: optuna.Study, trial) -> None:
        write_trials_csv(study, spec, out)
        fail_dead_trials(study)  # before the next trial, as Optuna's own heartbeat check

    while True:
        fail_dead_trials(study)
        c = counts(study)
        if c["finished"] >= n_trials:
            return
        if c["finished"] + c["RUNNING"] >= n_trials:  # others are running the last trials
            time.sleep(POLL_SECONDS)
            continue
        study.optimize(objective, callbacks=[enough, after_trial], gc_after_trial=True)


# ---------------------------------------------------------------------------------- reports

def _trial_params(trial) -> dict[str, Any]:
    return trial.user_attrs.get(PARAMS_ATTR) or dict(trial.params)


def trials_table(study: optuna.Study, spec: SweepSpec) -> tuple[list[str], list[list[Any]]]:
    keys = list(spec.space)
    for t in study.get_trials(deepcopy=False):
        keys += [k for k in _trial_params(t) if k not in keys]
    header = ["number", "state", *spec.metrics, *keys, "pruned_at_epoch", "retry_of",
              "duration_s", "run_dir"]
    rows = []
    for t in study.get_trials(deepcopy=False):
        values = t.values if t.state == TrialState.COMPLETE and t.values else [None] * len(
            spec.metrics)
        params = _trial_params(t)
        duration = t.duration.total_seconds() if t.duration else None
        rows.append([t.number, t.state.name, *values, *(params.get(k) for k in keys),
                     t.last_step if t.state == TrialState.PRUNED else None,
                     t.system_attrs.get("failed_trial"),
                     None if duration is None else round(duration, 1),
                     t.user_attrs.get(RUN_DIR_ATTR)])
    return header, rows


def write_trials_csv(study: optuna.Study, spec: SweepSpec, out: Path) -> Path:
    header, rows = trials_table(study, spec)
    path = out / "trials.csv"
    write_csv(path, header, [["" if v is None else v for v in row] for row in rows])
    return path


def best_trial(study: optuna.Study):
    """The best COMPLETE trial; with several objectives, the Pareto-optimal one best on the
    first objective. None when no trial completed."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    if len(study.directions) == 1:
        return study.best_trial
    front = study.best_trials
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
    return max(front, key=lambda t: sign * t.values[0])


def write_best_yaml(study: optuna.Study, spec: SweepSpec, study_name: str, out: Path,
                    trial) -> Path | None:
    """``OUT/best.yaml``: the best trial's complete config (its run folder's config.yaml),
    with a run name of its own so that retraining does not touch the trial's folder."""
    run_dir = Path(trial.user_attrs.get(RUN_DIR_ATTR, ""))
    source = run_dir / "config.yaml"
    if not source.is_file():
        print(f"xecg sweep: warning: {source} not found: no best.yaml", file=sys.stderr)
        return None
    config = yaml.safe_load(source.read_text())
    added = set(trial.user_attrs.get(TAGS_ATTR, []))
    exp = config.setdefault("experiment", {})
    exp.update(name=f"{study_name}-best", runs_dir="runs", group=study_name, job_type=None,
               tags=[t for t in exp.get("tags") or [] if t not in added] + [f"{study_name}-best"])
    config.setdefault("trainer", {})["default_root_dir"] = None
    config.setdefault("checkpoint", {})["dirpath"] = None
    config.setdefault("report", {}).update(meta=None, protocol=None)
    metrics = ", ".join(f"{m} {v:.4f}" for m, v in zip(spec.metrics, trial.values))
    header = (f"# The best trial of sweep {study_name} ({spec.path}): trial {trial.number}, "
              f"{metrics}\n# params {json.dumps(_trial_params(trial))}\n"
              f"# from {source}; retrain: xecg train --config {out / 'best.yaml'}\n")
    path = out / "best.yaml"
    write_atomic(path, header + yaml.safe_dump(config, sort_keys=False))
    return path


def write_plots(study: optuna.Study, spec: SweepSpec, out: Path) -> list[Path]:
    """Optuna's matplotlib plots as PNGs in ``OUT/plots``; a plot that cannot be drawn is a
    warning line, not an error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    multi = len(spec.objectives) > 1
    jobs: list[tuple[str, Any]] = []
    for i, metric in enumerate(spec.metrics):
        target = (lambda t, i=i: t.values[i]) if multi else None
        slug = "" if not multi else "-" + metric.replace("/", "_")
        jobs.append((f"history{slug}", lambda target=target, metric=metric:
                     ovm.plot_optimization_history(study, target=target, target_name=metric)))
        jobs.append((f"slice{slug}", lambda target=target, metric=metric:
                     ovm.plot_slice(study, params=list(spec.space), target=target,
                                    target_name=metric)))
        if len(spec.space) >= 2 and len(complete) >= 3:
            jobs.append((f"importances{slug}", lambda target=target, metric=metric:
                         ovm.plot_param_importances(study, params=list(spec.space),
                                                    target=target, target_name=metric)))
    if multi and len(spec.objectives) in (2, 3):
        jobs.append(("pareto", lambda: _label_points(
            ovm.plot_pareto_front(study, target_names=spec.metrics), complete, spec)))
    written = []
    for name, draw in jobs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw()
            fig = np.ravel(ax)[0].figure if isinstance(ax, np.ndarray) else ax.figure
            if name.startswith("slice"):  # one panel per parameter: room for log-axis labels
                fig.set_size_inches(max(6.4, 4.0 * len(spec.space)), 4.8)
            path = folder / f"{name}.png"
            fig.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(fig)
            written.append(path)
        except Exception as err:
            plt.close("all")
            print(f"xecg sweep: warning: no {name} plot ({one_line(err, 160)})",
                  file=sys.stderr)
    return written


def _label_points(ax, trials: list, spec: SweepSpec):
    """A two-objective Pareto plot of a one-parameter search (gamma) with each point labelled
    by its value (``gamma=0.01``), so that the plot shows what the parameter trades."""
    if len(spec.space) != 1 or len(spec.objectives) != 2:
        return ax
    (key,) = spec.space
    points = [(tuple(t.values), _trial_params(t).get(key)) for t in trials
              if t.values and all(math.isfinite(v) for v in t.values)]
    if not points:
        return ax
    spans = [max(p[i] for p, _ in points) - min(p[i] for p, _ in points) or 1.0
             for i in range(2)]
    groups: list[tuple[tuple[float, ...], list]] = []  # points within 2.5% of both axes
    for xy, value in points:                             # of the first share its label
        near = [g for g in groups if all(abs(a - b) <= 0.025 * span
                                          for a, b, span in zip(xy, g[0], spans))]
        if near:
            near[0][1].append(value)
        else:
            groups.append((xy, [value]))
    for xy, values in groups:
        label = ", ".join(short_value(v) for v in sorted(values, key=lambda v: (v is None, v)))
        ax.annotate(f"{key.rsplit('.', 1)[-1]}={label}", xy, textcoords="offset points",
                    xytext=(4, 3), fontsize=7, alpha=0.8)
    return ax


def _trial_config(study: optuna.Study) -> dict[str, Any] | None:
    for t in study.get_trials(deepcopy=False):
        path = Path(t.user_attrs.get(RUN_DIR_ATTR, "")) / "config.yaml"
        if path.is_file():
            return yaml.safe_load(path.read_text())
    return None


def wandb_summary(study: optuna.Study, spec: SweepSpec, study_name: str, out: Path,
                  header: list[str], rows: list[list[Any]], plots: list[Path], best) -> None:
    """The trials table and plots as a W&B run of the study's group (job type ``summary``),
    offline unless W&B is set up for online use; the same run on every re-run."""
    config = _trial_config(study)
    experiment = (config or {}).get("experiment") or {}
    if not config or not experiment.get("wandb", True):
        return
    import wandb

    from xecg.lightning_cli import wandb_mode

    id_file = out / "wandb_summary_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else f"{os.urandom(4).hex()}"
    write_atomic(id_file, run_id + "\n")
    run = wandb.init(project=experiment.get("project") or "xecg", group=study_name,
                     job_type="summary", name=f"{study_name}-summary", id=run_id,
                     resume="allow", dir=str(out), mode=wandb_mode(),
                     tags=["sweep", study_name, "summary"],
                     config={"study": study_name, "sweep_file": str(spec.path),
                             "sweep": spec.raw})
    try:
        data = [[None if isinstance(v, float) and math.isnan(v) else v for v in row]
                for row in rows]
        table = wandb.Table(columns=header, data=[[_plain(v) for v in r] for r in data])
        log: dict[str, Any] = {"trials": table}
        log.update({f"plots/{p.stem}": wandb.Image(str(p)) for p in plots})
        run.log(log)
        c = counts(study)
        run.summary.update({"trials/finished": c["finished"], "trials/pruned": c["PRUNED"],
                            "trials/failed": c["FAIL"]})
        if best is not None:
            run.summary.update({"best/trial": best.number, "best/params": _trial_params(best),
                                **{f"best/{m}": v for m, v in zip(spec.metrics, best.values)}})
    finally:
        run.finish()


def _plain(value: Any) -> Any:
    """A table cell W&B accepts in a column of one type: strings for anything not numeric."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return str(value)


def write_reports(study: optuna.Study, spec: SweepSpec, study_name: str, out: Path) -> None:
    """trials.csv, best.yaml, the plots and the W&B summary run."""
    header, rows = trials_table(study, spec)
    write_csv(out / "trials.csv", header, [["" if v is None else v for v in r] for r in rows])
    best = best_trial(study)
    best_yaml = write_best_yaml(study, spec, study_name, out, best) if best else None
    plots = write_plots(study, spec, out)
    try:
        wandb_summary(study, spec, study_name, out, header, rows, plots, best)
    except Exception as err:  # the files above are the results; W&B is a copy
        print(f"xecg sweep: warning: no W&B summary run ({one_line(err, 200)})",
              file=sys.stderr)
    c = counts(study)
    print(f"xecg sweep: study {study_name}: {c['finished']} finished ({c['COMPLETE']} complete,"
          f" {c['PRUNED']} pruned), {c['FAIL']} failed, {c['RUNNING']} running")
    if best is not None:
        values = ", ".join(f"{m} {v:.4f}" for m, v in zip(spec.metrics, best.values))
        print(f"xecg sweep: best trial {best.number}: {values} {_trial_params(best)}")
    print(f"xecg sweep: {out / 'trials.csv'}"
          + (f", {best_yaml}" if best_yaml else "")
          + (f", {len(plots)} plots in {out / 'plots'}" if plots else ""))


# ------------------------------------------------------------------------------ the command

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
        run_worker(study, spec, study_name, out, n_trials,
                   gpu=os.environ.get("CUDA_VISIBLE_DEVICES"))
        return 0

    check_against_experiment(spec)
    out.mkdir(parents=True, exist_ok=True)
    study = open_study(spec, study_name, storage_url, 0)
    _record_study(study, spec, storage_url)
    for params in spec.enqueue:
        study.enqueue_trial(params, skip_if_exists=True)
    fail_dead_trials(study)
    c = counts(study)
    print(f"xecg sweep: study {study_name} in {mask_url(storage_url)}: {c['finished']} of "
          f"{n_trials} trials finished, {c['RUNNING']} running, {c['WAITING']} queued; "
          f"sampler {sampler_settings(study.sampler)}", flush=True)
    code = 0
    try:
        if c["finished"] < n_trials:
            if args.workers == 1:
                run_worker(study, spec, study_name, out, n_trials)
            else:
                code = _run_workers(args, spec, study_name, out, storage_url, n_trials)
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


def _run_workers(args, spec: SweepSpec, study_name: str, out: Path, storage_url: str,
                 n_trials: int) -> int:
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

    def forward(signum, frame):
        for _, proc, _ in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        codes = [proc.wait() for _, proc, _ in procs]
    except KeyboardInterrupt:
        codes = [proc.wait() for _, proc, _ in procs]
    finally:
        signal.signal(signal.SIGTERM, previous)
    for (i, _, log), rc in zip(procs, codes):
        if rc != 0:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print(f"xecg sweep: worker {i} exited with {rc}; the end of {log}:\n  "
                  + "\n  ".join(tail), file=sys.stderr)
    return next((rc for rc in codes if rc != 0), 0)


