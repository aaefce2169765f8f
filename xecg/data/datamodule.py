"""``CPSCDataModule``: batches of 12-lead windows from a prepared store and a split.

Length policies:

- ``pad``: every record zero-padded at the start to ``length`` (the paper: 72,000); a longer
  record keeps its first ``length`` samples.
- ``crop``: training takes one random ``length`` window per record and epoch; evaluation takes
  every non-overlapping window of the record (the last one aligned to its end) and the consumer
  averages the outputs per record with :func:`average_by_group`.
- ``bucket``: batches of records of similar length, padded at the end to the batch's longest
  length rounded up to ``bucket_multiple`` (``length`` is not used).

Records shorter than a window are zero-padded at the start (pad, crop). Every batch is a dict:
``index`` int64 ``B`` (store positions), ``x`` float32 ``W x 12 x T``, ``y`` float32 ``B x 9``,
``mask`` bool ``W x T`` (True on real samples), ``padded`` (a Python bool: whether any mask value
is False), and for crop evaluation ``group`` int64 ``W``
(the batch row of each window's record); otherwise W = B. Padding is 0 after normalisation.
With ``pad_on_device`` (the default on an accelerator) the loader sends only the records'
samples: ``x`` ``12 x N`` holds the windows' samples one window after another, ``spans`` int64
``W x 2`` where each window's samples go in its ``T`` (``length``) samples, and no ``mask``; the
DataModule's ``on_after_batch_transfer`` (:func:`restore_batch`) rebuilds ``x`` and ``mask`` on
the device, so the model sees the same batch either way. With ``half_transfer`` (the default
under 16-bit mixed precision on an accelerator) ``x`` travels as the 16-bit type that the
network's first convolution casts it to anyway, and is float32 again on the device: half the
bytes through shared memory, pinning and the host-device copy, and the same input to the
network.

All randomness (order, crop positions, buckets) is drawn in the main process from
``(seed, epoch)``, so batches do not depend on the number or timing of workers.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

import lightning as L
import numpy as np
import torch
from torch import distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from xecg.classes import CLASS_INDEX, EPISODIC, NUM_CLASSES, NUM_LEADS
from xecg.data.filters import check_band, filtered_store
from xecg.data.loader import ThreadLoader
from xecg.data.splits import (
    SPLITS,
    check_fold,
    default_seed,
    load_split,
    make_split,
    missing_records,
    save_split,
)
from xecg.data.store import Store, is_store
from xecg.data.synthetic import (
    DEFAULT_DISCORDANT_ST,
    DEFAULT_LEAD_GAINS,
    DEFAULT_NUISANCE,
    DEFAULT_ST_VARIETY,
    Realism,
)
from xecg.errors import ConfigError

Policy = Literal["pad", "crop", "bucket"]
#: ``bucket``'s length multiple on a CPU (4 x the network's pooling multiple of 243) and on an
#: accelerator (:attr:`CPSCDataModule.bucket_multiple` says why they differ).
BUCKET_MULTIPLE = 972
GPU_BUCKET_MULTIPLE = 9720
#: What builds batches when ``num_workers`` > 0: DataLoader worker processes, or threads of the
#: training process (:class:`~xecg.data.loader.ThreadLoader`).
WorkerKind = Literal["process", "thread"]
#: How a record's windows make its probabilities (:func:`aggregate_by_group`).
Aggregation = Literal["mean", "max", "episodic"]
POLICIES: tuple[str, ...] = get_args(Policy)
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
# Records per bucket chunk, in batches: sorting within shuffled chunks keeps batches random.
_BUCKET_CHUNK_BATCHES = 16
_NUMPY_DTYPES = {torch.float32: np.float32, torch.bool: np.bool_}
#: ``x``'s type in transit under each 16-bit precision (``half_transfer``): the type autocast
#: gives the first convolution's input, so rounding to it early changes nothing.
_TRANSFER_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}


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


@dataclass(frozen=True)
class SyntheticOptions:
    """How ``source: synthetic`` makes its store (:func:`xecg.data.synthetic.make_synthetic_store`):
    ``n`` records from generator ``seed``, durations drawn from ``durations`` seconds (None:
    CPSC-like), classes ``balanced`` or at CPSC's rates, with nuisance level ``nuisance``
    (``"v1"``: generator version 1, the default; ``"wide"``: version 3); ``st_variety`` varies
    normal ST/T (J-point elevation, T size and axis) and makes STE clearer (off by default);
    ``lead_gains`` ``"adult"`` gives normal adults' QRS amplitudes per lead (``"v1"``: version
    1's, the default); ``discordant_st`` adds the secondary ST shift of RBBB and PVC beats (off
    by default)."""

    n: int = 2000
    seed: int = 0
    durations: tuple[float, float] | None = None
    balanced: bool = False
    # Flat here so that configs say `data.synthetic.st_variety`; Realism holds the same fields.
    nuisance: str = DEFAULT_NUISANCE
    st_variety: bool = DEFAULT_ST_VARIETY
    lead_gains: str = DEFAULT_LEAD_GAINS
    discordant_st: bool = DEFAULT_DISCORDANT_ST

    @property
    def realism(self) -> Realism:
        """The realism options as the generator takes them (checked there)."""
        return Realism(**{f.name: getattr(self, f.name) for f in fields(Realism)})


@dataclass(frozen=True)
class BatchPlan:
    """What one batch holds: ``records`` (B,) store positions; ``rows`` and ``starts`` (W,) give
    each window's record row and first sample (negative: that many zeros precede the record);
    every window is ``length`` samples; ``grouped`` marks several windows per record."""

    records: np.ndarray
    rows: np.ndarray
    starts: np.ndarray
    length: int
    grouped: bool = False


class BatchPlanner(Sampler):
    """Yields this process's :class:`BatchPlan` s, one per batch; shuffled by ``(seed, epoch)``
    when ``train``. Lightning calls :meth:`set_epoch` before each epoch.

    Shards itself over ``num_replicas`` processes (default: torch.distributed's world size and
    rank when initialised, else one). Training: every process draws the same global plans from
    ``(seed, epoch)`` and takes batches ``rank, rank + R, ...`` of them, the list first padded to a
    multiple of R by repeating its first batches, so every process takes the same number of
    steps; under ``bucket`` the R batches of a step have similar lengths, so that no process
    waits long for another. Evaluation: records are dealt out ``rank, rank + R, ...`` before
    batching (by length for ``bucket``), so each goes to exactly one process (records repeat
    only when there are fewer than R) and batch counts differ by at most one.

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
            for records in _chunks(self._eval_records(), self.batch_size):
                yield self._plan(records, None)
            return
        rng = np.random.default_rng([self.seed, self.epoch])
        # Every process draws every batch's crops, so all hold the same global plan.
        plans = [self._plan(records, rng) for records in self._train_batches(rng)]
        total = math.ceil(len(plans) / self.num_replicas) * self.num_replicas
        for i in range(self.rank, total, self.num_replicas):
            yield plans[i % len(plans)]

    def _train_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        order = rng.permutation(self.indices)
        if self.policy != "bucket":
            return _chunks(order, self.batch_size)
        batches = []
        for chunk in _chunks(order, self.batch_size * _BUCKET_CHUNK_BATCHES):
            batches += _chunks(self._by_length(chunk), self.batch_size)
        R = self.num_replicas
        if R == 1:
            return [batches[i] for i in rng.permutation(len(batches))]
        # DDP waits for the slowest process at every step, so the R batches of a step (dealt
        # out rank, rank + R, ...) should be equal work: R batches of similar work make each
        # step, and the steps are shuffled. The least work is repeated to fill the last step
        # (instead of __iter__ repeating the first batches, whatever their length).
        m = self.bucket_multiple
        batches.sort(key=lambda b: len(b) * -(-int(self.lengths[b].max()) // m))
        missing = -len(batches) % R  # batches short of a whole last step
        steps = _chunks(batches[:missing] + batches, R)
        return [b for i in rng.permutation(len(steps)) for b in steps[i]]

    def _eval_records(self) -> np.ndarray:
        """This process's evaluation records, in order (by length for ``bucket``)."""
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


def numpy_bits(t: torch.Tensor) -> np.ndarray:
    """A NumPy view of a tensor; of a bfloat16 tensor, its bits as uint16 (NumPy has no
    bfloat16)."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def round_to_16bit(x: np.ndarray, out: np.ndarray) -> None:
    """Round float32 ``x`` to nearest even into ``out`` of the same shape: float16, or uint16
    holding bfloat16 bits (the upper half of the float32 bits), as torch's ``.to()`` rounds
    (tests). ``x`` (contiguous) is scratch: a bfloat16 rounding overwrites it, so that nothing
    is allocated. In NumPy, outside the GIL: a torch op called from a loader thread would start
    an intra-op thread team of its own beside the training's."""
    if out.dtype == np.float16:
        np.copyto(out, x, casting="same_kind")
        return
    bits = x.view(np.uint32)
    np.right_shift(bits, 16, out=out, casting="unsafe")
    out &= 1  # the last kept bit: a tie goes to the even neighbour
    bits += 0x7FFF
    bits += out
    np.right_shift(bits, 16, out=out, casting="unsafe")


def _chunks(a: np.ndarray, size: int) -> list[np.ndarray]:
    return [a[i:i + size] for i in range(0, len(a), size)]


def _batch_tensor(shape: tuple[int, ...], dtype: torch.dtype,
                  pin: bool = False) -> tuple[torch.Tensor, bool]:
    """A tensor for a batch, and whether it already holds zeros. With ``pin`` (a thread of
    :class:`~xecg.data.loader.ThreadLoader` feeding a GPU), pinned memory from torch's caching
    host allocator, reused batch after batch. Otherwise in the main process NumPy's
    uninitialised memory (huge pages: filling it is about twice as fast as torch.empty's); in a
    worker, a new shared-memory object, so passing the batch to the main process copies nothing
    (as torch's default_collate does). The kernel hands out new shared memory zero-filled, so
    the worker skips writing the padding: most of a batch padded to 72,000 samples.

    A fresh object per batch is what keeps this safe (the main process may hold a batch for as
    long as it likes); on a VM its page faults cost more than cutting the windows (README
    "Benchmarks"), which is why a CPU trains with ``num_workers=0``."""
    if get_worker_info() is None:
        if pin:
            return torch.empty(shape, dtype=dtype, pin_memory=True), False
        if dtype not in _NUMPY_DTYPES:  # a 16-bit x in transit: NumPy has no bfloat16
            return torch.empty(shape, dtype=dtype), False
        return torch.from_numpy(np.empty(shape, dtype=_NUMPY_DTYPES[dtype])), False
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape), True


class WindowDataset(Dataset):
    """Turns a :class:`BatchPlan` into a batch dict (see the module docstring), normalised per
    lead with ``mean``/``std`` (12,). Opens the store lazily, so workers map it themselves.
    ``pack``: batches of the records' samples only (``pad_on_device``; :func:`restore_batch`).
    ``x_dtype``: ``x``'s type in the batch (float32, or a 16-bit type for ``half_transfer``).
    ``pin``: build batches in pinned memory (threads of a ThreadLoader for a GPU). Safe to call
    from several threads at once."""

    def __init__(self, store: Store, mean: np.ndarray, std: np.ndarray, pack: bool = False,
                 x_dtype: torch.dtype = torch.float32, pin: bool = False):
        self.path = store.path
        self._store: Store | None = store
        self.pack = pack
        self.x_dtype = x_dtype
        self.pin = pin
        self._local = threading.local()  # per thread: float32 windows before a 16-bit x
        self.mean = np.asarray(mean, np.float32).reshape(NUM_LEADS, 1)
        self.inv_std = (1.0 / np.asarray(std, np.float32)).reshape(NUM_LEADS, 1)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.path)
        return self._store

    def __getstate__(self) -> dict:
        # A pickled memmap would carry the whole signal array; workers reopen the store instead.
        return {**self.__dict__, "_store": None, "_local": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _local=threading.local())

    def _scratch(self, size: int) -> np.ndarray:
        """This thread's float32 buffer of at least ``size`` values."""
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.size < size:
            buf = self._local.buf = np.empty(size, np.float32)
        return buf[:size]

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, plan: BatchPlan) -> dict[str, Any]:
        store = self.store
        store.check_mapped()  # a clear error, not SIGBUS, if the store was cut short meanwhile
        signals = np.asarray(store.signals)  # plain ndarray view: no memmap wrapping per slice
        offsets, lengths = store.offsets[plan.records], store.lengths[plan.records]
        spans = window_spans(plan.starts, lengths[plan.rows], plan.length)
        # each window's record, 12 x n (a view of the store)
        blocks = [signals[NUM_LEADS * o:NUM_LEADS * (o + n)].reshape(NUM_LEADS, n)
                  for o, n in zip(offsets[plan.rows].tolist(), lengths[plan.rows].tolist())]
        half = self.x_dtype != torch.float32
        build = self._packed if self.pack else self._padded
        batch = build(blocks, plan.starts.tolist(), spans.tolist(), plan.length, half)
        if self.pack:  # where restore_batch puts the samples back
            batch.update(spans=torch.from_numpy(spans), length=plan.length)
        # `index` first: Lightning infers the logged batch size from the first tensor (records).
        batch = {"index": torch.from_numpy(plan.records.astype(np.int64)), **batch,
                 "y": torch.from_numpy(store.labels[plan.records]),
                 # A host-side bool (not moved to the device): without padding the model skips
                 # the mask, decided here so that no step waits on the accelerator to find out.
                 "padded": bool((spans[:, 1] - spans[:, 0] < plan.length).any())}
        if plan.grouped:
            batch["group"] = torch.from_numpy(plan.rows.astype(np.int64))
        if self.pin:  # a copy from pageable memory may wait for the GPU's queue: pin them all
            batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) and not v.is_pinned()
                     else v for k, v in batch.items()}
        return batch

    def _padded(self, blocks: list[np.ndarray], starts: list[int], spans: list[list[int]],
                T: int, half: bool) -> dict[str, torch.Tensor]:
        """``x`` ``W x 12 x T`` and ``mask`` ``W x T``: each window whole, zeros around it."""
        x_t, zeroed = _batch_tensor((len(blocks), NUM_LEADS, T), self.x_dtype, self.pin)
        mask_t, mask_zeroed = _batch_tensor((len(blocks), T), torch.bool, self.pin)
        zeroed = zeroed and mask_zeroed
        x, mask = numpy_bits(x_t), mask_t.numpy()
        # A 16-bit x: each window is cut in float32 into this thread's buffer, then rounded.
        window = self._scratch(NUM_LEADS * T).reshape(NUM_LEADS, T) if half else None
        for w, (block, s, span) in enumerate(zip(blocks, starts, spans)):
            if half:
                fill_window(window, mask[w], block, s, self.mean, self.inv_std, span=span)
                round_to_16bit(window, x[w])
            else:
                fill_window(x[w], mask[w], block, s, self.mean, self.inv_std, zeroed, span)
        return {"x": x_t, "mask": mask_t}

    def _packed(self, blocks: list[np.ndarray], starts: list[int], spans: list[list[int]],
                T: int, half: bool) -> dict[str, Any]:
        """``x`` ``12 x N``: the windows' record samples one window after another (a batch
        padded to 72,000 samples is mostly zeros: sending only the samples spares building,
        copying and moving them)."""
        N = sum(q - p for p, q in spans)
        x_t, _ = _batch_tensor((NUM_LEADS, N), self.x_dtype, self.pin)
        x = numpy_bits(x_t)
        # A 16-bit x: the samples are normalised in float32 into this thread's buffer, then
        # rounded at once.
        out = self._scratch(NUM_LEADS * N).reshape(NUM_LEADS, N) if half else x
        col = 0
        for block, s, (p, q) in zip(blocks, starts, spans):
            normalise(block[:, s + p:s + q], self.mean, self.inv_std, out[:, col:col + q - p])
            col += q - p
        if half:
            round_to_16bit(out, x)
        return {"x": x_t}


