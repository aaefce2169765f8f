"""``xecg compare DIR [DIR ...]``: variants of a model over seeds, with the statistics to tell a
real difference from seed noise.

Input. Every ``metrics.json`` under each DIR (searched recursively) is one run. From it xecg reads

* ``variant`` (str), else ``protocol.experiment``, else ``model.model``, else the folder name;
* ``seed`` (int), else ``model.seed`` / ``model.seed_everything``, else a top-level
  ``seed_everything``, else ``seed_everything:`` in the run folder's ``config.yaml``; a run with
  no seed is summarised but left out of the paired tests;
* the split's dict (``test`` by default, ``--split val``): every numeric value in it is a
  metric (``micro_f1``, ``macro_f1``, ``subset_acc*``, ``auroc``, ``f1_<class>``, ``cpsc_*`` and
  whatever is added later, e.g. explanation scores), plus ``protocol`` and ``thresholds``.

Two runs of one variant with the same seed (e.g. a re-run beside the ``NAME.<timestamp>`` folder
that ``xecg fit`` keeps of the earlier one) count once: the newer ``metrics.json`` wins.
A run folder may also hold ``predictions.csv`` (``record``, ``p_<class>``, ``predicted``,
``true``; labels ``;``-joined), as ``xecg predict`` writes it.

Statistics, and why these:

* Per variant over seeds: n, mean, standard deviation and a 95% **t-interval**
  ``mean +- t(0.975, n-1) * sd / sqrt(n)``. Ablations have 3-10 seeds; with so few, a normal
  interval (1.96 * se) would be too narrow.
* Each variant against a reference (``--reference``; default ``abn``, the network without the
  attention regulariser, if present): **paired** differences over the seeds both have. Runs with
  the same seed share the split, the initialisation and the data order, so much of the seed-to-
  seed spread is common to both variants and cancels in the difference. Reported: mean
  difference, its 95% t-interval, the paired t-test p (``scipy.stats.ttest_rel``) and, where
  n >= 6, the Wilcoxon signed-rank p (no normality assumed; with fewer pairs its smallest
  possible two-sided p exceeds 0.05, so it could never say anything).
* **Holm** correction of those p-values, per metric, over the variants compared with the
  reference: testing several variants makes some small p likely by chance; Holm controls the
  family-wise error like Bonferroni but loses less power.
* Per run: a **bootstrap** 95% percentile interval over test records (1,000 resamples, seeded)
  of micro-F1, macro-F1 and the three subset accuracies
  (:func:`xecg.bootstrap.bootstrap_intervals`): the uncertainty due to the finite test set,
  which the seed spread does not show. From the run's ``predictions.csv`` where it has one,
  else as its test stage wrote them to metrics.json.

Output (``--out``, default ``DIR/compare`` of the first DIR): ``compare.md`` (also printed),
``summary.csv``, ``paired.csv``, ``bootstrap.csv`` (if any run has intervals) and
``compare.png``. Errors exit with code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from xecg.bootstrap import BOOTSTRAP_METRICS, bootstrap_intervals
from xecg.classes import CLASSES, multi_hot
from xecg.data.store import write_atomic, write_csv
from xecg.errors import error_exit

#: Metrics of the headline table, the paired tests and the figure (``--metrics`` overrides).
HEADLINE: tuple[str, ...] = ("micro_f1", "macro_f1", "subset_acc", "subset_acc_multi",
                             "subset_acc_single", "auroc")
LABELS: dict[str, str] = {
    "micro_f1": "micro-F1", "macro_f1": "macro-F1", "subset_acc": "subset acc",
    "subset_acc_multi": "subset acc (multilabel)", "subset_acc_single": "subset acc (single)",
    "auroc": "macro AUROC", "cpsc_f1": "CPSC F1",
}
DEFAULT_REFERENCE = "abn"
_CONFIG_SEED = re.compile(r"^seed_everything:\s*(-?\d+)\s*$", re.MULTILINE)


class CompareError(Exception):
    """A problem with the input that the user must fix; ``main`` prints it and exits 2."""


def warn(message: str) -> None:
    print(f"xecg compare: warning: {message}", file=sys.stderr)


def label(metric: str) -> str:
    if metric.startswith("f1_") and metric[3:] in CLASSES:
        return f"F1 {metric[3:]}"
    return LABELS.get(metric, metric)


# -- runs ----------------------------------------------------------------------------------------


@dataclass
class Run:
    """One run folder: who it is (variant, seed) and what it measured on the split."""

    folder: Path
    variant: str
    seed: int | None
    metrics: dict[str, float]
    protocol: dict = field(default_factory=dict)
    thresholds: list[float] | None = None
    mtime: float = 0.0
    #: The split's bootstrap intervals as the test stage wrote them (metrics.json ``intervals``).
    intervals: dict = field(default_factory=dict)


def _as_int(value) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


def run_seed(data: dict, folder: Path) -> int | None:
    """The training seed, from the first place that has one (see the module docstring)."""
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    for value in (data.get("seed"), model.get("seed"), model.get("seed_everything"),
                  data.get("seed_everything")):
        if _as_int(value) is not None:
            return _as_int(value)
    config = folder / "config.yaml"
    if config.is_file():
        match = _CONFIG_SEED.search(config.read_text(errors="ignore"))
        if match:
            return int(match.group(1))
    return None


def run_variant(data: dict, folder: Path) -> str:
    protocol = data.get("protocol") if isinstance(data.get("protocol"), dict) else {}
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    for value in (data.get("variant"), protocol.get("experiment"), model.get("model")):
        if isinstance(value, str) and value:
            return value
    return folder.name


def numeric_metrics(values: dict) -> dict[str, float]:
    """Every number of a split's dict (bools and strings are not metrics)."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def load_run(path: Path, split: str) -> Run | None:
    """The run of one metrics.json; None (with a warning) if it has no ``split`` metrics."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not valid JSON (expected an object)")
    folder = path.parent
    values = data.get(split)
    if not isinstance(values, dict) or not numeric_metrics(values):
        warn(f"{path}: no {split!r} metrics, skipped")
        return None
    if split == "val" and data.get("fit_finished") is not True and not isinstance(
            data.get("test"), dict):
        # Validation is written every epoch: a run killed or pruned mid-fit holds some epoch's.
        warn(f"{path}: its fit did not finish (killed, pruned or still running; or written "
             f"before 2026-11-28), so its 'val' metrics are of {data.get('val_of', 'an epoch')}, "
             "not of the run: skipped")
        return None
    thresholds = data.get("thresholds")
    intervals = data.get("intervals") if isinstance(data.get("intervals"), dict) else {}
    intervals = intervals.get(split) if isinstance(intervals.get(split), dict) else {}
    return Run(folder=folder, variant=run_variant(data, folder), seed=run_seed(data, folder),
               metrics=numeric_metrics(values),
               protocol=data.get("protocol") if isinstance(data.get("protocol"), dict) else {},
               thresholds=thresholds if isinstance(thresholds, list) else None,
               mtime=path.stat().st_mtime,
               intervals=_intervals(intervals))


def _intervals(raw: dict) -> dict:
    """The ``[low, high]`` pairs of a metrics.json ``intervals`` entry (and its ``records``);
    anything else in it is left out rather than trusted."""
    pairs = {k: [float(v[0]), float(v[1])] for k, v in raw.items()
             if isinstance(v, list) and len(v) == 2
             and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)}
    if _as_int(raw.get("records")) is not None:
        pairs["records"] = _as_int(raw["records"])
    return pairs


def collect_runs(dirs: Sequence[Path], split: str) -> list[Run]:
    """All runs under ``dirs``. Invalid JSON is skipped with a warning unless nothing is left."""
    runs: list[Run] = []
    invalid: list[str] = []
    for d in dirs:
        if not d.is_dir():
            raise CompareError(f"{d}: no such directory")
        paths = sorted(d.rglob("metrics.json"))
        if not paths:
            raise CompareError(f"no metrics.json found under {d}")
        for path in paths:
            try:
                run = load_run(path, split)
            except ValueError as err:
                invalid.append(str(err))
                continue
            if run is not None:
                runs.append(run)
    if not runs:
        if invalid:
            raise CompareError("; ".join(invalid))
        raise CompareError(f"no run has {split!r} metrics under {', '.join(map(str, dirs))}")
    for message in invalid:
        warn(f"{message}, skipped")
    return dedupe(runs)


def dedupe(runs: list[Run]) -> list[Run]:
    """One run per (variant, seed): the newest. Seedless runs are all kept (nothing to clash)."""
    keep: dict[tuple[str, int], Run] = {}
    out: list[Run] = []
    for run in sorted(runs, key=lambda r: r.mtime, reverse=True):
        if run.seed is None:
            out.append(run)
            continue
        key = (run.variant, run.seed)
        if key in keep:
            warn(f"{run.folder}: {run.variant} seed {run.seed} also in {keep[key].folder} "
                 "(newer), skipped")
            continue
        keep[key] = run
        out.append(run)
    return sorted(out, key=lambda r: (r.variant, r.seed is None, r.seed or 0, str(r.folder)))


# -- statistics ----------------------------------------------------------------------------------


@dataclass
class Interval:
    """Mean, standard deviation and 95% t-interval of n values (sd, bounds NaN for n < 2)."""

    n: int
    mean: float
    sd: float
    low: float
    high: float


def t_interval(values: Iterable[float], level: float = 0.95) -> Interval:
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    n = x.size
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Interval(1, mean, math.nan, math.nan, math.nan)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(n, mean, sd, mean - half, mean + half)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (step-down; NaN stays NaN and does not count as a test).

    The i-th smallest of m p-values is multiplied by m - i + 1 (i from 1); adjusted values are
    made non-decreasing in that order and capped at 1.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def variant_values(runs: list[Run], variant: str, metric: str) -> dict[int | None, float]:
    return {r.seed: r.metrics[metric] for r in runs
            if r.variant == variant and metric in r.metrics}


def summarise(runs: list[Run], variants: list[str]) -> list[dict]:
    """One row per (variant, metric) over that variant's seeds."""
    rows = []
    for variant in variants:
        mine = [r for r in runs if r.variant == variant]
        metrics = sorted({m for r in mine for m in r.metrics}, key=metric_order)
        for metric in metrics:
            s = t_interval(r.metrics[metric] for r in mine if metric in r.metrics)
            rows.append({"variant": variant, "metric": metric, "n": s.n, "mean": s.mean,
                         "sd": s.sd, "ci_low": s.low, "ci_high": s.high})
    return rows


