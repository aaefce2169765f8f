"""Do the compiled network's convolutions pay cuDNN layout transposes, and what would removing
them give? The network alone (XECGNet, batch 32, 72,000 samples, bf16 autocast, a training step
with the fused Adam, again and again on one batch already on the device), compiled four ways:

- ``conv1d`` (the layers' own calls, ``compiled_form`` native) or ``conv2d`` (each convolution
  as a 2-D one of height 1, which inductor may keep channels last: its ``layout_optimization``
  applies to 2-D convolutions only);
- ``static`` or ``dynamic`` batch: ``torch._dynamo.maybe_mark_dynamic(x, 0)``, as XECGModule
  marks every batch except training batches in the ``conv2d`` form. Inductor skips its layout
  optimisation when a convolution's shape holds a symbol.

Why: on an H100 on 2026-11-27 (benchmarks/gpu-window-2026-11-27) cuDNN's nchwToNhwc and
nhwcToNchw kernels took 8 of a compiled padded step's 30 kernel-ms, and the 2-D form under
XECGModule (dynamic batch) did not remove them. The night's window measured conv2d:static at
23.6 ms a step without a transpose, against 30.4 ms for conv1d:dynamic, and 29% slower than
conv1d:static on this project's CPU (``models.backbone.compiled_form`` chose by both). Per
variant it prints, as each ends: compile seconds, ms per step (wall, over ``--steps`` steps
after a warm-up), kernel-ms and transpose kernel-ms per step (torch.profiler), and the first
step's loss (the same network each time).

    python3 tests/benchmarks/conv_layout.py --device cuda --out results.json   # a lent GPU
    python3 tests/benchmarks/conv_layout.py --width 0.0625 --length 972 --steps 2  # CPU check
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import _sync, device_kernels  # noqa: E402

from xecg.classes import NUM_CLASSES, NUM_LEADS  # noqa: E402
from xecg.losses import XECGLoss  # noqa: E402
from xecg.models import MODELS  # noqa: E402
from xecg.models.backbone import use_compiled_form  # noqa: E402

TRANSPOSES = ("nchwToNhwc", "nhwcToNchw")


def variant(a, form: str, dynamic: bool) -> dict:
    torch._dynamo.reset()
    try:
        torch.manual_seed(0)
        dev = a.device
        net = MODELS["XECGNet"](width=a.width).to(dev).train()
        use_compiled_form(net, "conv2d" if form == "conv2d" else "native")
        loss = XECGLoss(gamma=0.01)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
        x = torch.randn(a.batch, NUM_LEADS, a.length, device=dev)
        y = (torch.rand(a.batch, NUM_CLASSES, device=dev) > 0.7).float()
        if dynamic:
            torch._dynamo.maybe_mark_dynamic(x, 0)
            torch._dynamo.maybe_mark_dynamic(y, 0)
        compiled = torch.compile(net)

        def step() -> Tensor:
            with torch.autocast(dev, dtype=torch.bfloat16):
                total = loss(compiled(x), y).total
            total.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return total.detach()

        t0 = time.perf_counter()
        first = step().item()
        compile_s = time.perf_counter() - t0
        for _ in range(3):
            step()
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step()
        _sync(dev)
        ms = 1000 * (time.perf_counter() - t0) / a.steps
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(3):
                step()
            _sync(dev)
        kernels = device_kernels(prof.key_averages())
        transposes = [e for e in kernels if any(t in e.key for t in TRANSPOSES)]
        return {"form": form, "batch": "dynamic" if dynamic else "static",
                "compile_s": compile_s, "ms_per_step": ms,
                "kernel_ms_per_step": sum(e.self_device_time_total for e in kernels) / 3000,
                "transpose_ms_per_step": sum(e.self_device_time_total for e in transposes) / 3000,
                "transpose_calls_per_step": sum(e.count for e in transposes) / 3,
                "first_loss": first}
    finally:
        torch._dynamo.reset()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--length", type=int, default=72_000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--variants", nargs="+", default=["conv1d:dynamic", "conv2d:static",
                                                     "conv2d:dynamic", "conv1d:static"],
                   help="FORM:BATCH pairs, most telling first (each compiles anew)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    results = []
    for v in a.variants:
        form, batch = v.split(":")
        r = variant(a, form, batch == "dynamic")
        print(json.dumps(r), flush=True)  # as each ends: a stopped run keeps the ones before
        results.append(r)
        if a.out:
            a.out.write_text(json.dumps({"config": {k: str(val) for k, val in vars(a).items()},
                                         "torch": torch.__version__, "results": results},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
