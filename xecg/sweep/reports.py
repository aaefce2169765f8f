"""What a study leaves in its folder: trials.csv, best.yaml, plots and a W&B summary run."""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from xecg.atomic import write_atomic, write_csv
from xecg.errors import one_line
from xecg.sweep.spec import SweepSpec, short_value
from xecg.sweep.study import PARAMS_ATTR, RUN_DIR_ATTR, TAGS_ATTR, counts


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