def metric_order(metric: str) -> tuple[int, int, str]:
    """Headline metrics first (in their order), then per-class F1 (class order), then the rest."""
    if metric in HEADLINE:
        return (0, HEADLINE.index(metric), "")
    if metric.startswith("f1_") and metric[3:] in CLASSES:
        return (1, CLASSES.index(metric[3:]), "")
    return (2, 0, metric)


def paired_test(a: dict, b: dict) -> dict:
    """Paired statistics of ``a - b`` over the seeds both have (seed -> value dicts)."""
    seeds = sorted(s for s in a.keys() & b.keys()
                   if s is not None and not math.isnan(a[s]) and not math.isnan(b[s]))
    diff = np.array([a[s] - b[s] for s in seeds], dtype=float)
    s = t_interval(diff)
    t_p = w_p = math.nan
    with warnings.catch_warnings():
        # Identical differences (sd 0) give NaN with a warning: NaN is the honest answer.
        warnings.simplefilter("ignore", RuntimeWarning)
        if len(seeds) >= 2:
            t_p = float(stats.ttest_rel([a[x] for x in seeds], [b[x] for x in seeds]).pvalue)
        if len(seeds) >= 6 and np.any(diff != 0):
            try:
                w_p = float(stats.wilcoxon(diff).pvalue)
            except ValueError:
                w_p = math.nan
    return {"seeds": seeds, "n": len(seeds), "mean_diff": s.mean, "ci_low": s.low,
            "ci_high": s.high, "t_p": t_p, "wilcoxon_p": w_p}


