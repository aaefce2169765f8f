"""Per-stage metrics: the paper's (micro-F1, subset accuracy over all / multilabel / single-label
records), macro-F1, per-class F1, macro AUROC and the official CPSC 2018 scorer.

One :class:`ECGMetrics` per stage (train/val/test), as torchmetrics objects: training's reduce
their states across DDP processes before ``compute``; evaluation's are given every process's
rows, gathered once by ``XECGModule`` (each record counted once), and reduce nothing.
:func:`interval_report` gives the summary metrics a 95% bootstrap interval over the evaluated
records (:mod:`xecg.bootstrap`), which the test stage and ``xecg evaluate`` report beside them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MultilabelExactMatch, MultilabelF1Score
from torchmetrics.functional.classification import multilabel_auroc
from torchmetrics.utilities import dim_zero_cat

from xecg.bootstrap import BOOTSTRAP_RESAMPLES, bootstrap_intervals
from xecg.classes import CLASS_INDEX, CLASSES, CPSC_CODES, CPSC_SCORER_GROUPS, NUM_CLASSES

# For a missed multilabel record the official scorer charges the label listed first in
# REFERENCE.csv; multi-hot targets keep no order, so xecg charges the one with the lowest CPSC
# code. This only moves misses of multilabel records between rows.
_CPSC_RANK = torch.tensor([{v: k for k, v in CPSC_CODES.items()}[c] for c in CLASSES])


class SubsetAccuracy(Metric):
    """Exact-match accuracy over the records of one kind: ``all``, ``multi`` (>= 2 labels) or
    ``single`` (1 label). The paper reports all three."""

    full_state_update = False

    def __init__(self, subset: str = "all", **kwargs: Any):
        super().__init__(**kwargs)
        if subset not in ("all", "multi", "single"):
            raise ValueError(f"subset must be all, multi or single, not {subset!r}")
        self.subset = subset
        self.add_state("correct", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """preds, target: B x 9 binary."""
        n = target.sum(1)
        keep = {"all": torch.ones_like(n, dtype=torch.bool), "multi": n >= 2, "single": n == 1}
        keep = keep[self.subset]
        match = (preds.bool() == target.bool()).all(1)
        self.correct += (match & keep).sum()
        self.total += keep.sum()

    def compute(self) -> Tensor:
        return self.correct / self.total.clamp(min=1)


class CPSCScore(Metric):
    """The official CPSC 2018 scorer: one predicted class per record (the most probable),
    correct if it is among the record's labels; F1 per class from the 9 x 9 confusion matrix,
    overall F1 = mean of the nine, and the pooled group scores Faf, Fblock, Fpc, Fst."""

    full_state_update = False

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_state("confusion", torch.zeros(NUM_CLASSES, NUM_CLASSES), dist_reduce_fx="sum")

    def update(self, probs: Tensor, target: Tensor) -> None:
        """probs: B x 9 probabilities; target: B x 9 multi-hot."""
        pred = probs.argmax(1)
        hit = target.gather(1, pred[:, None]).squeeze(1) > 0.5
        rank = _CPSC_RANK.to(target.device).expand_as(target)
        # Row of a miss: the true label with the lowest CPSC code (records with no label: pred).
        masked_rank = torch.where(target > 0.5, rank, torch.full_like(rank, 99))
        first = masked_rank.argmin(1)
        first = torch.where(target.sum(1) > 0, first, pred)
        row = torch.where(hit, pred, first)
        flat = row * NUM_CLASSES + pred
        self.confusion += torch.bincount(flat, minlength=NUM_CLASSES**2).reshape(
            NUM_CLASSES, NUM_CLASSES).to(self.confusion.dtype)

    def compute(self) -> dict[str, Tensor]:
        a = self.confusion
        diag, rows, cols = a.diagonal(), a.sum(1), a.sum(0)
        f1 = 2 * diag / (rows + cols).clamp(min=1e-12)
        out = {"cpsc_f1": f1.mean()}
        for name, members in CPSC_SCORER_GROUPS.items():
            idx = torch.tensor([CLASS_INDEX[m] for m in members], device=a.device)
            out[f"cpsc_{name}"] = 2 * diag[idx].sum() / (rows[idx].sum() + cols[idx].sum()).clamp(
                min=1e-12)
        return out


class MacroAUROC(Metric):
    """Macro AUROC over the classes that have both positives and negatives in the data seen
    (a small validation split may lack a rare class; counting it as 0 would mislead)."""

    full_state_update = False

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_state("probs", [], dist_reduce_fx="cat")
        self.add_state("target", [], dist_reduce_fx="cat")

    def update(self, probs: Tensor, target: Tensor) -> None:
        self.probs.append(probs.float())
        self.target.append(target.int())

    def compute(self) -> Tensor:
        probs, target = dim_zero_cat(self.probs), dim_zero_cat(self.target)
        per_class = multilabel_auroc(probs, target, NUM_CLASSES, average="none")
        pos = target.sum(0)
        valid = (pos > 0) & (pos < target.shape[0])
        return per_class[valid].mean() if valid.any() else torch.tensor(float("nan"))


class ECGMetrics(nn.Module):
    """All metrics of one stage. ``update(probs, target)``; ``compute()`` gives a flat dict of
    floats-as-tensors: ``micro_f1``, ``macro_f1``, ``f1_<class>``, ``subset_acc``,
    ``subset_acc_multi``, ``subset_acc_single``, ``auroc``, ``cpsc_f1``, ``cpsc_Faf`` ...

    ``thresholds`` (9,) turn probabilities into labels; the AUROC and CPSC scorer use the
    probabilities themselves. ``sync_on_compute`` (torchmetrics'): reduce the states across
    processes in ``compute``; off for rows already gathered from every process.
    """

    def __init__(self, with_auroc: bool = True, sync_on_compute: bool = True):
        super().__init__()
        kw = {"sync_on_compute": sync_on_compute}
        label_metrics = {
            "micro_f1": MultilabelF1Score(NUM_CLASSES, average="micro", **kw),
            "macro_f1": MultilabelF1Score(NUM_CLASSES, average="macro", **kw),
            "subset_acc": MultilabelExactMatch(NUM_CLASSES, **kw),
            "subset_acc_multi": SubsetAccuracy("multi", **kw),
            "subset_acc_single": SubsetAccuracy("single", **kw),
        }
        self.labels = MetricCollection(label_metrics)
        self.per_class = MultilabelF1Score(NUM_CLASSES, average="none", **kw)
        self.cpsc = CPSCScore(**kw)
        # AUROC keeps every probability until compute: skip it where that is wasteful (train).
        self.auroc = MacroAUROC(**kw) if with_auroc else None

    def update(self, probs: Tensor, target: Tensor, thresholds: Tensor | float = 0.5) -> None:
        """probs: B x 9 in [0, 1]; target: B x 9 multi-hot; thresholds: scalar or (9,)."""
        target_i = target.round().int()
        preds = (probs >= thresholds).int()
        self.labels.update(preds, target_i)
        self.per_class.update(preds, target_i)
        self.cpsc.update(probs, target_i)
        if self.auroc is not None:
            self.auroc.update(probs, target_i)

    def compute(self) -> dict[str, Tensor]:
        out = dict(self.labels.compute())
        for name, value in zip(CLASSES, self.per_class.compute()):
            out[f"f1_{name}"] = value
        out.update(self.cpsc.compute())
        if self.auroc is not None:
            out["auroc"] = self.auroc.compute()
        return out

    def reset(self) -> None:
        self.labels.reset()
        self.per_class.reset()
        self.cpsc.reset()
        if self.auroc is not None:
            self.auroc.reset()


def tune_thresholds(probs: Tensor, target: Tensor, grid: Tensor | None = None) -> Tensor:
    """Per-class thresholds (9,) maximising each class's F1 on (validation) ``probs`` B x 9.

    Where a range of thresholds reaches the best F1 (a class the validation split separates),
    the middle of the first such range: the largest margin to both sides, where the lowest
    threshold of the range would sit just above the negatives. (Taking the lowest put
    thresholds at 0.05-0.2 after long training on synthetic data, and real records then got
    about two labels each: experiments/sim2real.md.) Classes without positives keep 0.5:
    nothing to tune them on.
    """
    grid = torch.linspace(0.05, 0.95, 91) if grid is None else grid
    p = probs[:, :, None] >= grid[None, None, :].to(probs)  # B x 9 x G
    t = (target > 0.5)[:, :, None]
    tp = (p & t).sum(0).float()
    fp = (p & ~t).sum(0).float()
    fn = (~p & t).sum(0).float()
    f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    at_best = f1 >= f1.max(1, keepdim=True).values  # 9 x G
    first = at_best.float().argmax(1)
    steps = torch.arange(len(grid), device=f1.device)
    past = ~at_best & (steps[None, :] > first[:, None])  # below the best again, after the first
    end = torch.where(past.any(1), past.float().argmax(1), torch.full_like(first, len(grid)))
    best = grid.to(probs)[(first + end - 1) // 2]
    has_pos = t.squeeze(2).any(0)
    return torch.where(has_pos, best, torch.full_like(best, 0.5))


def interval_report(probs: Tensor, target: Tensor, thresholds: Tensor | float = 0.5,
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                    level: float = 0.95) -> dict:
    """What metrics.json keeps beside a stage's metrics: ``{"level", "resamples", "seed",
    "records", "records_multi", "records_single", METRIC: [low, high], ...}`` from ``probs`` and
    ``target`` (``R x 9``, one row per record) labelled at ``thresholds`` as
    :meth:`ECGMetrics.update` labels them. ``records_multi`` and ``records_single``: how many
    records the multilabel and single-label subset accuracies rest on."""
    pred = (probs.float() >= torch.as_tensor(thresholds, device=probs.device)).cpu().numpy()
    labels = (target > 0.5).sum(1)
    intervals = bootstrap_intervals(target.cpu().numpy(), pred, resamples, seed, level)
    return {"level": level, "resamples": resamples, "seed": seed, "records": len(probs),
            "records_multi": int((labels >= 2).sum()), "records_single": int((labels == 1).sum()),
            **{m: [low, high] for m, (_, low, high) in intervals.items()}}
