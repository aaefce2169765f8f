"""Scores of explanation maps against known evidence intervals, and faithfulness.

All localisation scores take a map ``A`` over the T samples of a record (input resolution) and a
time mask ``M`` (True inside the evidence, leads collapsed), and use ``A+ = max(A, 0)``:

- relevance mass accuracy (Arras et al., CLEVR-XAI, 2022): ``RMA = sum(A+ M) / sum(A+)``;
- relevance rank accuracy: with ``K = |M|``, the share of the K highest-map samples inside M.
  Ties at the K-th value are broken at random in expectation (maps at pooled resolution are
  constant over 243 samples), so a constant map scores exactly the chance level;
- pointing game (Zhang et al., 2018): a hit when the map's maximum lies in M widened by 40 ms on
  each side; with several maximal samples, the share of them that hit (the expected hit of a
  random pick). Per class, hits / (hits + misses) is the mean of these.

Chance levels: ``|M| / T`` for RMA and RRA, ``|M widened| / T`` for the pointing game (the share
of the record where a random peak would hit). Chance-adjusted: ``(score - chance) / (1 -
chance)``. A map without positive mass is treated as uniform (every score at chance).
Evidence that covers the whole record (AF, Normal) cannot be localised and is not scored; in
coverage it counts as covered.

Faithfulness: AOPC (Samek et al. 2017), most relevant first: the record is cut into the
network's 243-sample pooling segments (the tail is one more segment), ranked by the map's mean
over them; step k (k = 0..10) sets the ``ceil(k / 10 * 0.5 * segments)`` most relevant
segments to zero (zero after normalisation: each lead at its training mean), and AOPC is the
mean over steps of ``p_0 - p_k`` for the class the model predicts (its highest probability).
Its chance level is the AOPC of a random deletion order (seeded by record), and its adjusted
value the difference of the two.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from xecg.models import DOWNSAMPLE

#: Pointing-game tolerance either side of the evidence (Zhang et al. use 15 px; 40 ms here).
POINTING_TOLERANCE_S = 0.040
AOPC_STEPS = 10
AOPC_FRACTION = 0.5
#: Localisation metrics, in report order.
LOCALISATION = ("rma", "rra", "pointing")


def evidence_mask(intervals: Iterable[tuple[int, int]], length: int) -> np.ndarray:
    """Bool ``(length,)``: True inside any ``[start, end)`` interval (clipped to the record)."""
    mask = np.zeros(length, dtype=bool)
    for start, end in intervals:
        mask[max(0, int(start)):max(0, min(length, int(end)))] = True
    return mask


def widen(mask: np.ndarray, samples: int) -> np.ndarray:
    """``mask`` grown by ``samples`` on each side of every True run."""
    mask = np.asarray(mask, dtype=bool)
    if samples <= 0 or not mask.any():
        return mask.copy()
    counts = np.convolve(mask.astype(np.int32), np.ones(2 * samples + 1, np.int32), mode="same")
    return counts > 0


def _positive(values: np.ndarray) -> np.ndarray | None:
    """``max(A, 0)`` as float64, or None when it has no mass (treated as a uniform map)."""
    a = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
    return a if a.sum() > 0 else None


def chance(mask: np.ndarray) -> float:
    """Share of the record inside the mask: the score of a map that knows nothing."""
    return float(np.mean(mask))


def adjusted(score: float, level: float) -> float:
    """``(score - chance) / (1 - chance)``: 0 at chance, 1 for a perfect map; NaN when the
    chance level is 1 (nothing to localise)."""
    return float("nan") if level >= 1.0 or math.isnan(score) else (score - level) / (1 - level)


def rma(values: np.ndarray, mask: np.ndarray) -> float:
    """Relevance mass accuracy: share of the positive map's mass inside the mask."""
    mask = np.asarray(mask, dtype=bool)
    a = _positive(values)
    if a is None:
        return chance(mask)
    return float(a[mask].sum() / a.sum())


def rra(values: np.ndarray, mask: np.ndarray) -> float:
    """Relevance rank accuracy: share of the ``|M|`` highest-map samples inside the mask, ties
    at the cut-off shared out in proportion (the expectation over random tie-breaking)."""
    mask = np.asarray(mask, dtype=bool)
    k = int(mask.sum())
    if k == 0:
        return float("nan")
    a = _positive(values)
    if a is None:
        return chance(mask)
    cut = np.partition(a, a.size - k)[a.size - k]  # the K-th highest value
    above = a > cut
    tied = a == cut
    n_above, n_tied = int(above.sum()), int(tied.sum())
    inside = (above & mask).sum() + (k - n_above) * (tied & mask).sum() / n_tied
    return float(inside / k)


