"""Where a training step's time goes: ``torch.profiler`` over a few steps of a Lightning fit and of
a plain PyTorch loop (bench.py's ``fit`` case: the same module, loader and optimiser), after
warm-up and compilation. Per contender it writes ``OUT/<mode>/summary.json`` (wall, main-thread
CPU and device-kernel milliseconds per step, where the device waited), ``ops.txt`` (ops by host
and by device time), ``op_counts.json`` (every op's calls and host time per step) and
``trace.json.gz`` (open in https://ui.perfetto.dev), and prints the summaries with each fit's
epochs, also kept in ``OUT/fits.json``.

    python tests/benchmarks/profile_fit.py --device cuda --compile --out $OUT     # a lent GPU
    python tests/benchmarks/profile_fit.py --device cuda --compile --compile-mode reduce-overhead
    python tests/benchmarks/profile_fit.py --records 96 --start 2 --steps 2       # CPU check

A step whose wall time is well over its device time is bound by the host (the loop, kernel
launches, the loader); one whose device time fills it, by the GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--mode", nargs="+", choices=("lightning", "plain"),
                   default=["lightning", "plain"])
    p.add_argument("--policy", choices=("pad", "bucket", "crop"), default="pad")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile-mode", default="default",
                   help="model.compile_mode with --compile (reduce-overhead: CUDA graphs)")
    p.add_argument("--records", type=int, default=None, help="default 1,024 (CPU: 128)")
    p.add_argument("--start", type=int, default=20, help="steps before profiling")
    p.add_argument("--steps", type=int, default=10, help="steps profiled")
    p.add_argument("--width", type=float, default=None, help="default 1.0 (CPU: 0.25)")
    p.add_argument("--scale", type=int, default=None,
                   help="divide CPSC lengths and 72,000 by this (default 1; CPU: 10)")
    p.add_argument("--workers", type=int, default=None, help="default 8 (CPU: 0)")
    p.add_argument("--precision", default=None, help="default bf16-mixed (CPU: 32-true)")
    p.add_argument("--bucket-multiple", type=int, default=972)
    p.add_argument("--worker-kind", choices=("process", "thread"), default="process",
                   help="data.worker_kind: loader worker processes or threads")
    p.add_argument("--half-transfer", choices=("auto", "on", "off"), default="auto",
                   help="data.half_transfer (auto: on under 16-bit precision on a GPU)")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="trainer.benchmark: cuDNN times its algorithms for each new shape and "
                        "keeps the fastest (torch.backends.cudnn.benchmark)")
    p.add_argument("--conv2d-static", action="store_true",
                   help="an experiment, for --compile --policy pad: each compiled convolution "
                        "as a 2-D one of height 1 and the batch dimension static (XECGModule "
                        "marks it dynamic), which inductor's layout optimisation needs to keep "
                        "them channels last (conv_layout.py)")
    p.add_argument("--out", type=Path, default=Path("profile"))
    p.add_argument("--no-trace", action="store_true",
                   help="no trace.json.gz (a lent GPU machine returns at most 8 files)")
    p.add_argument("--sync-sites", action="store_true",
                   help="count, over the profiled steps, the ops that make the host wait for "
                        "the GPU, and where they are (torch's sync debug mode; bench.SyncSites)")
    a = p.parse_args(argv)
    if a.conv2d_static:
        conv2d_static()
    gpu = a.device == "cuda"
    scale = a.scale or (1 if gpu else 10)
    records = a.records or (1024 if gpu else 128)
    steps_per_epoch = math.ceil(records / 32)
    cfg = {"case": "fit", "device": a.device, "batch": 32,
           "width": a.width or (1.0 if gpu else 0.25),
           "workers": a.workers if a.workers is not None else (8 if gpu else 0),
           "precision": a.precision or ("bf16-mixed" if gpu else "32-true"),
           "epochs": math.ceil((a.start + a.steps + 1) / steps_per_epoch), "warmup": 1,
           "compile": a.compile, "compile_mode": a.compile_mode,
           "bucket_multiple": a.bucket_multiple, "policy": a.policy,
           "length": bench.PAPER_LENGTH // scale if a.policy != "crop" else 2880,
           "mask_padding": a.policy != "pad",  # pad as the paper runs it: no mask
           "half_transfer": {"auto": None, "on": True, "off": False}[a.half_transfer],
           "worker_kind": a.worker_kind, "cudnn_benchmark": a.cudnn_benchmark or None,
           "conv2d_static": a.conv2d_static}
    summaries = {}
    with tempfile.TemporaryDirectory(prefix="xecg-profile-") as tmp:
        store = bench.random_store(Path(tmp) / "store", bench.cpsc_lengths(records, seed=2,
                                                                           scale=scale),
                                   fs=500.0 / scale)
        for mode in a.mode:
            out = a.out / mode
            c = {**cfg, "mode": mode, "store": str(store),
                 "profile": {"start": a.start, "steps": a.steps, "out": str(out),
                             "trace": not a.no_trace, "sync_sites": a.sync_sites}}
            graphs = _graphs()
            result = bench.case_fit(c)
            summaries[mode] = {**json.loads((out / "summary.json").read_text()),
                               **{k: result.get(k) for k in FIT_KEYS},
                               "steps_per_epoch": steps_per_epoch}
            # A few, not one per bucket length (TORCH_LOGS=recompiles: why); 0 where a contender
            # reuses the graphs of one before it (the same network code, in this process).
            if a.compile:
                summaries[mode]["compiled_graphs"] = _graphs() - graphs
            # after each contender: a run stopped at its time limit keeps the ones before
            a.out.mkdir(parents=True, exist_ok=True)
            (a.out / "fits.json").write_text(json.dumps({"config": cfg, **summaries},
                                                        indent=1) + "\n")
    print(json.dumps({"config": cfg, **summaries}, indent=1))
    return 0


#: What a profiled fit's summary takes from ``bench.case_fit``'s result.
FIT_KEYS = ("steps_per_s", "unprofiled_steps_per_s", "epoch_s", "epoch_cpu_s", "epoch_loss")


def conv2d_static() -> None:
    """Patch this process: xecg's compiled convolutions become 2-D ones of height 1
    (``conv_layout.conv_as_2d``) and ``XECGModule`` no longer marks the batch dynamic, the two
    conditions under which inductor may keep the convolutions channels last. Faster on an H100,
    but its fits trained to a higher loss there: the product keeps its layers until a GPU shows
    the form exact (benchmarks/README.md)."""
    import torch._dynamo
    from conv_layout import conv_as_2d, use_conv

    use_conv(conv_as_2d)
    torch._dynamo.maybe_mark_dynamic = lambda *args, **kwargs: None


def _graphs() -> int:
    """Graphs torch.compile has made in this process so far."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


if __name__ == "__main__":
    sys.exit(main())
