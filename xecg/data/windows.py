"""Window geometry shared by training, evaluation and ``xecg predict``: where a record's
windows begin under each length policy (``pad``, ``crop``, ``bucket``), which of a window's
samples the record fills, a window cut and normalised, and a record's window outputs combined
(mean, max, or per class as ``episodic``)."""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch

from xecg.classes import CLASS_INDEX, EPISODIC, NUM_CLASSES

#: How records become windows (:mod:`xecg.data.datamodule` describes each).
Policy = Literal["pad", "crop", "bucket"]
POLICIES: tuple[str, ...] = get_args(Policy)
#: How a record's windows make its probabilities (:func:`aggregate_by_group`).
Aggregation = Literal["mean", "max", "episodic"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)


def average_by_group(values: torch.Tensor, group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Per-group mean of ``values`` (``W x ...``) by ``group`` ids (W,): ``num_groups x ...``."""
    total = values.new_zeros((num_groups, *values.shape[1:])).index_add_(0, group, values)
    count = torch.bincount(group, minlength=num_groups).to(values.dtype)
    return total / count.clamp(min=1).view(-1, *([1] * (values.dim() - 1)))


def aggregate_by_group(values: torch.Tensor, group: torch.Tensor, num_groups: int,
                       how: str = "mean") -> torch.Tensor:
    """Per-group ``mean`` or ``max`` of ``values`` (``W x ...``) by ``group`` ids (W,):
    ``num_groups x ...``. ``max`` keeps a record's strongest window: a rare beat (one PAC in 30 s)
    shows in one window and is diluted by the mean. ``episodic`` (``values`` ``W x 9``, one column
    per class): the max for the classes one beat makes (:data:`xecg.classes.EPISODIC`), the mean
    for the rest, which show throughout a record."""
    if how not in AGGREGATIONS:
        raise ValueError(f"window aggregation must be one of {AGGREGATIONS}, got {how!r}")
    if how == "mean":
        return average_by_group(values, group, num_groups)
    out = values.new_full((num_groups, *values.shape[1:]), float("-inf"))
    # scatter_reduce_ rather than index_reduce_, which warns that it is in beta on every call.
    index = group.view(-1, *([1] * (values.dim() - 1))).expand_as(values)
    out.scatter_reduce_(0, index, values, "amax", include_self=True)
    if how == "max":
        return out
    if values.shape[1:] != (NUM_CLASSES,):
        raise ValueError(f"episodic aggregation needs W x {NUM_CLASSES} class values, got "
                         f"{tuple(values.shape)}")
    mean = average_by_group(values, group, num_groups)
    cols = [CLASS_INDEX[c] for c in EPISODIC]
    mean[:, cols] = out[:, cols]
    return mean


def eval_windows(n: int, policy: Policy, length: int, bucket_multiple: int
                 ) -> tuple[np.ndarray, int]:
    """The evaluation windows of an ``n``-sample record: (first samples, window length T).

    ``pad``: one window at ``min(n - T, 0)`` (zeros first when shorter, its first T samples when
    longer); ``crop``: windows at 0, T, 2T, ... and one ending at the record's end, whose outputs
    are averaged; ``bucket``: the whole record, padded at the end to a multiple of
    ``bucket_multiple``. The test stage and ``xecg predict`` both use this, so they agree.
    """
    if policy == "bucket":
        return np.zeros(1, np.int64), int(-(-n // bucket_multiple) * bucket_multiple)
    if policy == "pad":
        return np.array([min(n - length, 0)], np.int64), length
    return np.r_[np.arange(0, n - length, length), n - length].astype(np.int64), length


def window_spans(starts: np.ndarray, n: np.ndarray, T: int) -> np.ndarray:
    """Windows of ``T`` samples that begin at ``starts`` (W,) in records of ``n`` (W,) samples:
    ``W x 2`` int64, the positions in each window that its record's samples fill (``[p, q)``;
    the record's samples ``[starts + p, starts + q)``)."""
    starts = np.asarray(starts, np.int64)
    p = np.clip(-starts, 0, T)
    return np.stack([p, np.maximum(np.clip(np.asarray(n) - starts, 0, T), p)], axis=1)


def fill_window(x: np.ndarray, mask: np.ndarray, block: np.ndarray, start: int,
                mean: np.ndarray, inv_std: np.ndarray, zeroed: bool = False,
                span: tuple[int, int] | None = None) -> None:
    """Write the window of ``block`` (``12 x n`` mV) that begins at sample ``start`` into
    ``x`` (``12 x T``, normalised: ``(block - mean) * inv_std``, zeros outside the record) and
    ``mask`` (``T``, True on the record's samples). ``mean``, ``inv_std``: ``12 x 1``.
    ``zeroed``: ``x`` and ``mask`` already hold zeros, so the padding is not written. ``span``:
    the window's row of :func:`window_spans`, when the caller has it for the whole batch."""
    if span is None:
        [span] = window_spans([start], [block.shape[1]], x.shape[1]).tolist()
    p, q = span
    normalise(block[:, start + p:start + q], mean, inv_std, x[:, p:q])
    if not zeroed:
        x[:, :p] = 0.0
        x[:, q:] = 0.0
        mask[:] = False
    mask[p:q] = True


def normalise(samples: np.ndarray, mean: np.ndarray, inv_std: np.ndarray,
              out: np.ndarray) -> None:
    """``out = (samples - mean) * inv_std``, ``12 x k`` each; ``mean``, ``inv_std``: ``12 x 1``."""
    np.subtract(samples, mean, out=out)
    out *= inv_std


def chunks(a: np.ndarray, size: int) -> list[np.ndarray]:
    return [a[i:i + size] for i in range(0, len(a), size)]