def pointing(values: np.ndarray, mask: np.ndarray, tolerance: int) -> float:
    """Pointing game: 1 if the map's maximum lies in the mask widened by ``tolerance``
    samples each side, else 0; with several maximal samples, the share of them that hit."""
    target = widen(mask, tolerance)
    a = _positive(values)
    if a is None:
        return chance(target)
    top = a == a.max()
    return float((top & target).sum() / top.sum())


def localisation(values: np.ndarray, mask: np.ndarray, fs: float
                 ) -> dict[str, tuple[float, float]]:
    """``metric -> (score, chance)`` for RMA, RRA and the pointing game."""
    tol = int(round(POINTING_TOLERANCE_S * fs))
    level = chance(mask)
    return {"rma": (rma(values, mask), level), "rra": (rra(values, mask), level),
            "pointing": (pointing(values, mask, tol), chance(widen(mask, tol)))}


def covered(values: np.ndarray, masks: Sequence[np.ndarray]) -> bool:
    """True if every mask receives more than its chance share of the map's positive mass (a
    mask covering the whole record always counts as covered)."""
    for mask in masks:
        level = chance(mask)
        if level < 1.0 and not rma(values, mask) > level:
            return False
    return True


# -------------------------------------------------------------------------------- AOPC
def segments(length: int, size: int = DOWNSAMPLE) -> list[tuple[int, int]]:
    """``[size i, size (i + 1))`` pooling segments of a record, the shorter tail last."""
    return [(a, min(a + size, length)) for a in range(0, length, size)]


def deletion_counts(n_segments: int, steps: int = AOPC_STEPS,
                    fraction: float = AOPC_FRACTION) -> list[int]:
    """Segments deleted at steps 0..steps: ``ceil(k / steps * fraction * n)``."""
    return [min(n_segments, math.ceil(k / steps * fraction * n_segments - 1e-9))
            for k in range(steps + 1)]


def aopc(probability: Callable[[Tensor], Tensor], x: Tensor, values: np.ndarray, target: int,
         order: np.ndarray | None = None) -> float:
    """AOPC of deleting ``x``'s (``1 x leads x N``, normalised) segments most relevant first by
    ``values`` (N,), or in ``order`` (segment indices) if given. ``probability`` maps a batch
    to ``B x C`` probabilities; ``target`` is the class whose probability drop is averaged."""
    n = x.shape[-1]
    segs = segments(n)
    if order is None:
        relevance = np.array([np.mean(values[a:b]) for a, b in segs])
        order = np.argsort(-relevance, kind="stable")
    counts = deletion_counts(len(segs))
    batch = x.repeat(len(counts), 1, 1)
    keep = torch.ones(len(counts), n, dtype=batch.dtype, device=batch.device)
    for row, count in enumerate(counts):
        for s in order[:count]:
            a, b = segs[int(s)]
            keep[row, a:b] = 0
    with torch.no_grad():
        p = probability(batch * keep.unsqueeze(1))[:, target].float().cpu().numpy()
    return float(np.mean(p[0] - p))


