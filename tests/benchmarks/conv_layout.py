"""Do the compiled network's convolutions pay cuDNN layout transposes, and what would removing
them give? The network alone (XECGNet, batch 32, 72,000 samples, bf16 autocast, a training step
with the fused Adam, again and again on one batch already on the device), compiled in forms:

- ``conv1d`` (xecg's layers) or ``conv2d``: each convolution as a 2-D one of height 1, which
  inductor may keep channels last (its ``layout_optimization`` applies to 2-D convolutions only);
  ``conv2d_cl`` the same with channels-last inputs and weights, ``conv2d_t`` with the length as
  the height;
- ``static`` or ``dynamic`` batch: ``torch._dynamo.maybe_mark_dynamic(x, 0)``, as XECGModule
  marks every batch so that an epoch's smaller last batch needs no second graph. Inductor skips
  its layout optimisation when a convolution's shape holds a symbol;
- and, with a third part ``nocudnn``, the same without cuDNN (``torch.backends.cudnn.enabled``
  off: torch's own CUDA kernels), so that a form that trains apart from the others can be put
  down to cuDNN's kernels or not (cuDNN 9.8-9.10 computed some bf16 convolutions wrongly,
  pytorch/pytorch#163539; the card's cuDNN version is in the output).

Why: on an H100 on 2026-11-27 (benchmarks/gpu-window-2026-11-27) cuDNN's nchwToNhwc and
nhwcToNchw kernels took 8 of a compiled padded step's 30 kernel-ms, and the 2-D form under
XECGModule (dynamic batch) did not remove them. Per variant it prints, as each ends: compile
seconds, ms per step (wall, over ``--steps`` steps after a warm-up), kernel-ms and transpose
kernel-ms per step (torch.profiler), every step's loss on the fixed batch (``losses``: the same
network and batch each time, so exact forms follow one another step by step), and the compiled
gradients' error against an eager float32 copy (``grad_errors``; ``--fp32`` for the check
without bf16's rounding).

    python3 tests/benchmarks/conv_layout.py --device cuda --out results.json   # a lent GPU
    python3 tests/benchmarks/conv_layout.py --width 0.0625 --length 972 --steps 2  # CPU check
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import _sync, cudnn_enabled, device_kernels, write_partial  # noqa: E402

from xecg.classes import NUM_CLASSES, NUM_LEADS  # noqa: E402
from xecg.losses import XECGLoss  # noqa: E402
from xecg.models import MODELS, backbone, branches  # noqa: E402

TRANSPOSES = ("nchwToNhwc", "nhwcToNchw")


def conv_as_2d(layer: nn.Conv1d, x: Tensor, length_generic: bool = False, *,
               along: int = 2, channels_last: bool = False) -> Tensor:
    """``backbone.conv1d`` with the compiled convolution as a 2-D one of height 1 over
    ``B x c x 1 x T`` (``along`` 2), or of width 1 over ``B x c x T x 1`` (``along`` 3);
    ``channels_last``: input and weight made channels-last contiguous first, so that no
    convolution (the first one's backward above all) mixes layouts."""
    if not torch.compiler.is_compiling():
        return layer(x)
    x4, w4 = x.unsqueeze(along), layer.weight.unsqueeze(along)
    if channels_last:
        x4 = x4.contiguous(memory_format=torch.channels_last)
        w4 = w4.contiguous(memory_format=torch.channels_last)
    pad = (0, layer.padding[0]) if along == 2 else (layer.padding[0], 0)
    return F.conv2d(x4, w4, layer.bias, padding=pad).squeeze(along)


#: FORM -> the convolution that backbone.conv1d becomes (``conv1d``: xecg's own)
FORMS = {"conv1d": backbone.conv1d,
         "conv2d": conv_as_2d,
         "conv2d_cl": functools.partial(conv_as_2d, channels_last=True),
         "conv2d_t": functools.partial(conv_as_2d, along=3)}


def use_conv(conv) -> object:
    """Make ``conv`` the convolution of xecg's layers in this process (``backbone`` and
    ``branches`` each call the name they imported); returns the one it replaces."""
    previous = backbone.conv1d
    backbone.conv1d = branches.conv1d = conv
    return previous


def grad_errors(compiled, net: nn.Module, loss: XECGLoss, x: Tensor, y: Tensor,
                autocast: bool) -> dict:
    """One step's gradients, each parameter's error against an eager float32 copy of the
    network (the truth) as ``|g - g_true| / |g_true|`` (norms), for the compiled network and
    for an eager copy under the same autocast (the rounding any form pays): their medians over
    the parameters and the first parameter's (the first convolution, whose backward sees the
    network's input). A convolution's bias before a BatchNorm has a gradient of about zero, so
    the largest relative error says nothing and is left out."""
    eager, truth = copy.deepcopy(net), copy.deepcopy(net)
    grads = []
    for model, cast in ((compiled, autocast), (eager, autocast), (truth, False)):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cast):
            total = loss(model(x), y).total
        grads.append(torch.autograd.grad(total, list(model.parameters())))
    out = {}
    for name, got in (("compiled", grads[0]), ("eager", grads[1])):
        errs = [float((g.float() - t.float()).norm() / t.float().norm().clamp_min(1e-12))
                for g, t in zip(got, grads[2])]
        out[f"grad_err_{name}_median"] = sorted(errs)[len(errs) // 2]
        out[f"grad_err_{name}_first"] = errs[0]
    return out


def variant(a, form: str, dynamic: bool, cudnn: bool = True) -> dict:
    torch._dynamo.reset()
    original = use_conv(FORMS[form])
    try:
        with cudnn_enabled(cudnn):
            torch.manual_seed(0)
            dev = a.device
            net = MODELS["XECGNet"](width=a.width).to(dev).train()
            loss = XECGLoss(gamma=0.01)
            opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
            x = torch.randn(a.batch, NUM_LEADS, a.length, device=dev)
            y = (torch.rand(a.batch, NUM_CLASSES, device=dev) > 0.7).float()
            if dynamic:
                torch._dynamo.maybe_mark_dynamic(x, 0)
                torch._dynamo.maybe_mark_dynamic(y, 0)
            compiled = torch.compile(net)

            def step() -> Tensor:
                with torch.autocast(dev, dtype=torch.bfloat16, enabled=not a.fp32):
                    total = loss(compiled(x), y).total
                total.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                return total.detach()

            t0 = time.perf_counter()  # compiles; before any step, so every form sees one network
            errors = grad_errors(compiled, net, loss, x, y, autocast=not a.fp32)
            compile_s = time.perf_counter() - t0
            # Every step's loss on the one fixed batch, read after the timing (kept as tensors, so
            # no step waits on the device): with exact gradients each form's losses follow xecg's
            # layers' step by step; a form that trains worse, as the 2-D form's GPU fits seemed to,
            # falls behind within a few steps.
            losses = [step()]
            for _ in range(3):
                losses.append(step())
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(a.steps):
                losses.append(step())
            _sync(dev)
            ms = 1000 * (time.perf_counter() - t0) / a.steps
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
            with profile(activities=acts) as prof:
                for _ in range(3):
                    losses.append(step())
                _sync(dev)
            kernels = device_kernels(prof.key_averages())
            transposes = [e for e in kernels if any(t in e.key for t in TRANSPOSES)]
            return {"form": form, "batch": "dynamic" if dynamic else "static", "cudnn": cudnn,
                    "compile_s": compile_s, "ms_per_step": ms,
                    "kernel_ms_per_step":
                        sum(e.self_device_time_total for e in kernels) / 3000,
                    "transpose_ms_per_step":
                        sum(e.self_device_time_total for e in transposes) / 3000,
                    "transpose_calls_per_step": sum(e.count for e in transposes) / 3,
                    "first_loss": float(losses[0]), "losses": [float(v) for v in losses],
                    **errors}
    finally:
        use_conv(original)
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
                   help="FORM:BATCH[:nocudnn], most telling first (each compiles anew); "
                        f"FORM one of {', '.join(FORMS)}, BATCH static or dynamic")
    p.add_argument("--fp32", action="store_true",
                   help="no bf16 autocast (gradients against eager without bf16's rounding)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    if a.fp32:  # float32 convolutions and matrix products, not TF32's 10-bit mantissas
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    specs = [v.split(":") for v in a.variants]  # checked before the first compiles
    for v, parts in zip(a.variants, specs):
        if not (len(parts) in (2, 3) and parts[0] in FORMS
                and parts[1] in ("static", "dynamic") and parts[2:] in ([], ["nocudnn"])):
            p.error(f"--variants {v}: expected FORM:BATCH[:nocudnn]")
    results = []
    for form, batch, *rest in specs:
        r = variant(a, form, batch == "dynamic", cudnn=not rest)
        print(json.dumps(r), flush=True)  # as each ends: a stopped run keeps the ones before
        results.append(r)
        write_partial(a.out, a, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
