"""One trial: its command line (the experiment plus the sampled values), the Lightning fit
and test it runs in the worker process, and the objective read from its run."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from xecg.cli import override_args
from xecg.errors import ConfigError, one_line
from xecg.sweep.reports import write_trials_csv
from xecg.sweep.spec import SweepSpec, short_value
from xecg.sweep.study import (
    OUTSIDE_ATTR,
    PARAMS_ATTR,
    RUN_DIR_ATTR,
    TAGS_ATTR,
    WORKER_ATTR,
    counts,
    fail_dead_trials,
)

#: Seconds a worker waits between looks at the study while others finish the last trials.
POLL_SECONDS = 2.0


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
    # Every choice, not only the first parsed above: a misspelt one failed the trials that
    # drew it, the baseline among them, and stopped the sweep.
    for key, dist in spec.space.items():
        if isinstance(dist, CategoricalDistribution):
            for choice in dist.choices[1:]:
                _parse_one(parse, spec, "search_space", key, choice, fixed)
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
            if _interrupted.is_set():  # Optuna marks the trial FAIL; the command says one line
                raise KeyboardInterrupt from None
            raise RuntimeError(f"trial {trial.number}: the run exited with code {err.code} "
                               "(a rejected argument or an interrupt)") from None
        values = [objective_value(m, run_dir, capture.metrics) for m in spec.metrics]
        return values[0] if len(values) == 1 else values

    return objective


#: Set by a Ctrl-C while a worker runs: Lightning turns the KeyboardInterrupt it catches into
#: SystemExit(1), which a rejected argument also raises; the trial must tell them apart.
_interrupted = threading.Event()


def _on_sigint(signum, frame) -> None:
    if _interrupted.is_set():  # a second one, e.g. a worker's after a Ctrl-C in a terminal
        return  # (the terminal's and the one `xecg sweep --workers` forwards): stopping already
    _interrupted.set()
    signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt, as before


class _NoInterruptTraceback(logging.Filter):
    """Optuna logs a trial failed by Ctrl-C with the interrupt's traceback: the trial's line
    stays, the traceback goes (the command says in one line what to do)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            record.exc_info, record.exc_text = None, None
        return True


_QUIET_INTERRUPT = _NoInterruptTraceback()


def run_worker(study: optuna.Study, spec: SweepSpec, study_name: str, out: Path,
               n_trials: int, gpu: str | None = None) -> None:
    """Run trials until the study has ``n_trials`` finished (COMPLETE or PRUNED) ones. A
    Ctrl-C fails the running trial and raises KeyboardInterrupt."""
    _interrupted.clear()
    for handler in optuna.logging._get_library_root_logger().handlers:
        handler.addFilter(_QUIET_INTERRUPT)  # once: a filter object is added at most once
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _on_sigint) if main_thread else None
    try:
        _run_trials(study, spec, study_name, out, n_trials, gpu)
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)


def _run_trials(study: optuna.Study, spec: SweepSpec, study_name: str, out: Path,
                n_trials: int, gpu: str | None) -> None:
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


