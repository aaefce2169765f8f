"""Loader speed: training windows per second per worker from ``CPSCDataModule``.

    python tests/benchmarks/bench_loader.py                  # temporary store of random records
    python tests/benchmarks/bench_loader.py --store data/cpsc2018 --workers 0 2 4

Prints the wall-clock rate and the rate per CPU-second of a loading process (this process with
``num_workers=0``, else the workers): on a busy machine the second is what one worker with a core
to itself would deliver. Target: at least 10,000 windows/s per worker (2,880-sample windows,
batch 256).
"""

from __future__ import annotations

import argparse
import gc
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from xecg.classes import NUM_CLASSES, NUM_LEADS
from xecg.data.datamodule import CPSCDataModule
from xecg.data.record import Record
from xecg.data.store import StoreWriter


def make_random_store(out: Path, n: int, seed: int = 0, fs: float = 500.0) -> None:
    """``n`` random records, lengths log-normal around 12 s (clipped to 6-60 s), one label each."""
    rng = np.random.default_rng(seed)
    seconds = np.clip(rng.lognormal(np.log(12.0), 0.4, n), 6.0, 60.0)
    with StoreWriter(out, fs=fs, source="bench_loader random") as w:
        for i, s in enumerate(seconds):
            labels = np.zeros(NUM_CLASSES, np.float32)
            labels[rng.integers(NUM_CLASSES)] = 1.0
            signal = rng.standard_normal((NUM_LEADS, int(s * fs)), dtype=np.float32)
            w.add(Record(id=f"R{i:05d}", signal=signal, fs=fs, labels=labels))


def measure(dm: CPSCDataModule, epochs: int) -> tuple[int, float, float]:
    """Windows loaded in ``epochs`` training epochs, wall seconds, and CPU seconds of the loading
    processes (the workers, or this process when there are none), after one warm-up batch."""
    loader = dm.train_dataloader()
    next(iter(loader))  # starts the workers and maps the store
    own, children = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    windows, start = 0, time.perf_counter()
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            windows += batch["x"].shape[0]
    wall = time.perf_counter() - start
    own = time.process_time() - own
    del batch, loader  # joins the workers, so their CPU time is counted below
    gc.collect()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return windows, wall, worker_cpu if dm.num_workers else own


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, default=None, help="a prepared store (default: random)")
    p.add_argument("--n", type=int, default=2000, help="records in the random store")
    p.add_argument("--length", type=int, default=2880)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            store = Path(tmp) / "store"
            t = time.perf_counter()
            make_random_store(store, args.n)
            print(f"random store of {args.n} records written in {time.perf_counter() - t:.1f} s")
        for workers in args.workers:
            dm = CPSCDataModule(str(store), policy="crop", length=args.length,
                                batch_size=args.batch_size, num_workers=workers, seed=0)
            dm.setup()
            windows, wall, cpu = measure(dm, args.epochs)
            print(f"num_workers={workers}: {windows / wall:,.0f} windows/s wall clock, "
                  f"{windows / cpu:,.0f} per CPU-second of a loading process "
                  f"({windows} {args.length}-sample windows, batch {args.batch_size}, "
                  f"{args.epochs} epochs of {len(dm.indices['train'])} records)")

if __name__ == "__main__":
    main()
