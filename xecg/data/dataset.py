"""Batches built from plans: :class:`WindowDataset` turns a :class:`~xecg.data.batches.BatchPlan`
into the batch dict of :mod:`xecg.data.datamodule` (padded windows, or only the records'
samples for ``pad_on_device``, in float32 or a 16-bit type for ``half_transfer``), and
:func:`restore_batch` rebuilds the windows on the device."""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from xecg.classes import NUM_LEADS
from xecg.data.batches import BatchPlan
from xecg.data.store import Store
from xecg.data.windows import fill_window, normalise, window_spans

_NUMPY_DTYPES = {torch.float32: np.float32, torch.bool: np.bool_}


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
    """Turns a :class:`BatchPlan` into a batch dict (see :mod:`xecg.data.datamodule`),
    normalised per lead with ``mean``/``std`` (12,). Opens the store lazily, so workers map it
    themselves.
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
        if plan.repeat:  # records counted in another batch: run, not counted (BatchPlanner)
            batch["repeat"] = True
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
