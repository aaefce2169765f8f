"""Batch plans: which records, windows and length each batch holds (:class:`BatchPlan`), drawn
by :class:`BatchPlanner`, the DataLoader's sampler, from ``(seed, epoch)`` and sharded over
DDP processes with balanced work per step."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from torch import distributed as dist
from torch.utils.data import Sampler

from xecg.data.windows import chunks, eval_windows

#: ``bucket``'s length multiple on a CPU (4 x the network's pooling multiple of 243) and on an
#: accelerator (:attr:`~xecg.data.datamodule.CPSCDataModule.bucket_multiple` says why they differ).
BUCKET_MULTIPLE = 972
GPU_BUCKET_MULTIPLE = 9720
# Records per bucket chunk, in batches: sorting within shuffled chunks keeps batches random.
_BUCKET_CHUNK_BATCHES = 16


@dataclass(frozen=True)
class BatchPlan:
    """What one batch holds: ``records`` (B,) store positions; ``rows`` and ``starts`` (W,) give
    each window's record row and first sample (negative: that many zeros precede the record);
    every window is ``length`` samples; ``grouped`` marks several windows per record;
    ``repeat`` marks a batch that repeats records so that every process runs as many steps
    (training: a batch dealt out twice; evaluation: another process's record, where a split
    has fewer records than processes), whose rows the metrics must not count."""

    records: np.ndarray
    rows: np.ndarray
    starts: np.ndarray
    length: int
    grouped: bool = False
    repeat: bool = False


class BatchPlanner(Sampler):
    """Yields this process's :class:`BatchPlan` s, one per batch; shuffled by ``(seed, epoch)``
    when ``train``. Lightning calls :meth:`set_epoch` before each epoch.

    Shards itself over ``num_replicas`` processes (default: torch.distributed's world size and
    rank when initialised, else one). Training: every process draws the same global plans from
    ``(seed, epoch)`` and takes batches ``rank, rank + R, ...`` of them, the list first padded to a
    multiple of R by repeating its first batches (marked ``repeat``: trained on, not counted in
    the training metrics), so every process takes the same number of steps; under ``bucket``
    the R batches of a step have similar lengths (the least work repeated), so that no process
    waits long for another. Evaluation: records are dealt out ``rank, rank + R, ...`` before
    batching (by length for ``bucket``), so each goes to exactly one process and batch counts
    differ by at most one. With fewer records than R, every process still needs a batch (each
    runs the epoch's collectives): processes ``N, ..., R - 1`` get a copy of a record, in a plan
    marked ``repeat``, which ``XECGModule`` runs but does not count.

    The Trainer must run with ``use_distributed_sampler=False`` (xecg's CLI sets it): otherwise
    Lightning wraps this sampler in a ``DistributedSamplerWrapper`` that shards plans its own
    way. Lightning still calls :meth:`set_epoch` on it before each epoch.
    """

    def __init__(self, indices: np.ndarray, lengths: np.ndarray, policy: str, length: int,
                 batch_size: int, train: bool, seed: int = 0,
                 bucket_multiple: int = BUCKET_MULTIPLE,
                 num_replicas: int | None = None, rank: int | None = None):
        super().__init__()
        self.indices = np.sort(np.asarray(indices, dtype=np.int64))
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.policy, self.length, self.batch_size = policy, length, batch_size
        self.train, self.seed, self.bucket_multiple = train, seed, bucket_multiple
        self.epoch = 0
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas}) processes")
        self.num_replicas, self.rank = int(num_replicas), int(rank)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.train:
            return math.ceil(math.ceil(len(self.indices) / self.batch_size) / self.num_replicas)
        return math.ceil(len(self._eval_records()) / self.batch_size)

    def __iter__(self):
        if not self.train:
            repeat = 0 < len(self.indices) <= self.rank  # a copy: see _eval_records
            for records in chunks(self._eval_records(), self.batch_size):
                yield replace(self._plan(records, None), repeat=repeat)
            return
        rng = np.random.default_rng([self.seed, self.epoch])
        # Every process draws every batch's crops, so all hold the same global plan.
        plans = [replace(self._plan(records, rng), repeat=repeat)
                 for records, repeat in self._train_batches(rng)]
        total = math.ceil(len(plans) / self.num_replicas) * self.num_replicas
        for i in range(self.rank, total, self.num_replicas):
            yield plans[i] if i < len(plans) else replace(plans[i % len(plans)], repeat=True)

    def _train_batches(self, rng: np.random.Generator) -> list[tuple[np.ndarray, bool]]:
        """The epoch's global batches in order, each with whether it repeats another's."""
        order = rng.permutation(self.indices)
        if self.policy != "bucket":
            return [(b, False) for b in chunks(order, self.batch_size)]
        batches = []
        for chunk in chunks(order, self.batch_size * _BUCKET_CHUNK_BATCHES):
            batches += chunks(self._by_length(chunk), self.batch_size)
        R = self.num_replicas
        if R == 1:
            return [(batches[i], False) for i in rng.permutation(len(batches))]
        # DDP waits for the slowest process at every step, so the R batches of a step (dealt
        # out rank, rank + R, ...) should be equal work: R batches of similar work make each
        # step, and the steps are shuffled. The least work is repeated to fill the last step
        # (instead of __iter__ repeating the first batches, whatever their length).
        m = self.bucket_multiple
        batches.sort(key=lambda b: len(b) * -(-int(self.lengths[b].max()) // m))
        missing = -len(batches) % R  # batches short of a whole last step
        steps = chunks([(b, True) for b in batches[:missing]] + [(b, False) for b in batches], R)
        return [b for i in rng.permutation(len(steps)) for b in steps[i]]

    def _eval_records(self) -> np.ndarray:
        """This process's evaluation records, in order (by length for ``bucket``); with fewer
        records (N) than processes, those of rank N and above hold a copy of one."""
        order = self._by_length(self.indices) if self.policy == "bucket" else self.indices
        if 0 < len(order) < self.num_replicas:
            order = np.resize(order, self.num_replicas)  # every process needs a batch
        return order[self.rank::self.num_replicas]

    def _by_length(self, records: np.ndarray) -> np.ndarray:
        return records[np.argsort(self.lengths[records], kind="stable")]

    def _plan(self, records: np.ndarray, rng: np.random.Generator | None) -> BatchPlan:
        n = self.lengths[records]
        rows = np.arange(len(records))
        if rng is None and self.policy != "bucket":  # evaluation: the windows of each record
            per_record = [eval_windows(k, self.policy, self.length, self.bucket_multiple)[0]
                          for k in n.tolist()]
            rows = np.repeat(rows, [len(s) for s in per_record])
            return BatchPlan(records, rows, np.concatenate(per_record), self.length,
                             grouped=self.policy == "crop")
        if self.policy == "bucket":
            m = self.bucket_multiple
            return BatchPlan(records, rows, np.zeros_like(n), int(-(-n.max() // m) * m))
        L_ = self.length
        if self.policy == "pad":
            return BatchPlan(records, rows, np.minimum(n - L_, 0), L_)
        # crop, training: one random window (start padded if too short)
        starts = rng.integers(0, np.maximum(n - L_, 0) + 1) + np.minimum(n - L_, 0)
        return BatchPlan(records, rows, starts, L_)


def step_balance(shards: list[list[BatchPlan]]) -> float:
    """How evenly the processes' shards (each a list of :class:`BatchPlan`, step by step) share
    the work of each step: the sum over steps of the mean samples a process computes (windows x
    length) over the sum of the most any computes. DDP's efficiency when a step takes time in
    proportion to its samples, as each waits for the slowest; 1.0 is even."""
    work = np.array([[len(p.rows) * p.length for p in step] for step in zip(*shards)], float)
    return float(work.mean(axis=1).sum() / work.max(axis=1).sum())