def restore_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """Puts back what a loader left out for the transfer, on whatever device the batch is on:
    float32 for a 16-bit ``x`` (``half_transfer``), and the windows around a packing loader's
    samples (``pad_on_device``: ``x`` ``12 x N`` and ``spans``). ``x`` ``W x 12 x T`` and ``mask``
    ``W x T`` as the plain loader would give them."""
    x = batch["x"].float()  # a no-op for float32
    if "spans" in batch:
        spans, T = batch.pop("spans"), batch.pop("length")
        x, batch["mask"] = unpack_windows(x, spans, T)
    batch["x"] = x
    return batch


def unpack_windows(x: torch.Tensor, spans: torch.Tensor, T: int) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """Windows from a packing loader: ``x`` ``C x N`` (the windows' samples, one window after
    another) and ``spans`` int64 ``W x 2`` (where each window's samples go) -> ``x`` ``W x C x
    T`` with zeros elsewhere and ``mask`` ``W x T``. A few kernels on the batch's device, none of
    which makes the host wait for it (the output sizes are known on the host)."""
    begin, end = spans.unbind(1)
    counts = end - begin
    window = torch.repeat_interleave(counts, output_size=x.shape[1])  # N: each sample's window
    first = torch.cumsum(counts, 0) - counts  # where each window's samples begin in x
    t = torch.arange(x.shape[1], device=x.device) - first[window] + begin[window]
    out = x.new_zeros((spans.shape[0], x.shape[0], T))
    out[window, :, t] = x.t()
    positions = torch.arange(T, device=x.device)
    return out, (positions >= begin[:, None]) & (positions < end[:, None])


