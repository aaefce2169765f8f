"""Bootstrap intervals of the summary metrics over the evaluated records: the uncertainty that
a finite test set leaves, which a spread over seeds does not show. NumPy only, so that
``xecg compare`` needs no torch; :func:`xecg.metrics.interval_report` applies it to a stage's
probabilities."""

from __future__ import annotations

import numpy as np

#: The summary metrics :func:`bootstrap_intervals` gives an interval: the paper's and macro-F1,
#: each a function of per-record counts, so that resamples cost a matrix product.
BOOTSTRAP_METRICS = ("micro_f1", "macro_f1", "subset_acc", "subset_acc_multi",
                     "subset_acc_single")
BOOTSTRAP_RESAMPLES = 1000


def bootstrap_intervals(true: np.ndarray, pred: np.ndarray,
                        resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                        level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """Each of :data:`BOOTSTRAP_METRICS` with its percentile interval over records resampled with
    replacement: metric -> (estimate, low, high). ``true``, ``pred``: ``R x 9`` multi-hot.

    The estimates are :class:`xecg.metrics.ECGMetrics`' (tested): F1 = 2 TP / (2 TP + FP +
    FN), 0 for a class with none of the three, macro over all nine classes; subset accuracy
    over the records of a kind (a kind the records lack, such as multilabel records, gets no
    interval). The records are resampled as a whole, so a record's labels stay together, and
    in an order of their own (by labels and predictions): the same records in any order, such
    as the test stage's on one process or on several and ``xecg evaluate``'s, give the same
    intervals. NumPy rather than torchmetrics, whose objects would be made once per resample.
    """
    true, pred = np.asarray(true) > 0.5, np.asarray(pred) > 0.5
    bits = np.concatenate([true, pred], 1)
    order = np.argsort(bits @ (1 << np.arange(bits.shape[1], dtype=np.int64)), kind="stable")
    true, pred = true[order], pred[order]
    n = len(true)
    counts = np.stack([true & pred, ~true & pred, true & ~pred]).astype(np.float64)  # 3 x R x 9
    exact = (true == pred).all(1)
    labels = true.sum(1)
    kinds = {"subset_acc": np.ones(n, bool), "subset_acc_multi": labels >= 2,
             "subset_acc_single": labels == 1}

    def scores(weights: np.ndarray) -> dict[str, np.ndarray]:
        """The metrics of each row of ``weights`` (``K x R``: how often each record is drawn)."""
        tp, fp, fn = weights @ counts  # each K x 9
        per_class = 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12)
        micro_denominator = (2 * tp + fp + fn).sum(1)
        out = {"micro_f1": 2 * tp.sum(1) / np.maximum(micro_denominator, 1e-12),
               "macro_f1": per_class.mean(1)}
        for name, member in kinds.items():
            if member.any():
                out[name] = (weights @ (exact & member)) / np.maximum(weights @ member, 1)
        return out

    rng = np.random.default_rng(seed)
    draws = np.zeros((resamples, n))
    np.add.at(draws, (np.arange(resamples)[:, None], rng.integers(0, n, (resamples, n))), 1.0)
    point, boot = scores(np.ones((1, n))), scores(draws)
    tail = 100 * (1 - level) / 2
    return {m: (float(point[m][0]), float(np.percentile(boot[m], tail)),
                float(np.percentile(boot[m], 100 - tail))) for m in BOOTSTRAP_METRICS if m in point}

