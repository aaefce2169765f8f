"""xecg's benchmarks, side by side in one run: ``make bench`` (CPU) and ``make bench-gpu``.

    python tests/benchmarks/bench.py                   # CPU: every comparison (~30 min on 2 cores)
    python tests/benchmarks/bench.py --quick           # a minute's smoke run of the same code
    python tests/benchmarks/bench.py --gpu             # on a CUDA machine: the paper's lengths
    python tests/benchmarks/bench.py --only lightning_overhead --rounds 5 --merge
    python tests/benchmarks/bench.py --only lightning_vs_plain --baseline ../other-checkout

Comparisons (keys of ``benchmarks/results.json``; ``--gpu`` writes ``results-gpu.json``):

- ``lightning_vs_plain``: training steps/s of ``Trainer.fit`` on :class:`XECGModule` as ``make
  train`` configures it (smoke.yaml: XECGNet width 0.25, XECGLoss gamma 0.01, lr 0.002, cosine,
  tuned thresholds; training metrics, CSV logging every 10 steps, progress bar and learning-rate
  monitor on) against a plain PyTorch loop over the same module, loader and optimiser (forward,
  loss, backward, Adam). Batch 32, 2,880-sample crops; warm-up steps excluded; epoch ends included.
  ``--gpu`` adds ``lightning_vs_plain_paper``: width 1.0, padded to 72,000, bf16.
- ``lightning_overhead``: the same with the smallest XECGNet (width 0.0625) on 972-sample crops,
  where Lightning's and the module's per-step work is a large part of a step: the overhead in
  milliseconds, measurable on a busy machine where 2% of a width-0.25 step is not.
- ``bucket_vs_pad``: training epochs of ``Trainer.fit`` with ``policy: bucket`` against ``policy:
  pad`` over CPSC-like lengths (:func:`xecg.data.synthetic.sample_duration`, or the lengths of
  ``--store``). On a CPU every length is divided by ``--scale`` (10), the pad length 72,000 and
  the bucket multiple 972 included: records of 300-3,000 samples padded to 7,200, buckets rounded
  up to 97 (:func:`bucket_multiple`; ``--bucket-multiple`` sets another).
  Both the first epoch (every shape new) and the second are timed. ``validation`` trains both for
  a few epochs on synthetic ECGs at 500/scale Hz and compares their validation metrics.
  ``--gpu``: full scale, 5,225 records, bf16; ``--only bucket_vs_pad_compiled`` the same with
  ``compile: true`` (buckets rounded up to 9,720 samples, so that inductor chooses kernels for a
  few shapes; ``compiled_graphs`` says how many graphs it made).
- ``loader``: windows/s of the training loader (2,880-sample crops, batch 256) per worker count,
  wall clock and per CPU-second of a loading process.
- ``prepare``: ``xecg prepare`` against a plain ``wfdb.rdrecord`` loop over the same real WFDB
  records (``../shared/data/cpsc2018-wfdb-sample``; skipped when absent).

Every case runs in a fresh subprocess (so each reports its own peak memory: ``ru_maxrss`` of the
process and of its largest child, and on a GPU ``torch.cuda.max_memory_allocated``); contenders
alternate round by round (``--rounds``) and the table reports medians. Training cases also
report CPU time and the median step: on a busy machine (the load average is saved) the wall
clock of a whole run varies by tens of percent, the CPU time of a one-thread step by a few.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("XECG_SHARED_DATA", ROOT.parent / "shared" / "data"))
PAPER_LENGTH = 72_000
PAPER_TRAIN_RECORDS = 5_225
RESULT_TAG = "BENCH-RESULT "


# ============================================================================ stores

def cpsc_lengths(n: int, seed: int = 0, fs: float = 500.0, scale: int = 1,
                 store: Path | None = None) -> np.ndarray:
    """``n`` CPSC-like record lengths in samples, divided by ``scale``: drawn like the synthetic
    store's (:func:`~xecg.data.synthetic.sample_duration`), or the first ``n`` of ``store``."""
    if store is not None:
        from xecg.data.store import Store

        lengths = Store(store).lengths
        lengths = np.resize(lengths, n) if n > len(lengths) else lengths[:n]
    else:
        from xecg.data.synthetic import sample_duration

        rng = np.random.default_rng(seed)
        lengths = np.array([round(sample_duration(rng) * fs) for _ in range(n)], np.int64)
    return np.maximum(lengths // scale, 1).astype(np.int64)


def random_store(out: Path, lengths: np.ndarray, seed: int = 0, fs: float = 500.0) -> Path:
    """A store of random-noise records of the given lengths, one random label each, and a split
    file ``out/all-train.json`` with every record in training (speed does not depend on the
    content)."""
    from xecg.classes import NUM_CLASSES, NUM_LEADS
    from xecg.data.record import Record
    from xecg.data.splits import save_split
    from xecg.data.store import StoreWriter

    rng = np.random.default_rng(seed)
    ids = []
    with StoreWriter(out, fs=fs, source="bench random") as w:
        for i, n in enumerate(lengths.tolist()):
            labels = np.zeros(NUM_CLASSES, np.float32)
            labels[rng.integers(NUM_CLASSES)] = 1.0
            signal = rng.standard_normal((NUM_LEADS, n), dtype=np.float32)
            ids.append(f"R{i:05d}")
            w.add(Record(id=ids[-1], signal=signal, fs=fs, labels=labels))
    save_split({"train": ids, "val": [], "test": []}, out / "all-train.json")
    return out


# ============================================================================ cases (children)

def device_kernels(events: list) -> list:
    """The rows of a profile (``key_averages()``) that are kernels and copies on the device. The
    op that launched a kernel reports the kernel's time as its own too: summed over every row,
    device time came out twice (StepProfile's, until 2026-11-27; the op table's total was
    right)."""
    import torch

    return [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


@contextlib.contextmanager
def cudnn_enabled(on: bool):
    """``torch.backends.cudnn.enabled`` set to ``on`` inside, restored after (read by each
    convolution and norm as it runs). Not ``torch.backends.cudnn.flags(enabled=...)``: that
    also sets ``allow_tf32`` back to True, which would spoil the float32 checks."""
    import torch

    was = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = on
    try:
        yield
    finally:
        torch.backends.cudnn.enabled = was


def train_step(net, loss_fn, opt, device: str, bf16: bool):
    """A plain loop's training step: ``step(x, y, mask) -> loss`` runs ``net`` and ``loss_fn``
    (under bf16 autocast when ``bf16``), backward and ``opt``. The one step of the plain
    contenders here and of ``compile_lengths.py``."""
    import torch

    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)

    def step(x, y, mask=None):
        with autocast:
            loss = loss_fn(net(x, mask), y).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def _peak_memory(device: str) -> dict[str, float]:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "peak_rss_child_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    if device == "cuda":
        import torch

        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _module(c: dict):
    from xecg.losses import XECGLoss
    from xecg.models import XECGNet
    from xecg.module import XECGModule

    kwargs = {"compile": True, "compile_mode": c.get("compile_mode", "default")} \
        if c.get("compile") else {}
    # As smoke.yaml (`make train`) configures it.
    return XECGModule(XECGNet(width=c["width"]), XECGLoss(gamma=0.01), lr=0.002,
                      scheduler="cosine", tune_thresholds=True,
                      mask_padding=c.get("mask_padding", True), **kwargs)


def _datamodule(c: dict, split: str | None):
    from xecg.data.datamodule import CPSCDataModule

    dm = CPSCDataModule(c["store"], split=split, policy=c["policy"], length=c["length"],
                        batch_size=c["batch"], num_workers=c["workers"],
                        bucket_multiple=c.get("bucket_multiple", 972), seed=0,
                        pad_on_device=c["device"] != "cpu",  # the CLI's default per device
                        half_transfer=c.get("half_transfer"),
                        worker_kind=c.get("worker_kind", "process"))
    dm.setup()
    return dm


def _attach_trainer(dm, c: dict, module=None) -> None:
    """The plain loop's DataModule (and ``module``) decide as under Lightning (``half_transfer``
    and the optimiser follow the trainer's precision and accelerator, the schedule its epochs):
    a Trainer that is never run."""
    import lightning as L

    trainer = L.Trainer(accelerator=c["device"], devices=1, precision=c["precision"],
                        max_epochs=c.get("epochs"), logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    dm.trainer = trainer
    if module is not None:
        module.trainer = trainer


#: What torch's sync debug mode warns, at every op that makes the host wait for the device.
SYNC_WARNING = "called a synchronizing CUDA operation"


class SyncSites:
    """Where the host waits for the device: while open, torch's CUDA sync debug mode warns at
    every synchronising op (``.item()``, a blocking copy to the host, ``nonzero``, ...), and each
    warning's Python stack is kept. ``report()``: how many, and where, by the innermost frame
    and by the innermost frame of xecg's or this benchmark's own code. On a CPU nothing waits
    and the mode does not exist: it records warnings only (which is how it is tested).

    Why: a compiled padded step on an H100 takes 33-36 ms where its kernels take 30 and the
    host 22-25, so the device idles 3-6 ms a step; a step that never waits for the device would
    not let it (benchmarks/README.md)."""

    def __init__(self, device: str) -> None:
        self.device, self.stacks, self._saved = device, [], None

    def open(self) -> None:
        import traceback
        import warnings

        def record(message, category, filename, lineno, file=None, line=None) -> None:
            if SYNC_WARNING in str(message):  # the stack up to the op, without warnings'
                stack = traceback.extract_stack()[:-1]  # not this function
                while stack and stack[-1].filename == warnings.__file__:
                    stack.pop()
                self.stacks.append(stack)
            else:
                shown(message, category, filename, lineno, file, line)

        shown = warnings.showwarning
        self._saved = warnings.catch_warnings()  # restores the filters and showwarning
        self._saved.__enter__()
        warnings.filterwarnings("always", message=f".*{SYNC_WARNING}")
        warnings.showwarning = record
        if self.device == "cuda":
            import torch

            torch.cuda.set_sync_debug_mode("warn")

    def close(self) -> None:
        if self._saved is None:
            return
        if self.device == "cuda":
            import torch

            torch.cuda.set_sync_debug_mode("default")
        self._saved.__exit__(None, None, None)
        self._saved = None

    def report(self, steps: int, most: int = 12) -> dict:
        """``syncs_per_step`` and the ``most`` commonest sites, ``FILE:LINE FUNCTION`` of the
        innermost frame and (``ours``) of the innermost frame in xecg or tests/benchmarks."""
        sites: dict[str, int] = {}
        for stack in self.stacks:
            inner = stack[-1]
            own = next((f for f in reversed(stack)
                        if "/xecg/" in f.filename or "/benchmarks/" in f.filename), None)
            key = _frame(inner) + ("" if own is None or own is inner
                                   else f" (ours: {_frame(own)})")
            sites[key] = sites.get(key, 0) + 1
        top = sorted(sites.items(), key=lambda kv: -kv[1])[:most]
        return {"syncs_per_step": len(self.stacks) / max(steps, 1),
                "sync_sites": [{"site": k, "count": v} for k, v in top]}


def _frame(f) -> str:
    """``FILE:LINE FUNCTION`` of a traceback frame, the file from its package folder on."""
    parts = Path(f.filename).parts
    for anchor in ("xecg", "lightning", "torch", "benchmarks"):
        if anchor in parts:
            parts = parts[len(parts) - parts[::-1].index(anchor) - 1:]
            break
    return f"{'/'.join(parts[-3:])}:{f.lineno} {f.name}"


#: Chrome-trace categories of torch.profiler: work on the device, and the host's launches of it.
DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
LAUNCH_CATS = ("cuda_runtime", "cuda_driver")


def idle_gaps(events: list[dict], steps: int, min_us: float = 20.0, most: int = 12) -> dict:
    """Where the device waited, from a profile's Chrome-trace events (``traceEvents``): the
    stretches between the device's work of at least ``min_us``, and for each what the host was
    doing. ``device_idle_ms_per_step`` (the span from the first device event to the last, less
    the union of device events, per step), and the ``most`` largest gaps' sums by cause:

    - ``gap``: the work that ended the gap and the host op (innermost ``cpu_op``) that launched
      it, e.g. ``aten::copy_`` for a batch's transfer or the compiled graph's call;
    - ``waited``: host calls that block for the device (``*Synchronize``, a plain ``cudaMemcpy``)
      running while the gap began, if any: a sync just before a gap is what made it.

    A step bound by the device has no gaps; a gap per step with a sync beside it is a wait the
    host could skip; gaps before a launch that came late are the host's pace."""
    device = sorted((e for e in events if e.get("ph") == "X" and e.get("cat") in DEVICE_CATS),
                    key=lambda e: e["ts"])
    if not device:
        return {"device_idle_ms_per_step": None, "idle_gaps": []}
    launches = {e["args"]["correlation"]: e for e in events
                if e.get("cat") in LAUNCH_CATS and "correlation" in e.get("args", {})}
    ops = sorted((e for e in events if e.get("ph") == "X" and e.get("cat") == "cpu_op"),
                 key=lambda e: e["ts"])
    blocking = [e for e in events if e.get("cat") in LAUNCH_CATS
                and ("Synchronize" in e["name"] or e["name"] in ("cudaMemcpy", "cuMemcpyDtoH"))]

    def innermost(tid, ts: float) -> str:
        """The shortest cpu_op of thread ``tid`` running at ``ts``."""
        running = [e for e in ops if e["tid"] == tid and e["ts"] <= ts <= e["ts"] + e["dur"]]
        return min(running, key=lambda e: e["dur"])["name"] if running else "(no op)"

    gaps, end, busy = [], device[0]["ts"] + device[0]["dur"], device[0]["dur"]
    for e in device[1:]:
        if e["ts"] > end:
            busy += e["dur"]
            if e["ts"] - end >= min_us:
                gaps.append((e["ts"] - end, end, e))
        else:
            busy += max(0.0, e["ts"] + e["dur"] - end)
        end = max(end, e["ts"] + e["dur"])
    span = end - device[0]["ts"]
    causes: dict[tuple[str, str], list[float]] = {}
    for us, start, after in sorted(gaps, key=lambda g: -g[0])[:most]:
        launch = launches.get(after.get("args", {}).get("correlation"))
        by = innermost(launch["tid"], launch["ts"]) if launch else "(launch not found)"
        waited = sorted({b["name"] for b in blocking
                         if b["ts"] <= start <= b["ts"] + b["dur"] + min_us})
        key = (f"{after['name'][:60]} launched by {by}", ", ".join(waited) or "-")
        causes.setdefault(key, []).append(us)
    return {"device_idle_ms_per_step": (span - busy) / 1000 / max(steps, 1),
            "idle_gaps_over_us": min_us, "idle_gaps_counted": len(gaps),
            "idle_gaps": [{"gap": k[0], "waited": k[1], "count": len(v),
                           "ms_per_step": sum(v) / 1000 / max(steps, 1)}
                          for k, v in sorted(causes.items(), key=lambda kv: -sum(kv[1]))]}


class StepProfile:
    """``torch.profiler`` over training steps ``start + 1 .. start + steps`` of a fit case
    (``c["profile"] = {"start", "steps", "out", "trace", "sync_sites"}``; None: does nothing).
    Writes to ``out``: ``summary.json`` (wall, host CPU and device-kernel milliseconds per step,
    where the device waited (:func:`idle_gaps`); with ``sync_sites``, :class:`SyncSites`' report
    over the same steps),
    ``ops.txt`` (the ops by host and by device time) and, unless ``trace`` is false, a Chrome
    trace, ``trace.json.gz``. A fit that ends early is summarised over the steps it took."""

    def __init__(self, spec: dict | None, device: str):
        self.spec, self.device, self.prof, self.step = spec, device, None, 0
        self.syncs: SyncSites | None = None
        self.t0: float | None = None  # when profiling began (after a sync)

    def after_step(self, step: int) -> None:
        if not self.spec:
            return
        self.step = step
        if step == self.spec["start"]:
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU]
            if self.device == "cuda":
                activities.append(ProfilerActivity.CUDA)
            _sync(self.device)
            self.prof = profile(activities=activities)
            self.prof.__enter__()
            self.syncs = SyncSites(self.device) if self.spec.get("sync_sites") else None
            if self.syncs:
                self.syncs.open()  # after _sync: the window's own syncs are not counted
            self.t0, self.cpu0 = time.perf_counter(), time.thread_time()
        elif self.prof is not None and step == self.spec["start"] + self.spec["steps"]:
            self.close()

    def close(self) -> None:
        if self.prof is None:
            return
        if self.syncs:
            self.syncs.close()
        _sync(self.device)
        wall, cpu = time.perf_counter() - self.t0, time.thread_time() - self.cpu0
        prof, self.prof = self.prof, None
        prof.__exit__(None, None, None)
        import gzip

        out = Path(self.spec["out"])
        out.mkdir(parents=True, exist_ok=True)
        n = max(self.step - self.spec["start"], 1)
        events = prof.key_averages()
        # Kernels (and copies) on the device: their own time, summed over the profiled steps.
        device_us = sum(e.self_device_time_total for e in device_kernels(events))
        # The trace, for where the device waited (idle_gaps), kept when asked for.
        trace = out / "trace.json"
        prof.export_chrome_trace(str(trace))
        gaps = idle_gaps(json.loads(trace.read_text())["traceEvents"], n)
        summary = {"steps": n, "wall_ms_per_step": 1000 * wall / n,
                   "main_thread_cpu_ms_per_step": 1000 * cpu / n,
                   "device_busy_ms_per_step": device_us / 1000 / n, **gaps,
                   **(self.syncs.report(n) if self.syncs else {})}
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        tables = [f"{json.dumps(summary)}\n",
                  events.table(sort_by="self_cpu_time_total", row_limit=30)]
        if self.device == "cuda":
            tables.append(events.table(sort_by="self_device_time_total", row_limit=30))
        (out / "ops.txt").write_text("\n\n".join(tables))
        # Every op's calls and host time per step, for telling two contenders' steps apart
        # (window_summary.py: what a Lightning step runs that a plain loop's does not).
        (out / "op_counts.json").write_text(json.dumps(
            {e.key: {"calls": e.count / n, "self_cpu_us": e.self_cpu_time_total / n,
                     "cpu_us": e.cpu_time_total / n} for e in events}, indent=0) + "\n")
        if self.spec.get("trace", True):
            with open(trace, "rb") as src, gzip.open(out / "trace.json.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
        trace.unlink()
        print(f"profile: {summary}", flush=True)


def case_fit(c: dict) -> dict:
    """Training of ``c["mode"]`` (``lightning`` or ``plain``) for ``c["epochs"]`` epochs: steps/s
    after ``c["warmup"]`` steps, and each epoch's seconds and mean training loss."""
    import lightning as L
    import torch

    torch.manual_seed(0)
    device = c["device"]
    dm = _datamodule(c, str(Path(c["store"]) / "all-train.json"))
    module = _module(c)
    # Wall-clock and CPU seconds (this process's: with num_workers=0 and one thread, the work
    # itself; on a shared machine far steadier than the wall clock).
    # Every step's end is kept: the median step resists a busy machine's pauses.
    marks: dict[str, Any] = {"step": 0, "t0": None, "cpu0": None, "epoch_start": None,
                             "epochs": [], "epochs_cpu": [], "ends": [], "losses": [],
                             "epoch_losses": []}

    profile = StepProfile(c.get("profile"), device)

    def after_step(loss) -> None:
        marks["step"] += 1
        if loss is not None:  # kept on the device: read once, at the epoch's end
            marks["losses"].append(loss)
        profile.after_step(marks["step"])
        if marks["step"] == c["warmup"]:
            _sync(device)
            marks["t0"], marks["cpu0"] = time.perf_counter(), time.process_time()
        if device == "cpu" and marks["step"] >= c["warmup"]:
            marks["ends"].append((time.perf_counter(), time.process_time()))

    def epoch_start() -> None:
        _sync(device)
        marks["epoch_start"] = (time.perf_counter(), time.process_time())

    def epoch_end() -> None:
        _sync(device)
        wall, cpu = marks["epoch_start"]
        marks["epochs"].append(time.perf_counter() - wall)
        marks["epochs_cpu"].append(time.process_time() - cpu)
        # The epoch's mean training loss: contenders that should train alike must agree here.
        losses = marks["losses"]
        marks["epoch_losses"].append(float(torch.stack(losses).float().mean()) if losses
                                     else math.nan)
        marks["losses"].clear()
        # printed as it ends: a run stopped at its time limit still tells its finished epochs
        print(f"epoch {len(marks['epochs'])}: {marks['epochs'][-1]:.2f} s "
              f"({marks['epochs_cpu'][-1]:.2f} CPU-s), mean training loss "
              f"{marks['epoch_losses'][-1]:.4f}", file=sys.stderr, flush=True)

    if c["mode"] == "lightning":
        from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar
        from lightning.pytorch.loggers import CSVLogger

        from xecg.callbacks import SteadyProgressBar

        class Marks(L.Callback):
            def on_train_batch_end(self, trainer, module, outputs, *args: Any) -> None:
                loss = outputs["loss"] if isinstance(outputs, dict) else outputs
                after_step(None if loss is None else loss.detach())

            def on_train_epoch_start(self, *args: Any) -> None:
                epoch_start()

            def on_train_epoch_end(self, *args: Any) -> None:
                epoch_end()

        with tempfile.TemporaryDirectory(prefix="xecg-bench-fit-") as tmp:
            trainer = L.Trainer(
                accelerator=device, devices=1, precision=c["precision"], max_epochs=c["epochs"],
                limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=10,
                logger=CSVLogger(tmp, name="", version=""), enable_checkpointing=False,
                enable_model_summary=False, enable_progress_bar=True,
                # xecg train's progress bar (lightning_cli.use_steady_progress_bar), or
                # Lightning's default, redrawn every step (progress_bar.py compares them)
                callbacks=[LearningRateMonitor(), Marks(),
                           TQDMProgressBar() if c.get("progress_bar") == "tqdm"
                           else SteadyProgressBar()],
                use_distributed_sampler=False,
                benchmark=c.get("cudnn_benchmark"),  # None: as the session set it (off)
                default_root_dir=tmp)
            trainer.fit(module, datamodule=dm)
            _sync(device)
            end, end_cpu = time.perf_counter(), time.process_time()
    else:
        from xecg.data.dataset import restore_batch

        module.to(device)
        if c.get("cudnn_benchmark") is not None:  # what Trainer(benchmark=...) sets
            torch.backends.cudnn.benchmark = c["cudnn_benchmark"]
        _attach_trainer(dm, c, module)
        # as setup("fit") does under Lightning: compile for this policy (symbolic lengths for
        # bucket only), and the same mask for each batch (mask_for)
        module.use_data(dm)
        module.configure_model()
        module.train()
        # the module's own optimiser and schedule (fused Adam, cosine over the epochs)
        configured = module.configure_optimizers()
        opt, sched = configured["optimizer"], configured["lr_scheduler"]
        loader = dm.train_dataloader()
        # the forward and loss of XECGModule's step
        step = train_step(module, module.criterion, opt, device,
                          bf16=c["precision"].startswith("bf16"))
        for epoch in range(c["epochs"]):
            loader.sampler.set_epoch(epoch)
            epoch_start()
            for batch in loader:
                batch = restore_batch({k: v.to(device, non_blocking=True)
                                       if isinstance(v, torch.Tensor) else v
                                       for k, v in batch.items()})  # as Lightning's hook
                after_step(step(batch["x"], batch["y"], module.mask_for(batch)))
            sched.step()
            epoch_end()
        _sync(device)
        end, end_cpu = time.perf_counter(), time.process_time()
    profile.close()
    timed = marks["step"] - c["warmup"]
    # The steps between warm-up and profiling, which the profiler's own cost does not slow.
    unprofiled = ({"unprofiled_steps_per_s": (profile.spec["start"] - c["warmup"])
                   / (profile.t0 - marks["t0"])}
                  if profile.t0 is not None and marks["t0"] is not None
                  and profile.spec["start"] > c["warmup"] else {})
    samples = int(dm.store.lengths[dm.indices["train"]].sum())
    # CPU only (on a GPU the host runs ahead of the device): 1 / the median step.
    steps = np.diff(np.array(marks["ends"]).reshape(-1, 2), axis=0)
    median = (1 / np.median(steps, axis=0)).tolist() if len(steps) else [None, None]
    return {"steps": marks["step"], "timed_steps": timed,
            "steps_per_s": timed / (end - marks["t0"]),
            "median_steps_per_s": median[0], "median_steps_per_cpu_s": median[1],
            "steps_per_cpu_s": timed / (end_cpu - marks["cpu0"]),
            "samples_per_s": timed * c["batch"] / (end - marks["t0"]),
            "epoch_s": marks["epochs"], "epoch_cpu_s": marks["epochs_cpu"],
            "epoch_loss": marks["epoch_losses"], "records": len(dm.indices["train"]),
            "real_samples_per_epoch": samples, **unprofiled, **_peak_memory(device)}


def case_train_eval(c: dict) -> dict:
    """A short training with validation (synthetic ECGs at ``c["fs"]`` Hz): the last epoch's
    validation metrics."""
    import lightning as L
    import torch

    from xecg.data.splits import save_split
    from xecg.data.store import Store
    from xecg.data.synthetic import make_synthetic_store

    with contextlib.redirect_stdout(io.StringIO()):
        make_synthetic_store(c["store"], n=c["records"], fs=c["fs"], balanced=True,
                             progress=False)
    # A quarter of the records validate (the paper's split keeps 4%: too few to compare).
    ids = Store(c["store"]).ids
    split = Path(c["store"]) / "bench-split.json"
    cut = len(ids) * 3 // 4
    save_split({"train": ids[:cut], "val": ids[cut:], "test": []}, split)
    L.seed_everything(c["seed"], verbose=False)  # the network's weights, the order and crops
    dm = _datamodule(c, str(split))
    module = _module(c)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xecg-bench-train-") as tmp:
        trainer = L.Trainer(accelerator=c["device"], devices=1, precision=c["precision"],
                            max_epochs=c["epochs"], num_sanity_val_steps=0, logger=False,
                            enable_checkpointing=False, enable_model_summary=False,
                            enable_progress_bar=False, use_distributed_sampler=False,
                            default_root_dir=tmp)
        trainer.fit(module, datamodule=dm)
    val = module.last_metrics["val"]
    del torch
    return {"seconds": time.perf_counter() - t, "epochs": c["epochs"],
            "records": {k: len(v) for k, v in dm.indices.items() if len(v)},
            "val": {k: val[k] for k in ("micro_f1", "macro_f1", "subset_acc", "auroc", "cpsc_f1")},
            **_peak_memory(c["device"])}


def case_loader(c: dict) -> dict:
    """Training windows per second from ``CPSCDataModule`` with ``c["workers"]`` workers: wall
    clock, and per CPU-second of the loading processes (the workers, or this one).

    ``c["precision"]``: the trainer's precision the DataModule sees (``half_transfer`` follows
    it; ``c["half_transfer"]`` sets it). ``c["copy"]``: this process copies each batch's ``x``
    into one reused buffer, as pinning does on a GPU (where ``pin_memory`` does it, in a thread
    of this process); ``main_ms_per_window`` is this process's CPU time per window.
    ``c["worker_kind"]`` ``thread``: the workers are threads of this process, which build each
    batch where it is used (pinned, on a GPU): no copy, and all the CPU time is this process's."""
    import gc

    import torch

    from xecg.data.datamodule import CPSCDataModule

    dm = CPSCDataModule(c["store"], split=str(Path(c["store"]) / "all-train.json"),
                        policy=c.get("policy", "crop"), length=c["length"],
                        batch_size=c["batch"], num_workers=c["workers"], seed=0,
                        pad_on_device=c.get("pad_on_device", False),
                        half_transfer=c.get("half_transfer"),
                        worker_kind=c.get("worker_kind", "process"))
    threads = dm.worker_kind == "thread"
    dm.setup()
    _attach_trainer(dm, {"device": "cpu", "precision": c.get("precision", "32-true")})
    loader = dm.train_dataloader()
    next(iter(loader))  # starts the workers and maps the store
    own, children = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    windows, start, buffer = 0, time.perf_counter(), None
    for epoch in range(c["epochs"]):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            windows += len(batch["index"])  # (training: one window per record)
            if c.get("copy") and not dm.pin_memory and not threads:
                x = batch["x"].reshape(-1)
                if buffer is None or buffer.numel() < x.numel() or buffer.dtype != x.dtype:
                    buffer = torch.empty(max(x.numel(), 2**24), dtype=x.dtype)
                buffer[:x.numel()].copy_(x)
    wall = time.perf_counter() - start
    own = time.process_time() - own
    del batch, loader  # joins the workers, so that their CPU time is counted below
    gc.collect()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    cpu = cpu if c["workers"] and not threads else own
    return {"windows": windows, "windows_per_s": windows / wall,
            "windows_per_cpu_s": windows / cpu if cpu > 0 else None,
            "main_ms_per_window": 1000 * own / windows, **_peak_memory("cpu")}


def case_prepare(c: dict) -> dict:
    """Records/s of ``xecg prepare`` or of a plain ``wfdb.rdrecord`` loop over ``c["data"]``
    (after one untimed pass that warms the page cache)."""
    data = Path(c["data"])
    headers = sorted(data.glob("*.hea"))
    if c["mode"] == "rdrecord":
        import wfdb

        def run() -> None:
            for hea in headers:
                wfdb.rdrecord(str(hea.with_suffix("")))
    else:
        from xecg.data.prepare import prepare_dataset

        def run() -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                code = prepare_dataset(data, Path(c["out"]), force=True, progress=False,
                                       workers=c.get("workers"))
            if code:
                raise SystemExit(f"prepare failed with exit status {code}")
    run()
    times = []
    for _ in range(c["repeat"]):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return {"records": len(headers), "records_per_s": len(headers) / statistics.median(times),
            "seconds": times, **_peak_memory("cpu")}


def case_step(c: dict) -> dict:
    """Training steps per second of the network alone: one batch already on the device, no
    loader, plain loop (forward, loss, backward, Adam) under ``c["precision"]``. ``c["mask"]``:
    pass a padding mask with CPSC-like lengths (the masked BatchNorm and pooling path), or none
    (every sample counted real, as the authors' code does with zero padding)."""
    import torch

    from xecg.classes import NUM_CLASSES, NUM_LEADS
    from xecg.losses import XECGLoss
    from xecg.models import XECGNet

    torch.manual_seed(0)
    device, B, T = c["device"], c["batch"], c["length"]
    net = XECGNet(width=c["width"]).to(device)
    loss_fn = XECGLoss(gamma=0.01)
    if c.get("compile"):
        net = torch.compile(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(B, NUM_LEADS, T, device=device)
    y = (torch.rand(B, NUM_CLASSES, device=device) < 0.2).float()
    lengths = torch.from_numpy(cpsc_lengths(B, seed=2, scale=c.get("scale", 1)).clip(max=T))
    mask = (torch.arange(T) < lengths[:, None]).to(device) if c["mask"] else None
    step = train_step(net, loss_fn, opt, device, bf16=c["precision"].startswith("bf16"))
    for _ in range(c["warmup"]):
        step(x, y, mask)
    _sync(device)
    t = time.perf_counter()
    for _ in range(c["steps"]):
        step(x, y, mask)
    _sync(device)
    seconds = time.perf_counter() - t
    return {"steps_per_s": c["steps"] / seconds, "records_per_s": c["steps"] * B / seconds,
            **_peak_memory(device)}


CASES = {"step": case_step, "fit": case_fit, "train_eval": case_train_eval, "loader": case_loader,
         "prepare": case_prepare}


def run_case(c: dict) -> dict:
    """Run one case here (``--case``): set the thread count, then call it."""
    import torch

    if c.get("threads"):
        torch.set_num_threads(int(c["threads"]))
    out = CASES[c["case"]](c)
    out["threads"] = torch.get_num_threads()
    if c.get("compile"):  # how many graphs torch.compile made: a few, not one per length
        from torch._dynamo.utils import counters

        out["compiled_graphs"] = counters["stats"]["unique_graphs"]
    return out


# ============================================================================ parent

class Runner:
    """Runs cases in subprocesses (or in this process with ``in_process``), echoing progress."""

    def __init__(self, in_process: bool, threads: int | None, log: Path | None,
                 timeout: float | None = None):
        self.in_process, self.threads, self.log, self.timeout = in_process, threads, log, timeout

    def __call__(self, c: dict) -> dict:
        c = {"threads": self.threads, **c}
        label = " ".join(f"{k}={v}" for k, v in c.items()
                         if k not in ("store", "out", "data", "threads", "root"))
        print(f"  .. {label}", flush=True)
        t = time.perf_counter()
        if self.in_process:
            import torch

            threads = torch.get_num_threads()
            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    result = run_case(c)
            finally:
                torch.set_num_threads(threads)
        else:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                filter(None, [c.get("root") or str(ROOT), os.environ.get("PYTHONPATH")])))
            if self.threads:
                env["OMP_NUM_THREADS"] = str(self.threads)
            try:
                proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(c)],
                                      env=env, capture_output=True, text=True,
                                      timeout=self.timeout)
            except subprocess.TimeoutExpired as err:
                # What it printed before it was stopped (a compile log, say) is all there is.
                self._log(label + f" (stopped after {self.timeout:g} s)", err.stdout, err.stderr)
                raise RuntimeError(f"case ran past {self.timeout:g} s: {label}") from None
            self._log(label, proc.stdout, proc.stderr)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
            if proc.returncode or not lines:
                tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
                raise RuntimeError(f"case failed ({proc.returncode}): {label}\n{tail}")
            result = json.loads(lines[-1][len(RESULT_TAG):])
        result["wall_s"] = time.perf_counter() - t
        return result

    def _log(self, label: str, stdout: str | bytes | None, stderr: str | bytes | None) -> None:
        if self.log is None:
            return
        text = [o.decode(errors="replace") if isinstance(o, bytes) else o or ""
                for o in (stdout, stderr)]
        with open(self.log, "a") as f:
            f.write(f"==== {label}\n{text[0]}\n{text[1]}\n")


