"""The sweep file (``sweeps/README.md``): :func:`load_sweep` reads and checks it into a
:class:`SweepSpec` (experiment, overrides, search space, enqueued trials, objectives, sampler,
pruner, heartbeat); a problem raises ConfigError naming the file and the key."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from xecg.cli import load_mapping
from xecg.errors import ConfigError, one_line

#: The keys a sweep file may hold (sweeps/README.md).
SWEEP_KEYS = ("experiment", "overrides", "search_space", "enqueue", "objective", "n_trials",
              "sampler", "pruner", "heartbeat")
#: Keys the sweep sets for every trial (run folder, W&B grouping, one device).
RESERVED_KEYS = ("experiment.name", "experiment.runs_dir", "experiment.group",
                 "experiment.job_type", "report.meta", "trainer.devices", "trainer.num_nodes",
                 "trainer.strategy", "trainer.default_root_dir", "checkpoint.dirpath")
#: Heartbeat settings of a sweep file's ``heartbeat`` (seconds; re-queues of a dead trial).
HEARTBEAT_DEFAULTS = {"interval": 60, "grace_period": 180, "retries": 1}
#: Metric names of the explanation scores (metrics.json's val section, not logged per epoch).
EXPLANATION_PREFIX = "/expl_"


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
        _check_logged(path, f"{key}.metric", metric)
        out.append(Objective(metric, direction))
    return out


@functools.lru_cache(maxsize=1)
def logged_metrics() -> dict[str, frozenset[str]]:
    """The names a trial's run logs or writes, by stage (``val``, ``test``, ``train``), built
    from the code that makes them rather than a list of our own: ECGMetrics' keys (computed on
    a few random rows), the loss terms of :class:`xecg.losses.LossTerms` (``total`` is logged
    as ``loss``, xecg/module.py), ``micro_f1_best`` (val) and every explanation score
    :func:`xecg.explain.scores.flat_scores` can write into metrics.json's val section."""
    import torch

    from xecg.classes import NUM_CLASSES
    from xecg.explain.maps import METHODS
    from xecg.explain.scores import LOCALISATION, MULTILABEL, UNION, flat_scores
    from xecg.losses import LossTerms
    from xecg.metrics import ECGMetrics

    def computed(with_auroc: bool) -> set[str]:
        metrics = ECGMetrics(with_auroc=with_auroc, sync_on_compute=False)
        target = torch.cat([torch.eye(NUM_CLASSES), 1 - torch.eye(NUM_CLASSES)])
        metrics.update(torch.rand(target.shape, generator=torch.Generator().manual_seed(0)),
                       target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return set(metrics.compute())

    losses = {"loss", *LossTerms._fields[1:]}
    rows = [{"model": model, "method": method, "metric": metric, "label": label, "mean": 0.5,
             "adjusted": 0.5}
            for model in ("trained", "randomised") for method in METHODS
            for metric in (*LOCALISATION, "coverage", "aopc")
            for label in ("all", UNION, MULTILABEL)]
    return {"train": frozenset(computed(False) | losses),
            "val": frozenset(computed(True) | losses | {"micro_f1_best"} | set(flat_scores(rows))),
            "test": frozenset(computed(True) | losses)}


def _check_logged(path: Path, key: str, metric: str) -> None:
    """A metric no trial would log stops the sweep here, not after the first trial's fit."""
    import difflib

    stage, _, name = metric.partition("/")
    names = logged_metrics()[stage]
    if name in names:
        return
    # The stage's own names first: test/micro_f1_best (logged for val only) means
    # test/micro_f1 rather than val/micro_f1_best.
    everything = sorted(f"{s}/{n}" for s, ns in logged_metrics().items() for n in ns)
    close = (difflib.get_close_matches(metric, sorted(f"{stage}/{n}" for n in names), n=1)
             or difflib.get_close_matches(metric, everything, n=1))
    hint = (f"did you mean {close[0]}?" if close else
            f"e.g. {', '.join(f'{stage}/{n}' for n in ('micro_f1', 'auroc', 'loss'))}")
    raise ConfigError(f"{path}: {key}: {metric} is not a metric xecg logs ({hint})")


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


def short_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