class CPSCDataModule(L.LightningDataModule):
    """Batches from a prepared store (``xecg prepare``) and a split (``xecg split``).

    ``source``: a dataset root, or ``synthetic``, to prepare ``store`` from when it is missing or
    out of date (``synthetic`` holds the generator's options); None uses ``store`` as it is.
    ``split``: a split JSON; if None, ``protocol`` (with ``split_seed``, ``folds``, ``fold``) makes
    one and keeps it at ``STORE/splits/``. ``seed`` drives shuffling and crops (default: the seed
    given to ``lightning.seed_everything``, else 0). Normalisation statistics come from the
    training split only and travel in checkpoints through :meth:`state_dict`. ``bandpass``
    ``[low, high]`` Hz: train and evaluate on a zero-phase band-passed copy of the store
    (:mod:`xecg.data.filters`); the checkpoint keeps the band for new records.
    ``worker_kind``: with ``num_workers`` > 0, DataLoader worker processes (``process``) or as
    many threads of this process (``thread``: batches built straight into pinned memory,
    nothing received or copied again; :mod:`xecg.data.loader`). The batches are the same.

    Distributed (Lightning DDP, any ``use_distributed_sampler``): ``batch_size`` is per process;
    each process trains on its share of one global plan drawn from ``(seed, epoch)`` (padded with
    repeated batches to equal step counts) and evaluates a disjoint share of the records, so
    torchmetrics' cross-process reduction counts every record once (see :class:`BatchPlanner`).
    """

    def __init__(self, store: str, split: str | None = None,
                 protocol: Literal["paper", "kfold"] = "paper", split_seed: int | None = None,
                 folds: int = 10, fold: int = 0, policy: Policy = "crop", length: int = 2880,
                 batch_size: int = 32, eval_batch_size: int | None = None,
                 num_workers: int | None = None, pin_memory: bool | None = None,
                 bucket_multiple: int | None = None, normalize: bool = True,
                 seed: int | None = None,
                 source: str | None = None, synthetic: SyntheticOptions | None = None,
                 pad_on_device: bool | None = None, half_transfer: bool | None = None,
                 bandpass: tuple[float, float] | None = None, worker_kind: WorkerKind = "process"):
        super().__init__()
        if policy not in POLICIES:
            raise ValueError(f"unknown length policy {policy!r}; choose one of {POLICIES}")
        if worker_kind not in get_args(WorkerKind):
            raise ValueError(f"unknown worker_kind {worker_kind!r}; choose one of "
                             f"{get_args(WorkerKind)}")
        for name, value in (("length", length), ("batch_size", batch_size),
                            ("bucket_multiple", 1 if bucket_multiple is None else bucket_multiple),
                            ("eval_batch_size", eval_batch_size or 1)):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if split is None and protocol == "kfold":  # here, not at the first fit's setup
            check_fold(folds, fold)
        self.save_hyperparameters()
        self.store_path = Path(store)
        if source not in (None, "synthetic") and is_store(source):
            self.store_path = Path(source)  # already prepared: train on it as it is
        self.split = split
        self.protocol, self.split_seed, self.folds, self.fold = protocol, split_seed, folds, fold
        self.policy, self.length, self._bucket_multiple = policy, length, bucket_multiple
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.worker_kind = worker_kind
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.pad_on_device = pad_on_device
        self.half_transfer = half_transfer
        self.normalize = normalize
        self.seed = seed
        self.source = source
        self.synthetic = synthetic or SyntheticOptions()
        self.bandpass = check_band(bandpass)
        self.store: Store | None = None  # what batches are cut from (band-passed if asked)
        self.raw_store: Store | None = None  # the records as recorded, at the same positions
        self._filtered: Path | None = None  # the band-passed copy, once prepare_data made it
        self.indices: dict[str, np.ndarray] = {}
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self._restored_stats = False

    # -- split and statistics ------------------------------------------------------------------

    @property
    def split_path(self) -> Path:
        """The split JSON in use: ``split`` or the one kept in the store's ``splits/`` folder."""
        if self.split is not None:
            return Path(self.split)
        seed = default_seed(self.protocol) if self.split_seed is None else self.split_seed
        name = (f"paper-{seed}" if self.protocol == "paper"
                else f"kfold-{seed}-fold{self.fold}of{self.folds}")
        return self.store_path / "splits" / f"{name}.json"

    def prepare_data(self) -> None:
        """Prepares the store from ``source`` (reused when current) and makes the split file if
        it is missing. Lightning runs this on one process only."""
        if self.source == "synthetic":
            from xecg.data.synthetic import make_synthetic_store

            opts = self.synthetic
            make_synthetic_store(self.store_path, n=opts.n, seed=opts.seed,
                                 durations=tuple(opts.durations) if opts.durations else None,
                                 balanced=opts.balanced, realism=opts.realism)
        elif self.source is not None:
            from xecg.data.prepare import load_or_prepare

            load_or_prepare(self.source, self.store_path)
        path = self.split_path
        if self.split is None and not path.exists():
            save_split(make_split(self.store_path, self.protocol, seed=self.split_seed,
                                  folds=self.folds, fold=self.fold), path)
        if self.bandpass is not None:
            self._filtered = filtered_store(self.store_path, self.bandpass)

    def setup(self, stage: str | None = None) -> None:
        """Opens the store, reads the split and computes the training split's lead statistics."""
        if self.trainer is not None:
            self._x_dtype()  # a bad half_transfer fails here, before a run has started anything
        if self.store is not None:
            return
        if not is_store(self.store_path) or not self.split_path.exists():
            self.prepare_data()  # used without a Trainer, which would have called it
        # The split names record ids, so it serves the band-passed copy as well (same ids).
        # prepare_data checked the copy in this process already (its full checksum); other
        # processes (DDP ranks beyond the first of a node) check it here.
        store = Store(self.store_path if self.bandpass is None
                      else self._filtered or filtered_store(self.store_path, self.bandpass))
        self.raw_store = store if self.bandpass is None else Store(self.store_path)
        split = load_split(self.split_path)
        known = set(store.ids)
        for name in SPLITS:
            missing = missing_records(self.split_path, name, split[name], known,
                                      f"store {self.store_path}")
            if missing:
                # xecg's own split file is remade by deleting it; a user's file is theirs.
                fix = ("delete the split file to make it again for this store" if self.split is None
                       else f"it was made for other data: make one for this store with `xecg "
                            f"split {self.store_path} --out FILE`, or leave out --data.split")
                raise ConfigError(f"{missing}; {fix}")
            self.indices[name] = store.indices(split[name])
        if not self._restored_stats:
            if self.normalize:
                self.mean, self.std = store.lead_stats(self.indices["train"])
            else:
                self.mean = np.zeros(NUM_LEADS, np.float32)
                self.std = np.ones(NUM_LEADS, np.float32)
        self.store = store

    def describe(self) -> dict[str, Any]:
        """The data protocol, to be reported beside every metric."""
        split = load_split(self.split_path)
        return {"store": str(self.store_path), "split": str(self.split_path),
                **{k: split.get(k) for k in ("protocol", "seed", "folds", "fold", "counts")},
                "policy": self.policy, "length": None if self.policy == "bucket" else self.length,
                "normalisation": "per lead, training split" if self.normalize else "none",
                "bandpass_hz": None if self.bandpass is None else list(self.bandpass)}

    def state_dict(self) -> dict[str, Any]:
        if self.mean is None:
            return {}
        return {"mean": self.mean.tolist(), "std": self.std.tolist(),
                "split": str(self.split_path)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the training statistics of a checkpoint (before or after :meth:`setup`)."""
        if "mean" in state_dict:
            self.mean = np.asarray(state_dict["mean"], dtype=np.float32)
            self.std = np.asarray(state_dict["std"], dtype=np.float32)
            self._restored_stats = True

    # -- loaders -------------------------------------------------------------------------------

    def _loader_seed(self) -> int:
        if self.seed is not None:
            return self.seed
        return int(os.environ.get("PL_GLOBAL_SEED", 0))  # set by lightning.seed_everything

    def _replica(self) -> tuple[int | None, int | None]:
        """(data-parallel processes, this one's rank): the trainer's when attached (it knows the
        data-parallel group of every strategy), else None (torch.distributed's)."""
        if self.trainer is None:
            return None, None
        kwargs = self.trainer.distributed_sampler_kwargs or {"num_replicas": 1, "rank": 0}
        return kwargs["num_replicas"], kwargs["rank"]

    def loader_settings(self) -> dict[str, Any]:
        """The loader as it runs: the values of ``num_workers``, ``pad_on_device``,
        ``half_transfer`` and ``bucket_multiple`` chosen for the machine where the config left
        them empty (README "Defaults that fit the hardware"); metrics.json keeps them under
        ``loader``."""
        return {"num_workers": self._workers(), "worker_kind": self.worker_kind,
                "pad_on_device": self._pack(),
                "half_transfer": self._x_dtype() != torch.float32,
                "bucket_multiple": self.bucket_multiple}

    @property
    def bucket_multiple(self) -> int:
        """``bucket_multiple``, or when None: :data:`GPU_BUCKET_MULTIPLE` on an accelerator,
        else :data:`BUCKET_MULTIPLE`. On a GPU every new batch shape costs a cold start
        (cuDNN's kernel choice, a compiled graph's size class): an eager bucketed Lightning
        step on an H100 took 38.7 ms with buckets of 9,720 (8 lengths over CPSC-like records)
        against 70 ms with 972 (74 lengths), so an epoch took 1.24 s against 2.24 s although it
        computes more padding. A CPU has no cold start to save and computes every padded
        sample: there the finer buckets are faster (README "Benchmarks")."""
        if self._bucket_multiple is not None:
            return self._bucket_multiple
        return GPU_BUCKET_MULTIPLE if self._on_accelerator() else BUCKET_MULTIPLE

    def _workers(self) -> int:
        """``num_workers``, or when None: 0 on a CPU (loader processes would compete with the
        training threads: README "Defaults that fit the hardware"), else up to 8 per process
        and no more than this process's share of the cores."""
        if self.num_workers is not None:
            return self.num_workers
        if not self._on_accelerator():
            return 0
        share = (os.cpu_count() or 1) // max(1, self.trainer.num_devices)
        return max(0, min(8, share - 1))

    def _pack(self) -> bool:
        """``pad_on_device``, or when None: on an accelerator. A batch padded to 72,000 samples is
        mostly zeros; building, copying and moving them made the loader the bottleneck of a
        padded epoch on an H100 (README "Benchmarks"); on a CPU there is no copy to save."""
        if self.pad_on_device is not None:
            return self.pad_on_device
        return self._on_accelerator()

    def _x_dtype(self) -> torch.dtype:
        """``x``'s type in transit: with ``half_transfer`` (when None: under a 16-bit mixed or
        true precision on an accelerator) the 16-bit type of the trainer's precision, which
        autocast rounds the first convolution's input to anyway (tests/test_models.py: outputs
        and gradients are the same); else float32. On the H100 of README "Benchmarks" the main
        process's copy of each batch into pinned memory was the likely bound of a padded
        epoch."""
        trainer = self.trainer
        precision = str(trainer.precision) if trainer is not None else "32-true"
        kind = precision.split("-")[0]
        half = self.half_transfer
        if half is None:
            half = kind in _TRANSFER_DTYPES and self._on_accelerator()
        if half and kind not in _TRANSFER_DTYPES:
            raise ConfigError(f"data.half_transfer needs a 16-bit precision (bf16-mixed, "
                              f"16-mixed, ...); trainer.precision is {precision!r}")
        return _TRANSFER_DTYPES[kind] if half else torch.float32

    def _on_accelerator(self) -> bool:
        """Whether an attached trainer runs on an accelerator (GPU, MPS, ...), not the CPU."""
        trainer = self.trainer
        return trainer is not None and trainer.accelerator.__class__.__name__ != "CPUAccelerator"

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Lightning calls this with each batch on the device: a packed batch's windows are
        rebuilt there (:func:`restore_batch`)."""
        return restore_batch(batch)

    def _loader(self, split: str, train: bool) -> DataLoader | ThreadLoader:
        if self.store is None:
            self.setup()
        num_replicas, rank = self._replica()
        if (num_replicas or 1) > 1 and self.trainer._accelerator_connector.use_distributed_sampler:
            raise ConfigError("CPSCDataModule shards its own batches across processes: create the "
                              "Trainer with use_distributed_sampler=False (xecg's CLI does)")
        planner = BatchPlanner(self.indices[split], self.store.lengths, self.policy, self.length,
                               self.batch_size if train else self.eval_batch_size, train=train,
                               seed=self._loader_seed(), bucket_multiple=self.bucket_multiple,
                               num_replicas=num_replicas, rank=rank)
        workers = self._workers()
        threads = self.worker_kind == "thread" and workers > 0
        # Threads build each batch where it is consumed: in pinned memory for a GPU, so there is
        # nothing to receive or copy again (xecg/data/loader.py).
        dataset = WindowDataset(self.store, self.mean, self.std, pack=self._pack(),
                                x_dtype=self._x_dtype(), pin=threads and self.pin_memory)
        if threads:
            device = self.trainer.strategy.root_device if self.trainer is not None else None
            cuda = device is not None and device.type == "cuda" and self.pin_memory
            return ThreadLoader(dataset, planner, threads=workers,
                                cuda_device=device.index if cuda else None)
        # batch_size=None: the planner yields whole batches and each worker builds one at a time.
        return DataLoader(dataset, batch_size=None, sampler=planner, num_workers=workers,
                          pin_memory=self.pin_memory, persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader | ThreadLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | ThreadLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader | ThreadLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader | ThreadLoader:
        return self._loader("test", train=False)