class ContenderFailed(RuntimeError):
    """A contender failed (or ran past the case timeout): ``runs`` holds the runs of the others,
    ``failed`` each failed contender's error, so a comparison can still report what finished."""

    def __init__(self, runs: dict[str, list[dict]], failed: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in failed.items()))
        self.runs, self.failed = runs, failed


def rounds(runner: Runner, contenders: dict[str, dict], n: int) -> dict[str, list[dict]]:
    """Each contender once per round, alternating which goes first. A contender that fails is
    not run again; the others finish their rounds, then :class:`ContenderFailed` says which
    failed and carries the runs that finished."""
    out: dict[str, list[dict]] = {k: [] for k in contenders}
    failed: dict[str, str] = {}
    names = list(contenders)
    for r in range(n):
        for name in names if r % 2 == 0 else names[::-1]:
            if name in failed:
                continue
            try:
                out[name].append(runner(contenders[name]))
            except RuntimeError as err:
                failed[name] = str(err).splitlines()[0]
                print(f"  FAILED: {err}", flush=True)
    if failed:
        raise ContenderFailed({k: v for k, v in out.items() if v}, failed)
    return out


def summary(runs: list[dict], key: str) -> dict:
    """Median of ``key`` over the runs, every value, and the largest peak memory."""
    values = [r[key] for r in runs]
    out: dict[str, Any] = {key: statistics.median(values), f"{key}_runs": values}
    for mem in ("peak_rss_mb", "peak_rss_child_mb", "peak_cuda_mb"):
        if any(mem in r for r in runs):
            out[mem] = max(r.get(mem, 0.0) for r in runs)
    return out


