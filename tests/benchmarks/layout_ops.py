"""Is each op of the 2-D form exact on channels-last tensors? The ops of one xECGNet block
(convolution as a 2-D one of height 1, BatchNorm in training mode, ReLU, max-pooling by 3),
alone and chained, each run on the same input several ways and compared with float64 on the
CPU (the truth, which no device library computes): eager on contiguous tensors, eager on
channels-last ones and compiled (inductor) on channels-last ones; on CUDA also both eager ways
without cuDNN (torch's own kernels). In float32 (TF32 off) and under bf16 autocast. For each
op and way it prints the relative error of the output and of every gradient (input, weight,
bias), as each ends: exact float32 ways are within about 1e-6 of the truth, bf16 ways within
its rounding (about 1e-2), and a wrong kernel is off by about 1.

Why: on an H100 the 2-D form's fits trained to a higher loss than xecg's layers (0.871-0.881
against 0.820-0.827 after two epochs; benchmarks/README.md), while on a CPU the two forms train
alike. Torch has had channels-last backward kernels that are silently wrong on CUDA only
(pytorch/pytorch#188344, avg_pool2d with padding) and inductor layouts that an eager backward
kernel misreads (#197888, saved pooling indices), and cuDNN releases have computed bf16
convolutions wrongly (#163539: 9.8-9.10). If ``conv_layout.py`` finds the 2-D form's gradients
inexact on a GPU, this says which op, and whether cuDNN computes it.

    python3 tests/benchmarks/layout_ops.py --device cuda --out layout-ops.json   # a lent GPU
    python3 tests/benchmarks/layout_ops.py                                       # CPU check
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import cudnn_enabled, write_partial  # noqa: E402

#: WAY -> (channels last, compiled, cuDNN); ``truth`` is float64 eager on the CPU
WAYS = {"truth": (False, False, True), "eager": (False, False, True),
        "eager_cl": (True, False, True), "compiled_cl": (True, True, True),
        "eager_nocudnn": (False, False, False), "eager_cl_nocudnn": (True, False, False)}


def channels_last(x: Tensor) -> Tensor:
    """``B x C x T`` with the strides of a channels-last ``B x C x 1 x T`` squeezed: (C*T, 1,
    C), what the 2-D form's convolutions hand to the layers after them."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last).squeeze(2)


def conv(x: Tensor, w: Tensor, b: Tensor, cl: bool) -> Tensor:
    """A same-padded convolution of kernel 3 as a 2-D one of height 1 (``conv_layout``'s form),
    its input and weight channels last when ``cl``."""
    x4, w4 = x.unsqueeze(2), w.unsqueeze(2)
    if cl:
        x4 = x4.contiguous(memory_format=torch.channels_last)
        w4 = w4.contiguous(memory_format=torch.channels_last)
    return F.conv2d(x4, w4, b, padding=(0, 1)).squeeze(2)


def norm(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """BatchNorm in training mode, as ``MaskedBatchNorm1d`` without a mask runs."""
    return F.batch_norm(x, None, None, w, b, training=True)


#: OP -> f(x, weight, bias, cl), the parameters of the op's convolution or norm
OPS = {
    "conv2d_h1": lambda x, w, b, cl: conv(x, w, b, cl),
    "batch_norm": lambda x, w, b, cl: norm(x, w[:, 0, 0], b),
    "relu": lambda x, w, b, cl: torch.relu(x) * w[0, 0, 0] + b[0],
    "max_pool1d": lambda x, w, b, cl: F.max_pool1d(x * w[0, 0, 0] + b[0], 3, 3),
    "block": lambda x, w, b, cl: F.max_pool1d(torch.relu(norm(conv(x, w, b, cl),
                                                              b + 1, b)), 3, 3),
}


def run(op: str, way: str, x: Tensor, w: Tensor, b: Tensor, g_seed: int,
        bf16: bool = False) -> list[Tensor]:
    """The op's output and its gradients (input, weight, bias) one of :data:`WAYS`, as float64
    tensors on the CPU. ``x``, ``w`` and ``b`` are float32 on the way's device (``truth``: the
    CPU, computed in float64); ``bf16``: the others under bf16 autocast, as the fits train."""
    cl, compiled, cudnn = WAYS[way]
    if way == "truth":
        x, w, b = x.double(), w.double(), b.double()
    x = (channels_last(x) if cl else x.contiguous()).detach().requires_grad_()
    w, b = w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    fn = OPS[op]
    if compiled:
        torch._dynamo.reset()
        fn = torch.compile(fn, dynamic=False)
    with cudnn_enabled(cudnn):
        with torch.autocast(x.device.type, dtype=torch.bfloat16,
                            enabled=bf16 and way != "truth"):
            y = fn(x, w, b, cl)
        if y.dtype != torch.float64:
            y = y.float()  # a bf16 output's gradient in float32, as autocast's loss gives it
        # the same upstream gradient for every way: drawn on the CPU
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(g_seed))
        grads = torch.autograd.grad((y * g.to(y)).sum(), [x, w, b])
    return [t.detach().cpu().double().contiguous() for t in (y, *grads)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--length", type=int, default=2916)
    p.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                   choices=("fp32", "bf16"),
                   help="float32 (exact ways within about 1e-6 of the truth) and bf16 autocast "
                        "(its rounding alone gives errors of about 1e-2: a wrong kernel, "
                        "about 1)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    torch.backends.cudnn.allow_tf32 = False  # float32 arithmetic, as the reference's
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    c = a.channels
    x = torch.randn(a.batch, c, a.length)
    w = torch.randn(c, c, 3) / (3 * c) ** 0.5
    b = torch.randn(c) * 0.1
    on = (x.to(a.device), w.to(a.device), b.to(a.device))
    ways = [w_ for w_ in WAYS if w_ != "truth" and (a.device == "cuda" or WAYS[w_][2])]
    results = []
    for op in a.ops:
        truth = run(op, "truth", x, w, b, g_seed=1)
        for precision in a.precisions:
            for way in ways:
                got = run(op, way, *on, g_seed=1, bf16=precision == "bf16")
                errs = [float((u - t).norm() / t.norm().clamp_min(1e-12))
                        for u, t in zip(got, truth)]
                r = {"precision": precision, "op": op, "way": way,
                     **dict(zip(("out", "grad_x", "grad_w", "grad_b"), errs))}
                print(json.dumps(r), flush=True)  # as each ends: a stopped run keeps these
                results.append(r)
                write_partial(a.out, a, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