def paired(runs: list[Run], variants: list[str], reference: str,
           metrics: Sequence[str]) -> list[dict]:
    """Every variant minus the reference, per metric, with Holm over the variants compared."""
    rows = []
    for metric in metrics:
        ref = variant_values(runs, reference, metric)
        group = []
        for variant in variants:
            if variant == reference:
                continue
            row = paired_test(variant_values(runs, variant, metric), ref)
            group.append({"metric": metric, "variant": variant, "reference": reference, **row})
        for key in ("t_p", "wilcoxon_p"):
            adjusted = holm([g[key] for g in group])
            for g, p in zip(group, adjusted):
                g[f"{key}_holm"] = float(p)
        rows += group
    return rows


# -- bootstrap over test records ------------------------------------------------------------------


def read_predictions(path: Path, thresholds: list[float] | None) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) multi-hot R x 9 of the records with known labels.

    ``predicted`` comes from its column; without one, from ``p_<class>`` and the run's
    thresholds (0.5 where it has none).
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "true" not in rows[0]:
        raise ValueError("no records with a 'true' column")
    cut = np.asarray(thresholds if thresholds and len(thresholds) == len(CLASSES)
                     else [0.5] * len(CLASSES), dtype=float)
    true, pred = [], []
    for row in rows:
        if not row["true"].strip():
            continue  # labels unknown (e.g. an unlabelled record): nothing to score it against
        true.append(multi_hot(_names(row["true"])))
        if "predicted" in row and row["predicted"] is not None:
            pred.append(multi_hot(_names(row["predicted"])))
        else:
            probs = np.array([float(row[f"p_{c}"]) for c in CLASSES])
            pred.append((probs >= cut).astype(np.float32))
    if not true:
        raise ValueError("no records with true labels")
    return np.asarray(true) > 0.5, np.asarray(pred) > 0.5