def bench_lightning_vs_plain(runner: Runner, a, paper: bool = False,
                             tiny: bool = False) -> dict:
    if tiny:  # the smallest XECGNet on short crops: the per-step overhead is most of a step
        steps = 4 if a.quick else 60
        cfg = {"width": 0.0625, "policy": "crop", "length": 972, "precision": a.precision,
               "records": 32 * steps, "epochs": 2, "warmup": 2 if a.quick else 5}
        lengths = np.random.default_rng(1).integers(3000, 6001, cfg["records"])
    elif paper:  # the paper's network and length (the GPU plan)
        cfg = {"width": 0.25 if a.quick else 1.0, "policy": "pad",
               "length": PAPER_LENGTH // a.scale, "records": 32 * (3 if a.quick else 24),
               "epochs": 2, "warmup": 2 if a.quick else 8, "precision": "bf16-mixed"}
        lengths = cpsc_lengths(cfg["records"], seed=1, scale=a.scale)
    else:
        steps = a.steps or (4 if a.quick else 60 if a.device == "cuda" else 36)
        cfg = {"width": 0.25, "policy": "crop", "length": 2880, "precision": a.precision,
               "records": 32 * steps, "epochs": 2, "warmup": 2 if a.quick else 5}
        # 6-12 s records at 500 Hz (as smoke.yaml's synthetic data): crops cost the same for any.
        lengths = np.random.default_rng(1).integers(6 * 500, 12 * 500 + 1, cfg["records"])
    cfg.update(case="fit", device=a.device, batch=32, workers=a.workers,
               compile=False, bucket_multiple=972, half_transfer=a.half_transfer)
    store = random_store(a.tmp / f"lvp-{int(paper)}{int(tiny)}", lengths,
                         fs=500.0 / (a.scale if paper else 1))
    contenders = {m: {**cfg, "mode": m, "store": str(store)} for m in ("lightning", "plain")}
    if a.baseline:  # the same Lightning fit with another checkout's xecg (e.g. before a change)
        contenders["lightning_baseline"] = {**contenders["lightning"],
                                            "root": str(a.baseline.resolve())}
    runs = rounds(runner, contenders, 1 if paper else a.rounds)
    shutil.rmtree(store)
    keys = ["steps_per_s", "steps_per_cpu_s"]
    if a.device == "cpu":
        keys += ["median_steps_per_s", "median_steps_per_cpu_s"]
    res = {m: {k: v for key in keys for k, v in summary(r, key).items()}
           for m, r in runs.items()}
    out: dict[str, Any] = {"config": {k: v for k, v in cfg.items() if k not in ("case",)}, **res}
    plain = res["plain"]
    for name in runs:
        if not name.startswith("lightning"):
            continue
        sfx = name[len("lightning"):]
        # ratio: steps/s over the timed steps (epoch ends included), median of the rounds; on a
        # CPU also from the median step (wall clock and CPU time): steadier on a shared machine.
        for key, label in zip(keys, ("", "_cpu_time", "_median_step", "_median_step_cpu_time")):
            rate = res[name][key]
            out[f"ratio{label}{sfx}"] = rate / plain[key]
            out[f"ratio{label}{sfx}_per_round"] = [lt[key] / p[key]
                                                   for lt, p in zip(runs[name], runs["plain"])]
            out[f"overhead_ms{label}{sfx}"] = 1000 * (1 / rate - 1 / plain[key])
    if a.baseline:
        out["baseline"] = str(a.baseline)
    return out