# -------------------------------------------------------------------------- summaries
def bootstrap_mean(values: np.ndarray, groups: np.ndarray, resamples: int = 1000,
                   seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` and its 95% percentile interval from a bootstrap over ``groups``
    (records: all rows of a drawn record come together). NaN values are left out."""
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups)
    ok = ~np.isnan(values)
    values, groups = values[ok], groups[ok]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    _, inverse = np.unique(groups, return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    counts = np.bincount(inverse).astype(np.float64)
    mean = float(sums.sum() / counts.sum())
    if len(sums) < 2 or resamples <= 0:
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(sums), np.full(len(sums), 1 / len(sums)), size=resamples)
    boot = (draws @ sums) / np.maximum(draws @ counts, 1e-12)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return mean, float(lo), float(hi)


SUMMARY_FIELDS = ("model", "method", "metric", "label", "n", "mean", "ci_low", "ci_high",
                  "chance", "adjusted", "adjusted_ci_low", "adjusted_ci_high")


#: Row labels that are not classes: the union pairing and the multilabel coverage.
UNION, MULTILABEL = "union", "multilabel"


def summarise(rows: Sequence[dict], resamples: int = 1000, seed: int = 0) -> list[dict]:
    """Per (model, method, metric): one row over the class pairs (``label`` "all"), one per
    class, and one each for the ``union`` pairing and the ``multilabel`` coverage, each with the
    mean, its bootstrap 95% interval over records, the mean chance level and the mean
    chance-adjusted score with its interval."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        key = (r["model"], r["method"], r["metric"])
        groups[(*key, r["label"])].append(r)
        if r["label"] not in (UNION, MULTILABEL):
            groups[(*key, "all")].append(r)
    out = []
    for (model, method, metric, label), members in groups.items():
        rec = np.array([m["record"] for m in members])
        mean, lo, hi = bootstrap_mean(np.array([m["value"] for m in members]), rec,
                                      resamples, seed)
        adj, alo, ahi = bootstrap_mean(np.array([m["adjusted"] for m in members]), rec,
                                       resamples, seed)
        level = np.array([m["chance"] for m in members], dtype=np.float64)
        out.append({"model": model, "method": method, "metric": metric, "label": label,
                    "n": len(members), "mean": mean, "ci_low": lo, "ci_high": hi,
                    "chance": float(np.nanmean(level)) if np.isfinite(level).any()
                    else float("nan"),
                    "adjusted": adj, "adjusted_ci_low": alo, "adjusted_ci_high": ahi})
    models = {"trained": 0, "randomised": 1}
    metrics = {m: i for i, m in enumerate((*LOCALISATION, "coverage", "aopc"))}
    labels = {"all": 0, UNION: 1, MULTILABEL: 2}
    out.sort(key=lambda r: (models.get(r["model"], 9), r["method"], metrics.get(r["metric"], 9),
                            labels.get(r["label"], 3), r["label"]))
    return out


def flat_scores(summary: Sequence[dict], prefix: str = "expl_") -> dict[str, float]:
    """Flat keys for metrics.json from a summary: ``expl_{metric}_{method}`` over the class
    pairs (for ``attention``: A against the union of the true labels' evidence),
    ``expl_{metric}_union_{method}`` for a class-map method's union pairing,
    ``expl_coverage_{method}``, ``expl_aopc_{method}``; each with ``_adj`` after the metric
    for the chance-adjusted value where defined; ``expl_coverage`` is attention's (else the
    first method's); the randomised model's keys start ``expl_randomised_``."""
    flat: dict[str, float] = {}
    for r in summary:
        metric, method, label = r["metric"], r["method"], r["label"]
        if label == "all" or label == MULTILABEL or (label == UNION and method == "attention"):
            name = metric
        elif label == UNION:
            name = f"{metric}_union"
        else:
            continue
        head = prefix if r["model"] == "trained" else f"{prefix}randomised_"
        flat[f"{head}{name}_{method}"] = float(r["mean"])
        if not math.isnan(r["adjusted"]):
            flat[f"{head}{metric}_adj{name[len(metric):]}_{method}"] = float(r["adjusted"])
    coverage = [k for k in flat if k.startswith(f"{prefix}coverage_")]
    if coverage:
        flat[f"{prefix}coverage"] = flat.get(f"{prefix}coverage_attention", flat[coverage[0]])
    return flat


def format_summary(summary: Sequence[dict], title: str = "") -> str:
    """summary.md: one table per model, overall rows first."""
    lines = [f"# {title}" if title else "# Explanation scores", ""]
    lines += [
        "RMA: relevance mass accuracy; RRA: relevance rank accuracy; pointing: pointing game "
        f"(±{POINTING_TOLERANCE_S * 1000:.0f} ms); coverage: share of multilabel records in "
        "which every true label's evidence gets more than its chance share of the map; "
        "AOPC: mean probability drop, most relevant 243-sample segments deleted first "
        "(chance: random order; adjusted: difference). Intervals: bootstrap over records, "
        "95%. Adjusted: (score - chance) / (1 - chance). `randomised`: the same architecture "
        "freshly initialised (a trustworthy map falls to chance there).", ""]
    for model in dict.fromkeys(r["model"] for r in summary):
        lines += [f"## {model} model", "",
                  "| method | metric | label | n | mean [95% CI] | chance | adjusted [95% CI] |",
                  "| --- | --- | --- | ---: | --- | ---: | --- |"]
        for r in summary:
            if r["model"] != model:
                continue
            lines.append(
                f"| {r['method']} | {r['metric']} | {r['label']} | {r['n']} | "
                f"{_ci(r['mean'], r['ci_low'], r['ci_high'])} | {_num(r['chance'])} | "
                f"{_ci(r['adjusted'], r['adjusted_ci_low'], r['adjusted_ci_high'])} |")
        lines.append("")
    return "\n".join(lines)


def _num(v: float) -> str:
    return "" if v is None or math.isnan(v) else f"{v:.3f}"


def _ci(mean: float, lo: float, hi: float) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.3f}" if math.isnan(lo) else f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"