def _names(cell: str) -> list[str]:
    return [t.strip() for t in cell.split(";") if t.strip()]


def bootstrap_runs(runs: list[Run], resamples: int, seed: int) -> list[dict]:
    """Per run, each bootstrap metric's estimate and interval over the split's records: from
    its ``predictions.csv`` (``resamples`` and ``seed`` as asked), else as the test stage wrote
    them to metrics.json (1,000 resamples, seed 0)."""
    rows = []
    for run in runs:
        path = run.folder / "predictions.csv"
        if path.is_file():
            try:
                true, pred = read_predictions(path, run.thresholds)
            except (ValueError, KeyError) as err:
                warn(f"{path}: no bootstrap ({err})")
                continue
            found = bootstrap_intervals(true, pred, resamples, seed).items()
            records = len(true)
        else:  # what the test stage computed, on the same records
            found = [(m, (run.metrics[m], *run.intervals[m])) for m in BOOTSTRAP_METRICS
                     if m in run.metrics and m in run.intervals]
            records = run.intervals.get("records")
        for metric, (point, low, high) in found:
            rows.append({"variant": run.variant, "seed": run.seed, "run": str(run.folder),
                         "records": records, "metric": metric, "estimate": point,
                         "ci_low": low, "ci_high": high})
    return rows


# -- protocol ------------------------------------------------------------------------------------


def protocol_fields(runs: list[Run]) -> tuple[dict, list[str]]:
    """(fields equal in every run, names of fields that differ). ``experiment`` names the
    variant, so it is left out."""
    keys = sorted({k for r in runs for k in r.protocol} - {"experiment"})
    common, differ = {}, []
    for key in keys:
        seen = {json.dumps(r.protocol.get(key), sort_keys=True) for r in runs}
        if len(seen) == 1:
            common[key] = runs[0].protocol.get(key)
        else:
            differ.append(key)
    return common, differ


# -- output --------------------------------------------------------------------------------------


def fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def cell(row: dict | None, n_runs: int, interval: bool = True) -> str:
    if row is None or row["n"] == 0:
        return "–"
    text = f"{fmt(row['mean'])} ± {fmt(row['sd'])}"
    if interval:
        text += f" [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"
    return text + (f" (n={row['n']})" if row["n"] != n_runs else "")