def bench_bucket_vs_pad(runner: Runner, a, compile_: bool = False) -> dict:
    scale = a.scale
    n = a.records or (128 if a.quick else PAPER_TRAIN_RECORDS if a.gpu else 1600)
    # The compiled run rounds lengths up to 10x coarser buckets: a few shapes, not dozens, so
    # that inductor's per-shape kernel choices (and, on a torch that still fixes the length of
    # a compiled XECGNet, its recompiles: tests/test_compile.py) happen a few times.
    multiple = bucket_multiple(a, compile_)
    pad_length = PAPER_LENGTH // scale
    precision = "bf16-mixed" if a.gpu else a.precision
    if compile_ and a.device == "cpu":  # torch 2.13's C++ code for bf16 here does not compile
        precision = "32-true"
    cfg = {"case": "fit", "mode": "lightning", "device": a.device, "batch": 32,
           "width": 1.0 if a.gpu and not a.quick else 0.25, "workers": a.workers,
           "precision": precision,
           "epochs": 2, "warmup": 1, "compile": compile_, "bucket_multiple": multiple,
           "half_transfer": a.half_transfer}
    lengths = cpsc_lengths(n, seed=2, scale=scale, store=a.store)
    store = a.tmp / f"bvp-{scale}-{n}"
    if not store.exists():  # kept for the compiled run
        random_store(store, lengths, fs=500.0 / scale)
    # pad as the paper's protocol runs it (experiments/paper.yaml: the network pools over the
    # zeros, mask_padding false); bucket with its mask (the padding changes nothing), and
    # without it as the paper treats padding (a batch's shorter records end in zeros).
    contenders = {"pad": {**cfg, "policy": "pad", "length": pad_length, "store": str(store),
                          "mask_padding": False},
                  "bucket": {**cfg, "policy": "bucket", "length": pad_length,
                             "store": str(store)},
                  "bucket_unmasked": {**cfg, "policy": "bucket", "length": pad_length,
                                      "store": str(store), "mask_padding": False}}
    failed: dict[str, str] = {}
    try:
        runs = rounds(runner, contenders, a.bucket_rounds)
    except ContenderFailed as err:  # report the contender that finished (a compiled pad, say)
        runs, failed = err.runs, err.failed
    res: dict[str, Any] = {}
    for name, rs in runs.items():
        first = [r["epoch_s"][0] for r in rs]
        warm = [r["epoch_s"][-1] for r in rs]
        res[name] = {"epoch_s": statistics.median(warm), "first_epoch_s": statistics.median(first),
                     "epoch_cpu_s": statistics.median(r["epoch_cpu_s"][-1] for r in rs),
                     "first_epoch_cpu_s": statistics.median(r["epoch_cpu_s"][0] for r in rs),
                     "epoch_s_runs": warm, "first_epoch_s_runs": first,
                     **{k: v for k, v in summary(rs, "steps_per_s").items()
                        if k.startswith("peak")}}
        if compile_:
            res[name]["compiled_graphs"] = max(r.get("compiled_graphs", 0) for r in rs)
    real = int(lengths.sum())
    computed = {"pad": len(lengths) * pad_length,
                "bucket": _bucketed_samples(lengths, 32, multiple)}
    out = {
        "config": {k: v for k, v in cfg.items() if k not in ("case", "mode")},
        "scaled": (f"every length and the pad length divided by {scale} (pad to {pad_length:,}, "
                   f"records at {500 / scale:g} Hz, bucket multiple {multiple})"
                   if scale != 1 else f"full scale (pad to {pad_length:,}, bucket multiple "
                   f"{multiple})"),
        "records": n, "lengths": "--store " + str(a.store) if a.store else "CPSC-like (synthetic)",
        "median_length": int(np.median(lengths)),
        "real_fraction": {k: real / v for k, v in computed.items()},
        **res,
    }
    out["real_fraction"]["bucket_unmasked"] = out["real_fraction"]["bucket"]
    if failed:
        out["failed"] = failed
    for sfx in ("", "_unmasked"):
        b = res.get("bucket" + sfx)
        if b and "pad" in res:
            out.update({
                f"speedup{sfx}": res["pad"]["epoch_s"] / b["epoch_s"],
                f"speedup{sfx}_first_epoch": res["pad"]["first_epoch_s"] / b["first_epoch_s"],
                f"speedup{sfx}_cpu_time": res["pad"]["epoch_cpu_s"] / b["epoch_cpu_s"]})
    return out


