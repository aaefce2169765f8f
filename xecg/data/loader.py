"""``ThreadLoader``: a DataModule's batches built by a pool of threads in the training process.

A DataLoader worker is a process: each batch it builds goes into a new shared-memory object
(its pages faulted in by the worker, and again by the main process that reads them), and with
``pin_memory`` the main process copies it once more into pinned memory. For a batch padded to
72,000 samples that receiving and copying is most of the main process's time: about 1 ms per
record in float32 on this project's CPU (README "Benchmarks", ``loader_transfer``), which would
cap a GPU's epoch near 1,000 records/s whatever the number of workers. Cutting windows is
NumPy slicing and arithmetic, which runs outside the GIL, so threads cut them as fast as
processes do, into memory that is reused (pinned memory from torch's caching host allocator
when ``pin_memory``, which also keeps a block until its copy to the device is done): nothing is
shared, faulted in twice or copied again.

The batches and their order are exactly those of a ``DataLoader`` over the same sampler (tests):
the plans come from the main thread, and batches are yielded in plan order.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler


class ThreadLoader:
    """Iterates ``dataset[plan]`` for each plan of ``sampler``, built by ``threads`` threads with
    up to ``prefetch`` batches a thread ahead of the consumer. ``sampler`` keeps its name (and
    ``set_epoch``) so that Lightning sets each epoch's shuffle as it does for a DataLoader.
    ``cuda_device``: the GPU the batches go to, made each thread's current device (as
    DataLoader's pinning thread does), so that pinning in a DDP rank's thread opens no CUDA
    context on GPU 0."""

    batch_sampler = None  # as a DataLoader with batch_size=None: Lightning looks for both

    def __init__(self, dataset: Dataset, sampler: Sampler, threads: int, prefetch: int = 2,
                 cuda_device: int | None = None):
        if threads < 1 or prefetch < 1:
            raise ValueError(f"threads and prefetch must be at least 1, got {threads}, "
                             f"{prefetch}")
        self.dataset, self.sampler = dataset, sampler
        self.threads, self.prefetch = threads, prefetch
        self.cuda_device = cuda_device

    def _start_thread(self) -> None:
        if self.cuda_device is not None:
            torch.cuda.set_device(self.cuda_device)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Any]:
        plans = iter(self.sampler)
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="xecg-loader",
                                  initializer=self._start_thread)
        pending: deque[Future] = deque(pool.submit(self.dataset.__getitem__, plan) for plan in
                                       itertools.islice(plans, self.threads * self.prefetch))
        try:
            while pending:
                batch = pending.popleft().result()  # a thread's error is raised here, as is
                if (plan := next(plans, None)) is not None:
                    pending.append(pool.submit(self.dataset.__getitem__, plan))
                yield batch
        finally:  # the epoch ended, failed or was left early: no thread outlives it
            pool.shutdown(wait=True, cancel_futures=True)