def render_markdown(runs: list[Run], variants: list[str], reference: str, split: str,
                    headline: Sequence[str], summary: list[dict], pairs: list[dict],
                    boot: list[dict], resamples: int = 1000) -> str:
    by = {(r["variant"], r["metric"]): r for r in summary}
    count = {v: sum(r.variant == v for r in runs) for v in variants}
    common, differ = protocol_fields(runs)
    lines = [f"# Variant comparison ({split} split)", "",
             f"{len(runs)} runs, {len(variants)} variants. Each cell: mean ± SD over seeds "
             f"[95% t-interval] of the {split}-split metric; n = number of seeds.", ""]
    if common:
        lines.append("Protocol common to all runs: "
                     + "; ".join(f"{k} = {json.dumps(v)}" for k, v in common.items()) + ".")
    if differ:
        lines.append(f"Protocol fields that differ between runs: {', '.join(differ)}.")
    lines += ["", "| variant | n | " + " | ".join(label(m) for m in headline) + " |",
              "|---|---|" + "---|" * len(headline)]
    for v in variants:
        lines.append(f"| {v} | {count[v]} | "
                     + " | ".join(cell(by.get((v, m)), count[v]) for m in headline) + " |")
    if pairs:
        lines += ["", f"## Paired differences against `{reference}` (seeds both have)", "",
                  "Δ = variant − reference, mean over common seeds [95% t-interval]; paired "
                  "t-test and Wilcoxon signed-rank (n ≥ 6) p-values, Holm-adjusted over the "
                  f"{len(variants) - 1} variants compared, per metric.", "",
                  "| metric | variant | n | Δ | 95% CI | t-test p | Holm p | Wilcoxon p | Holm p |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in pairs:
            lines.append(f"| {label(r['metric'])} | {r['variant']} | {r['n']} | "
                         f"{fmt(r['mean_diff'], 4)} | [{fmt(r['ci_low'], 4)}, "
                         f"{fmt(r['ci_high'], 4)}] | {fmt_p(r['t_p'])} | "
                         f"{fmt_p(r['t_p_holm'])} | {fmt_p(r['wilcoxon_p'])} | "
                         f"{fmt_p(r['wilcoxon_p_holm'])} |")
    lines += _metric_table("Per-class F1 (mean ± SD)", summary, variants, count,
                           lambda m: metric_order(m)[0] == 1)
    lines += _metric_table("Other metrics (mean ± SD)", summary, variants, count,
                           lambda m: metric_order(m)[0] == 2 or
                           (metric_order(m)[0] == 0 and m not in headline))
    if boot:
        lines += ["", "## Per-run bootstrap over test records",
                  "", f"Estimate [95% percentile interval] over {resamples} resamples of the "
                  "test records (with replacement) of each run's predictions.csv, or, for a run "
                  "without one, the 1,000 resamples its test stage wrote to metrics.json.", "",
                  "| variant | seed | records | " + " | ".join(label(m) for m in BOOTSTRAP_METRICS)
                  + " |", "|---|---|---|" + "---|" * len(BOOTSTRAP_METRICS)]
        per_run: dict[str, dict[str, dict]] = {}
        for r in boot:
            per_run.setdefault(r["run"], {})[r["metric"]] = r
        for metrics in per_run.values():
            first = next(iter(metrics.values()))
            lines.append(f"| {first['variant']} | {first['seed']} | {first['records']} | "
                         + " | ".join(_interval_cell(metrics.get(m)) for m in BOOTSTRAP_METRICS)
                         + " |")
    return "\n".join(lines) + "\n"


def _interval_cell(row: dict | None) -> str:
    """``estimate [low, high]``; ``n/a`` for a metric without records (no multilabel ones)."""
    if row is None:
        return "n/a"
    return f"{fmt(row['estimate'])} [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"


def _metric_table(title: str, summary: list[dict], variants: list[str], count: dict,
                  keep) -> list[str]:
    """Rows = metrics, columns = variants: compact, for the many secondary metrics."""
    metrics = sorted({r["metric"] for r in summary if keep(r["metric"])}, key=metric_order)
    if not metrics:
        return []
    by = {(r["variant"], r["metric"]): r for r in summary}
    lines = ["", f"## {title}", "", "| metric | " + " | ".join(variants) + " |",
             "|---|" + "---|" * len(variants)]
    for m in metrics:
        lines.append(f"| {label(m)} | "
                     + " | ".join(cell(by.get((v, m)), count[v], interval=False)
                                  for v in variants) + " |")
    return lines


def write_tables(out: Path, summary: list[dict], pairs: list[dict], boot: list[dict]) -> None:
    def rows(records: list[dict], header: list[str]):
        return [[_csv_value(r[h]) for h in header] for r in records]

    header = ["variant", "metric", "n", "mean", "sd", "ci_low", "ci_high"]
    write_csv(out / "summary.csv", header, rows(summary, header))
    header = ["metric", "variant", "reference", "n", "seeds", "mean_diff", "ci_low", "ci_high",
              "t_p", "t_p_holm", "wilcoxon_p", "wilcoxon_p_holm"]
    write_csv(out / "paired.csv", header, rows(pairs, header))
    if boot:
        header = ["variant", "seed", "run", "records", "metric", "estimate", "ci_low", "ci_high"]
        write_csv(out / "bootstrap.csv", header, rows(boot, header))


def _csv_value(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    if isinstance(value, list):
        return ";".join(map(str, value))
    return "" if value is None else str(value)


def plot(path: Path, runs: list[Run], variants: list[str], headline: Sequence[str],
         summary: list[dict], split: str) -> None:
    """Per-seed points, mean and 95% t-interval per variant; one panel per headline metric."""
    from xecg.plots import plt, save_figure  # matplotlib with the Agg backend

    by = {(r["variant"], r["metric"]): r for r in summary}
    cols = min(3, len(headline))
    rows = math.ceil(len(headline) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, headline):
        for i, v in enumerate(variants):
            ys = [r.metrics[metric] for r in runs if r.variant == v and metric in r.metrics]
            if ys:  # seeds side by side, left of the mean, so neither hides the other
                ax.scatter(i - 0.12 + np.linspace(-0.06, 0.06, len(ys)), ys, s=14,
                           color="tab:gray", alpha=0.8, zorder=2)
            s = by.get((v, metric))
            if s is not None and s["n"]:
                err = None if math.isnan(s["ci_low"]) else [[s["mean"] - s["ci_low"]],
                                                            [s["ci_high"] - s["mean"]]]
                ax.errorbar([i + 0.12], [s["mean"]], yerr=err, fmt="o", color="tab:blue",
                            capsize=4, zorder=3)
        ax.set_xticks(range(len(variants)))
        many = len(variants) > 3  # slanted one-line labels, anchored at their tick
        ax.set_xticklabels([f"{v} (n={sum(r.variant == v for r in runs)})" if many else
                            f"{v}\n(n={sum(r.variant == v for r in runs)})" for v in variants],
                           rotation=35 if many else 0, ha="right" if many else "center",
                           rotation_mode="anchor" if many else "default", fontsize=8)
        ax.set_title(f"{label(metric)} ({split})", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(headline):]:
        ax.axis("off")
    fig.suptitle("gray: seeds; blue: mean with 95% t-interval", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


# -- command -------------------------------------------------------------------------------------


def choose_reference(variants: list[str], requested: str | None) -> str:
    if requested is not None:
        if requested not in variants:
            raise CompareError(f"reference variant {requested!r} not found; available: "
                               f"{', '.join(variants)}")
        return requested
    return DEFAULT_REFERENCE if DEFAULT_REFERENCE in variants else variants[0]


def choose_headline(runs: list[Run], requested: Sequence[str] | None, split: str) -> list[str]:
    available = {m for r in runs for m in r.metrics}
    if requested:
        missing = [m for m in requested if m not in available]
        if missing:
            names = ", ".join(sorted(available, key=metric_order))
            raise CompareError(f"metric {', '.join(missing)} not in any run's {split!r} "
                               f"metrics; available: {names}")
        return list(dict.fromkeys(requested))
    return [m for m in HEADLINE if m in available]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="xecg compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR",
                   help="folders searched recursively for run folders with metrics.json")
    p.add_argument("--reference", default=None,
                   help=f"variant the others are compared with (default {DEFAULT_REFERENCE!r} "
                        "if present, else the first alphabetically)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: DIR/compare of the first DIR)")
    p.add_argument("--metrics", nargs="+", default=None, metavar="KEY",
                   help=f"headline metrics (default: {' '.join(HEADLINE)})")
    p.add_argument("--split", default="test", choices=("test", "val"),
                   help="which split's metrics to compare (default test)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples per run with predictions.csv (default 1000)")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="bootstrap RNG seed")
    return p.parse_args(argv)


def compare(args: argparse.Namespace) -> str:
    """Everything but the printing; returns the Markdown."""
    runs = collect_runs(args.dirs, args.split)
    variants = sorted({r.variant for r in runs})
    reference = choose_reference(variants, args.reference)
    variants = [reference] + [v for v in variants if v != reference]
    headline = choose_headline(runs, args.metrics, args.split)
    unseeded = [r for r in runs if r.seed is None]
    for r in unseeded:
        warn(f"{r.folder}: no seed found, left out of the paired tests")
    summary = summarise(runs, variants)
    pairs = paired(runs, variants, reference, headline)
    boot = bootstrap_runs(runs, args.bootstrap, args.bootstrap_seed) if args.bootstrap > 0 else []
    markdown = render_markdown(runs, variants, reference, args.split, headline, summary, pairs,
                               boot, args.bootstrap)
    out = args.out if args.out is not None else args.dirs[0] / "compare"
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "compare.md", markdown)
    write_tables(out, summary, pairs, boot)
    if headline:
        plot(out / "compare.png", runs, variants, headline, summary, args.split)
    return markdown


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        markdown = compare(args)
    except CompareError as err:
        return error_exit(err)
    print(markdown, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