def bucket_multiple(a, compile_: bool = False) -> int:
    """``bucket``'s multiple: ``--bucket-multiple``, else 972 (the GPU plan's; 9,720 compiled)
    divided by ``--scale`` like every other length. Until commit 6585daa a scaled run rounded up to
    243 (2,430 at full scale): 74% of the samples computed were real at 1/10 against 85% at
    full scale; 97 computes 83% (benchmarks/README.md)."""
    full = 9720 if compile_ else 972
    return a.bucket_multiple or max(1, round(full / a.scale))


def _bucketed_samples(lengths: np.ndarray, batch: int, multiple: int) -> int:
    """Samples computed per epoch under ``bucket`` (sorted within chunks of 16 batches; the
    planner's shuffle only changes which chunk a record falls in, so this is an estimate)."""
    from xecg.data.batches import _BUCKET_CHUNK_BATCHES

    order = np.random.default_rng(0).permutation(len(lengths))
    total = 0
    chunk = batch * _BUCKET_CHUNK_BATCHES
    for i in range(0, len(order), chunk):
        part = np.sort(lengths[order[i:i + chunk]])
        for j in range(0, len(part), batch):
            b = part[j:j + batch]
            total += len(b) * int(-(-b.max() // multiple) * multiple)
    return total


def bench_validation(runner: Runner, a) -> dict:
    """Bucket and pad trained the same way on synthetic ECGs (one run per seed, the same seeds
    for both): their validation metrics, and how much they vary from seed to seed."""
    scale = a.scale
    cfg = {"case": "train_eval", "device": a.device, "batch": 32, "width": 0.25,
           "workers": a.workers, "precision": a.precision, "epochs": 2 if a.quick else 8,
           "records": 200 if a.quick else 1500, "fs": 500.0 / scale,
           "bucket_multiple": bucket_multiple(a), "length": PAPER_LENGTH // scale}
    store = a.tmp / "synthetic-scaled"
    seeds = list(range(a.validation_seeds))
    variants = {"pad": {"policy": "pad"}, "bucket": {"policy": "bucket"},
                "bucket_unmasked": {"policy": "bucket", "mask_padding": False}}
    runs = {name: [runner({**cfg, **v, "seed": s, "store": str(store)}) for s in seeds]
            for name, v in variants.items()}
    shutil.rmtree(store, ignore_errors=True)
    names = list(runs["pad"][0]["val"])
    out: dict[str, Any] = {"config": {k: v for k, v in cfg.items() if k != "case"},
                           "seeds": seeds, "records": runs["pad"][0]["records"]}
    for p, rs in runs.items():
        out[p] = {"val": {k: statistics.mean(r["val"][k] for r in rs) for k in names},
                  "val_per_seed": [r["val"] for r in rs],
                  "train_s": [r["seconds"] for r in rs]}
        if len(rs) > 1:
            out[p]["val_sd"] = {k: statistics.stdev(r["val"][k] for r in rs) for k in names}
    for sfx in ("", "_unmasked"):
        b = out["bucket" + sfx]
        out["difference" + sfx] = {k: b["val"][k] - out["pad"]["val"][k] for k in names}
        if len(seeds) > 1:  # seed-to-seed spread of a difference of two means
            out["difference_se" + sfx] = {
                k: math.sqrt((out["pad"]["val_sd"][k] ** 2 + b["val_sd"][k] ** 2) / len(seeds))
                for k in names}
    return out


def bench_model_only(runner: Runner, a) -> dict:
    """Where a padded paper-protocol epoch spends its time: the network alone on a batch that is
    already on the device (with and without the padding mask), and the loader alone cutting the
    same padded batches. Whichever is slower bounds ``fit``."""
    scale = a.scale
    base = {"case": "step", "device": a.device, "width": 0.25 if a.quick else 1.0, "batch": 32,
            "length": PAPER_LENGTH // scale, "precision": "bf16-mixed" if a.gpu else a.precision,
            "warmup": 2 if a.quick else 5, "steps": 3 if a.quick else 30, "scale": scale}
    runs = rounds(runner, {"no_mask": {**base, "mask": False}, "masked": {**base, "mask": True}},
                  1)
    n = 96 if a.quick else 1024
    store = random_store(a.tmp / "model_only", cpsc_lengths(n, seed=3, scale=scale),
                         fs=500.0 / scale)
    loaders = {name: runner({"case": "loader", "device": a.device, "policy": "pad",
                             "length": base["length"],
                             "batch": 32, "epochs": 2, "workers": a.workers,
                             "store": str(store), "pad_on_device": on_device})
               for name, on_device in (("loader_pad", False), ("loader_pad_on_device", True))}
    shutil.rmtree(store)
    out: dict[str, Any] = {"config": {k: v for k, v in base.items() if k != "case"}}
    for name, rs in runs.items():
        out[name] = {**summary(rs, "records_per_s"),
                     **{k: rs[0][k] for k in rs[0] if k.startswith("peak")}}
    for name, r in loaders.items():
        out[name] = {"records_per_s": r["windows_per_s"], "workers": a.workers,
                     "records_per_cpu_s": r["windows_per_cpu_s"],
                     **{k: v for k, v in r.items() if k.startswith("peak")}}
    return out


def bench_loader_transfer(runner: Runner, a) -> dict:
    """The loader on padded batches (pad to 72,000 / scale, pad_on_device) with ``x`` in float32
    and with ``half_transfer`` (bf16), each batch copied by the main process as pinning does:
    the main process's CPU time per record, which on an H100 was the likely bound of a padded
    epoch."""
    scale = a.scale
    n = 128 if a.quick else 1024
    store = random_store(a.tmp / "transfer", cpsc_lengths(n, seed=3, scale=scale),
                         fs=500.0 / scale)
    workers = a.workers or 2
    cfg = {"case": "loader", "policy": "pad", "length": PAPER_LENGTH // scale, "batch": 32,
           "epochs": 1 if a.quick else 2, "workers": workers, "pad_on_device": True,
           "copy": True,
           "precision": "bf16-mixed", "store": str(store)}
    runs = rounds(runner, {"float32": {**cfg, "half_transfer": False},
                           "bf16": {**cfg, "half_transfer": True},
                           "bf16_threads": {**cfg, "half_transfer": True,
                                            "worker_kind": "thread"}}, a.rounds)
    shutil.rmtree(store)
    out: dict[str, Any] = {"config": {k: v for k, v in cfg.items() if k not in ("case", "store")}
                           | {"records": n}}
    for name, rs in runs.items():
        out[name] = {**summary(rs, "windows_per_s"),
                     "main_ms_per_window": statistics.median(r["main_ms_per_window"]
                                                             for r in rs)}
    out["main_time_ratio"] = out["float32"]["main_ms_per_window"] / out["bf16"][
        "main_ms_per_window"]
    # threads against worker processes, both bf16: windows/s delivered to the training loop
    out["threads_speedup"] = out["bf16_threads"]["windows_per_s"] / out["bf16"]["windows_per_s"]
    return out


def bench_ddp_balance(a) -> dict:
    """How evenly DDP processes share each step's work under ``bucket`` (``step_balance``: mean
    over most samples per step, summed over an epoch; a step's time taken as its samples), for
    2, 4 and 8 processes over 5,225 CPSC-like lengths, batch 32, buckets of 972: the planner's
    shards against the one-process plan dealt out in its shuffled order (what the planner did
    before 2026-11-27). Plans only: no data, no training, seconds."""
    from xecg.data.batches import BatchPlanner, step_balance

    n = 600 if a.quick else 5225
    lengths = cpsc_lengths(n, seed=3, scale=1)
    indices = np.arange(n)
    out: dict[str, Any] = {"config": {"records": n, "batch": 32, "bucket_multiple": 972,
                                      "epochs": 3}}

    def plans(world: int, rank: int, epoch: int) -> list:
        p = BatchPlanner(indices, lengths, "bucket", 0, 32, train=True, seed=0,
                         bucket_multiple=972, num_replicas=world, rank=rank)
        p.set_epoch(epoch)
        return list(p)

    one = [plans(1, 0, epoch) for epoch in range(3)]  # the one-process plan of each epoch
    for world in (2, 4, 8):
        planned, dealt = [], []
        for epoch in range(3):
            planned.append(step_balance([plans(world, r, epoch) for r in range(world)]))
            dealt.append(step_balance([one[epoch][r::world] for r in range(world)]))
        out[f"processes_{world}"] = {"planner": statistics.mean(planned),
                                     "shuffled": statistics.mean(dealt)}
    return out


def bench_loader(runner: Runner, a) -> dict:
    n = 200 if a.quick else 1000
    rng = np.random.default_rng(3)
    lengths = np.clip(rng.lognormal(np.log(12.0), 0.4, n), 6.0, 60.0) * 500
    store = random_store(a.tmp / "loader", lengths.astype(np.int64))
    cfg = {"case": "loader", "length": 2880, "batch": 256,
           "epochs": 2 if a.quick or a.gpu else 5, "store": str(store)}
    runs = rounds(runner, {f"workers_{w}": {**cfg, "workers": w} for w in a.loader_workers},
                  1 if a.quick or a.gpu else 2)
    shutil.rmtree(store)
    out: dict[str, Any] = {"config": {k: v for k, v in cfg.items() if k not in ("case", "store")}
                           | {"records": n}}
    for name, rs in runs.items():
        out[name] = {**summary(rs, "windows_per_s"),
                     "windows_per_cpu_s": statistics.median(r["windows_per_cpu_s"] for r in rs)}
    return out


def bench_prepare(runner: Runner, a) -> dict:
    data = a.wfdb
    if not data.is_dir():
        return {"skipped": f"real WFDB sample not found at {data} (set XECG_SHARED_DATA)"}
    try:
        import wfdb  # noqa: F401
    except ImportError:
        return {"skipped": "wfdb is not installed"}
    if a.replicate > 1:
        copies = a.tmp / "wfdb-copies"
        copies.mkdir()
        replicate(data, copies, a.replicate)
        data = copies
    cfg = {"case": "prepare", "data": str(data), "out": str(a.tmp / "prepared"),
           "repeat": 1 if a.quick else 3}
    runs = rounds(runner, {"xecg_prepare": {**cfg, "mode": "prepare"},
                           "wfdb_rdrecord": {**cfg, "mode": "rdrecord"}}, a.rounds)
    res = {k: summary(v, "records_per_s") for k, v in runs.items()}
    return {"data": f"{a.wfdb} (x{a.replicate})", "records": runs["xecg_prepare"][0]["records"],
            **res,
            "ratio": res["xecg_prepare"]["records_per_s"] / res["wfdb_rdrecord"]["records_per_s"]}


def replicate(src: Path, dst: Path, copies: int) -> None:
    """``copies`` renamed copies of each record in ``src`` (headers rewritten, .mat hard-linked)."""
    for k in range(copies):
        for hea in sorted(src.glob("*.hea")):
            rec, new = hea.stem, f"{hea.stem}_{k:03d}"
            lines = hea.read_text().splitlines()
            lines[0] = lines[0].replace(rec, new, 1)
            lines = [lines[0]] + [line.replace(f"{rec}.mat", f"{new}.mat") for line in lines[1:]]
            (dst / f"{new}.hea").write_text("\n".join(lines) + "\n")
            mat = dst / f"{new}.mat"
            try:
                os.link(hea.with_suffix(".mat"), mat)
            except OSError:
                shutil.copy2(hea.with_suffix(".mat"), mat)


# ============================================================================ report

def machine(device: str) -> dict:
    import torch

    info: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(), "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(), "torch": torch.__version__,
        "load_average_start": os.getloadavg(),
    }
    with contextlib.suppress(Exception):
        info["cpu"] = next(line.split(":", 1)[1].strip()
                           for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name"))
    with contextlib.suppress(Exception):
        import lightning

        info["lightning"] = lightning.__version__
    with contextlib.suppress(Exception):
        git = ["git", "-C", str(ROOT)]
        info["commit"] = subprocess.run([*git, "rev-parse", "--short", "HEAD"], text=True,
                                        capture_output=True).stdout.strip()
        info["dirty"] = bool(subprocess.run([*git, "status", "--porcelain", "--", "xecg"],
                                            text=True, capture_output=True).stdout.strip())
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        # cuDNN releases have had silently wrong bf16 convolutions (pytorch/pytorch#163539:
        # 9.8-9.10): a GPU number is stated with the library that computed it
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def write_partial(out: Path | None, args, results: list[dict]) -> None:
    """A check script's ``results`` so far into ``out`` (with its arguments and the libraries),
    after each variant: a run stopped at its time limit keeps the ones that ended."""
    import torch

    if out is None:
        return
    out.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()},
                               "torch": torch.__version__,
                               "cudnn": torch.backends.cudnn.version(),
                               "results": results}, indent=1) + "\n")


def _mem(d: dict) -> str:
    gpu = f" / {d['peak_cuda_mb']:,.0f} GPU" if "peak_cuda_mb" in d else ""
    return f"{d.get('peak_rss_mb', 0):,.0f}{gpu}"


def _difference(r: dict, key: str, sfx: str = "") -> str:
    se = r.get("difference_se" + sfx, {}).get(key)
    return f"{r['difference' + sfx][key]:+.3f}" + ("" if se is None else f" +- {se:.3f}")


def _by_prefix(r: dict, prefix: str) -> list[tuple[str, Any]]:
    """``(rest of the key, value)`` for the keys of ``r`` that start with ``prefix``."""
    return [(k[len(prefix):], v) for k, v in r.items() if k.startswith(prefix)]


def _measured(results: dict, key: str) -> dict | None:
    """``results[key]`` when that comparison ran and did not fail (failures are listed apart)."""
    r = results.get(key)
    return r if r and "error" not in r and "skipped" not in r else None


def table(results: dict) -> str:
    """The results as a text table, with one line per comparison describing its set-up."""
    rows, notes = [], []
    for key in ("lightning_vs_plain", "lightning_overhead", "lightning_vs_plain_paper"):
        if not (r := _measured(results, key)):
            continue
        cfg = r["config"]
        notes.append(f"{key}: XECGNet width {cfg['width']}, batch 32, {cfg['policy']} "
                     f"{cfg['length']:,} samples, {cfg['precision']}, {cfg['records']:,} records "
                     f"x {cfg['epochs']} epochs, first {cfg['warmup']} steps not timed")
        median = "median_steps_per_s" in r["plain"]
        for name in ["plain"] + [k for k in r if k.startswith("lightning")
                                 and isinstance(r[k], dict)]:
            sfx = name[len("lightning"):]
            v = r[name]
            rate = (f"{v['steps_per_s']:.2f} steps/s"
                    + (f"; median step {1000 / v['median_steps_per_s']:.0f} ms, "
                       f"{1000 / v['median_steps_per_cpu_s']:.0f} CPU-ms" if median else ""))
            ratio = "1" if name == "plain" else (
                f"{r['ratio' + sfx]:.3f}x" + (f"; median step {r['ratio_median_step' + sfx]:.3f}x"
                                              f", CPU {r['ratio_median_step_cpu_time' + sfx]:.3f}x"
                                              if median else ""))
            label = "plain PyTorch loop" if name == "plain" else \
                f"Lightning fit{sfx.replace('_', ' ')}"
            rows.append((key, label, rate, _mem(v), ratio))
    for key in ("bucket_vs_pad", "bucket_vs_pad_compiled"):
        if not (r := _measured(results, key)):
            continue
        cfg = r["config"]
        notes.append(f"{key}: {r['records']:,} records, {r['scaled']}; XECGNet width "
                     f"{cfg['width']}, batch 32, {cfg['precision']}, compile {cfg['compile']}; "
                     "pad without the mask, as the paper (mask_padding false); "
                     "second epoch (first epoch: every shape new)")
        for name in ("pad", "bucket", "bucket_unmasked"):
            if name in r.get("failed", {}):
                rows.append((key, name, "FAILED", "", ""))
                notes.append(f"{key}: {name} FAILED {r['failed'][name]}")
                continue
            if name not in r:  # results from before bucket_unmasked
                continue
            v, sp = r[name], "speedup" + name[len("bucket"):]
            ratio = ("1" if name == "pad" else "" if sp not in r else
                     f"{r[sp]:.2f}x (first {r[sp + '_first_epoch']:.2f}x), "
                     f"{r[sp + '_cpu_time']:.2f}x CPU")
            rows.append((key, name, f"{v['epoch_s']:.2f} s/epoch (first "
                         f"{v['first_epoch_s']:.2f}), {v['epoch_cpu_s']:.2f} CPU-s", _mem(v),
                         ratio))
    if r := _measured(results, "bucket_vs_pad_validation"):
        cfg = r["config"]
        notes.append(f"bucket_vs_pad_validation: synthetic ECGs at {cfg['fs']:g} Hz, "
                     f"{r['records']['train']} training and {r['records']['val']} validation "
                     f"records, {cfg['epochs']} epochs, width {cfg['width']}; mean of seeds "
                     f"{r['seeds']}" + (", difference +- its standard error from the seeds' "
                                        "spread" if "difference_se" in r else ""))
        for name in ("pad", "bucket", "bucket_unmasked"):
            if name not in r:  # results from before bucket_unmasked
                continue
            v, sfx = r[name]["val"], name[len("bucket"):]
            rows.append(("bucket_vs_pad_validation", name,
                         f"val micro-F1 {v['micro_f1']:.3f}, AUROC {v['auroc']:.3f}", "",
                         _difference(r, "micro_f1", sfx) + ", AUROC "
                         + _difference(r, "auroc", sfx) if name != "pad" else ""))
    if r := _measured(results, "model_only"):
        cfg = r["config"]
        notes.append(f"model_only: XECGNet width {cfg['width']}, batch {cfg['batch']}, "
                     f"{cfg['length']:,} samples, {cfg['precision']}: the network alone on a batch "
                     f"already on the device; loader_pad: the loader alone, pad policy, "
                     f"{r['loader_pad']['workers']} workers; _on_device: pad_on_device (the "
                     "records' samples only, the windows rebuilt on the device)")
        for name in ("no_mask", "masked", "loader_pad", "loader_pad_on_device"):
            v = r[name]
            rows.append(("model_only", name, f"{v['records_per_s']:,.0f} records/s", _mem(v),
                         f"{v['records_per_s'] / r['no_mask']['records_per_s']:.2f}x"))
    if r := _measured(results, "loader_transfer"):
        cfg = r["config"]
        notes.append(f"loader_transfer: pad {cfg['length']:,} (pad_on_device), batch 32, "
                     f"{cfg['workers']} workers, {cfg['records']:,} records x {cfg['epochs']} "
                     "epochs; the main process copies each x from worker processes as pinning "
                     "does; main-process CPU ms per record (with threads: all of the work)")
        for name in ("float32", "bf16", "bf16_threads"):
            if name not in r:  # results from before bf16_threads
                continue
            v = r[name]
            ratio = {"float32": "1", "bf16": f"{r['main_time_ratio']:.2f}x less main-process time",
                     "bf16_threads": f"{r['threads_speedup']:.2f}x the records/s of bf16 "
                     "worker processes"}[name]
            label = "x as bf16, worker threads" if name == "bf16_threads" else f"x as {name}"
            rows.append(("loader_transfer", label, f"{v['windows_per_s']:,.0f} records/s, main "
                         f"{v['main_ms_per_window']:.2f} ms per record", _mem(v), ratio))
    if r := _measured(results, "ddp_balance"):
        cfg = r["config"]
        notes.append(f"ddp_balance: bucket, {cfg['records']:,} CPSC-like lengths, batch "
                     f"{cfg['batch']}, mean of {cfg['epochs']} epochs; the share of each step's "
                     "longest work that the processes' mean work is (1 = no process waits)")
        rows += [("ddp_balance", f"{world} processes", f"{v['planner']:.2f} (batches dealt in "
                  f"shuffled order: {v['shuffled']:.2f})", "",
                  f"{v['planner'] / v['shuffled']:.2f}x")
                 for world, v in _by_prefix(r, "processes_")]
    if r := _measured(results, "loader"):
        cfg = r["config"]
        notes.append(f"loader: {cfg['length']:,}-sample crops, batch {cfg['batch']}, "
                     f"{cfg['records']:,} records x {cfg['epochs']} epochs; per CPU-second of "
                     "the loading processes")
        for workers, v in _by_prefix(r, "workers_"):
            rows.append(("loader", f"workers={workers}", f"{v['windows_per_s']:,.0f} windows/s "
                         f"({v['windows_per_cpu_s']:,.0f} per CPU-s)", _mem(v), ""))
    r = results.get("prepare")
    if r and "skipped" in r:
        notes.append(f"prepare: skipped, {r['skipped']}")
    elif r and "error" not in r:
        notes.append(f"prepare: {r['records']} real WFDB records from {r['data']}")
        rows.append(("prepare", "xecg prepare", f"{r['xecg_prepare']['records_per_s']:,.0f} rec/s",
                     _mem(r["xecg_prepare"]), f"{r['ratio']:.2f}x"))
        rows.append(("prepare", "wfdb.rdrecord loop",
                     f"{r['wfdb_rdrecord']['records_per_s']:,.0f} rec/s",
                     _mem(r["wfdb_rdrecord"]), "1"))
    notes += [f"{k}: FAILED {v['error']}" for k, v in results.items()
              if isinstance(v, dict) and "error" in v]
    head = ("comparison", "contender", "median", "peak RSS MB", "ratio")
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(5)]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
             for row in [head, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines + [""] + notes)


def save(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=float) + "\n")
    os.replace(tmp, path)


ALL = ("lightning_vs_plain", "lightning_overhead", "bucket_vs_pad", "bucket_vs_pad_compiled",
       "model_only", "loader_transfer", "loader", "prepare", "ddp_balance")
DEFAULT_CPU = ("lightning_vs_plain", "lightning_overhead", "bucket_vs_pad", "loader_transfer",
               "loader", "prepare", "ddp_balance")
# A GPU machine is lent for minutes: compiling is a second call (README "Benchmarks").
DEFAULT_GPU = ("loader_transfer", "lightning_vs_plain", "bucket_vs_pad")


def results_file(out: Path | None, gpu: bool, quick: bool, partial: bool,
                 merge: bool) -> tuple[Path, bool]:
    """Where a run writes, and whether it keeps the other comparisons there. Without ``--out``:
    a ``--quick`` smoke run writes ``results-quick.json`` (git ignores it), never over measured
    numbers; a run of some comparisons (``--only``) replaces those in ``results.json`` (or
    ``results-gpu.json``) and keeps the rest, each stamped with its own date and commit; before
    2026-11-27 it wrote the file anew and lost them."""
    if out is not None:
        return out, merge
    name = "results-quick.json" if quick else "results-gpu.json" if gpu else "results.json"
    return ROOT / "benchmarks" / name, merge or (partial and not quick)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    p.add_argument("--gpu", action="store_true",
                   help="CUDA, the paper's lengths (scale 1, 5,225 records), bf16, eager and "
                        "compiled; writes benchmarks/results-gpu.json")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--only", nargs="+", choices=ALL, default=None,
                   help="default: all but bucket_vs_pad_compiled (--gpu: lightning_vs_plain "
                        "bucket_vs_pad)")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON (default benchmarks/results.json, -gpu with --gpu, -quick "
                        "with --quick; with --only the other comparisons there are kept)")
    p.add_argument("--rounds", type=int, default=None,
                   help="alternating runs of each contender (default 3, quick 1)")
    p.add_argument("--bucket-rounds", type=int, default=None, help="default 1")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per case (default 1 on a CPU: on a shared machine two "
                        "threads waiting for each other were 5-10x slower; on a GPU torch's own)")
    p.add_argument("--precision", default=None,
                   help="lightning_vs_plain's and the CPU plan's (default 32-true; the GPU plan's "
                        "paper-length cases are bf16-mixed)")
    p.add_argument("--scale", type=int, default=None,
                   help="divide CPSC lengths and 72,000 by this (default 10 on CPU, 1 on GPU)")
    p.add_argument("--records", type=int, default=None, help="bucket_vs_pad's records")
    p.add_argument("--steps", type=int, default=None,
                   help="lightning_vs_plain's steps per epoch, 2 epochs (default 36, as smoke)")
    p.add_argument("--bucket-multiple", type=int, default=None,
                   help="bucket_vs_pad's bucket multiple (default 972 / --scale; 9,720 compiled)")
    p.add_argument("--store", type=Path, default=None,
                   help="take bucket_vs_pad's record lengths from this prepared store")
    p.add_argument("--workers", type=int, default=None,
                   help="loader workers in training cases (default 0 on CPU, 4 on GPU)")
    p.add_argument("--loader-workers", type=int, nargs="+", default=None,
                   help="worker counts of the loader benchmark (default 0 2; GPU 0 4 8)")
    p.add_argument("--half-transfer", choices=("auto", "on", "off"), default="auto",
                   help="data.half_transfer in training cases (auto: the DataModule's default, "
                        "on under 16-bit precision on a GPU)")
    p.add_argument("--no-validation", action="store_true",
                   help="skip bucket_vs_pad's short trainings")
    p.add_argument("--validation-seeds", type=int, default=None,
                   help="short trainings per policy (default 3, quick 1)")
    p.add_argument("--wfdb", type=Path, default=DEFAULT_DATA / "cpsc2018-wfdb-sample")
    p.add_argument("--replicate", type=int, default=1,
                   help="prepare: time this many renamed copies of the WFDB sample")
    p.add_argument("--case-timeout", type=float, default=None,
                   help="seconds before a case is stopped (default none; 300 with --gpu)")
    p.add_argument("--in-process", action="store_true",
                   help="run cases in this process (fast start; peak memory is the process's)")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--merge", action="store_true",
                   help="keep the other comparisons of an existing --out file")
    p.add_argument("--baseline", type=Path, default=None,
                   help="another xecg checkout: lightning_vs_plain also times its Lightning fit")
    a = p.parse_args(argv)
    if a.case:
        case = json.loads(a.case)
        if case.get("root"):  # import xecg from another checkout
            sys.path.insert(0, case["root"])
        print(RESULT_TAG + json.dumps(run_case(case), default=float), flush=True)
        return 0

    a.half_transfer = {"auto": None, "on": True, "off": False}[a.half_transfer]
    gpu = a.gpu  # the GPU plan: paper lengths, bf16, compiled (on --device cpu: its CPU path)
    out, a.merge = results_file(a.out, gpu, a.quick, partial=a.only is not None, merge=a.merge)
    a.device = a.device or ("cuda" if gpu else "cpu")
    a.only = a.only or list(DEFAULT_GPU if gpu else DEFAULT_CPU)
    a.case_timeout = a.case_timeout or (300.0 if gpu and not a.quick else None)
    a.rounds = a.rounds or (1 if a.quick else 2 if gpu else 3)
    a.threads = a.threads or (1 if a.device == "cpu" else None)
    a.bucket_rounds = a.bucket_rounds or 1
    a.validation_seeds = a.validation_seeds or (1 if a.quick else 3)
    a.precision = a.precision or "32-true"
    a.scale = a.scale or (1 if a.device == "cuda" else 10)
    a.workers = a.workers if a.workers is not None else (8 if a.device == "cuda" else 0)
    a.loader_workers = a.loader_workers or ([0, 8] if a.device == "cuda" else [0, 2])
    if a.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device here: use --device cpu")
            return 2
        print(f"GPU: {torch.cuda.get_device_name()}")
    command = " ".join(["bench.py", *(sys.argv[1:] if argv is None else argv)])
    results: dict[str, Any] = {}
    if a.merge and out.is_file():
        results = json.loads(out.read_text())
        results.setdefault("earlier", []).append({k: results.pop(k) for k in
                                                  ("machine", "command") if k in results})
    results.update({"machine": machine(a.device), "command": command, "quick": a.quick,
                    "device": a.device})
    with tempfile.TemporaryDirectory(prefix="xecg-bench-") as tmp:
        a.tmp = Path(tmp)
        runner = Runner(a.in_process, a.threads, out.with_suffix(".log"), a.case_timeout)
        if runner.log is not None:
            runner.log.parent.mkdir(parents=True, exist_ok=True)
            runner.log.write_text("")
        steps = []
        if "lightning_vs_plain" in a.only:
            steps.append(("lightning_vs_plain", lambda: bench_lightning_vs_plain(runner, a)))
            if gpu:
                steps.append(("lightning_vs_plain_paper",
                              lambda: bench_lightning_vs_plain(runner, a, paper=True)))
        if "lightning_overhead" in a.only:
            steps.append(("lightning_overhead",
                          lambda: bench_lightning_vs_plain(runner, a, tiny=True)))
        if "bucket_vs_pad" in a.only:
            steps.append(("bucket_vs_pad", lambda: bench_bucket_vs_pad(runner, a)))
        if "bucket_vs_pad_compiled" in a.only:
            steps.append(("bucket_vs_pad_compiled",
                          lambda: bench_bucket_vs_pad(runner, a, compile_=True)))
        if "bucket_vs_pad" in a.only:
            if not a.no_validation and not gpu:
                steps.append(("bucket_vs_pad_validation", lambda: bench_validation(runner, a)))
        if "model_only" in a.only:
            steps.append(("model_only", lambda: bench_model_only(runner, a)))
        if "loader_transfer" in a.only:
            steps.append(("loader_transfer", lambda: bench_loader_transfer(runner, a)))
        if "loader" in a.only:
            steps.append(("loader", lambda: bench_loader(runner, a)))
        if "prepare" in a.only:
            steps.append(("prepare", lambda: bench_prepare(runner, a)))
        if "ddp_balance" in a.only:
            steps.append(("ddp_balance", lambda: bench_ddp_balance(a)))
        for name, fn in steps:
            print(f"{name} ...", flush=True)
            t = time.perf_counter()
            try:
                results[name] = fn()
            except Exception as err:  # keep what was measured; report the failure
                results[name] = {"error": f"{type(err).__name__}: {err}"}
                print(f"  FAILED: {err}", flush=True)
            results[name]["bench_s"] = round(time.perf_counter() - t, 1)
            results[name]["measured"] = {k: results["machine"].get(k)
                                         for k in ("date", "commit", "dirty")}
            results["machine"]["load_average_end"] = os.getloadavg()
            save(results, out)
    print()
    print(table(results))
    print(f"\nload average {results['machine']['load_average_start']} -> "
          f"{results['machine']['load_average_end']}; written to {out}")
    failed = [k for k, v in results.items()
              if isinstance(v, dict) and ("error" in v or "failed" in v)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
