"""Cost of the padding mask in one training step of XECGNet: ``python
tests/benchmarks/masked_step.py [--width W --batch B --length T --bf16]`` prints, without and with a
mask (random lengths from a third of T to T), the median CPU-ms of a forward and backward step
(the xECGNet loss, one thread), how many megabytes its ops write into new tensors and in place,
how many ops write anything and how many are dispatched, views included. The megabytes and ops
are exact and the same on any machine: on a GPU, where eager elementwise kernels are bound by
memory, the megabytes are what the mask costs in a long step, and the ops (each write about one
kernel launch, each dispatch host time) what it costs in a short one (a bucketed batch); the CPU
milliseconds depend on the machine and its load. Run it with
``PYTHONPATH`` at another checkout to compare versions of the masked layers (README
"Benchmarks")."""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from xecg.losses import XECGLoss
from xecg.models import XECGNet

_ALLOCATE_ONLY = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}


class Written(TorchDispatchMode):
    """Bytes the ops write: ``new`` (outputs in new storage) and ``in_place`` (outputs in an
    input's storage, by ops named ``..._``); views write nothing. ``ops``: the calls that
    wrote (views and empty allocations are not counted); ``calls``: every op dispatched, views
    included (each costs the host time, a launch or not)."""

    def __init__(self) -> None:
        super().__init__()
        self.new = self.in_place = self.ops = self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        wrote = False
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            size = t.numel() * t.element_size()
            if t.untyped_storage().data_ptr() not in inputs:
                self.new += size
                wrote = func.overloadpacket.__name__ not in _ALLOCATE_ONLY
            elif func.overloadpacket.__name__.endswith("_"):
                self.in_place += size
                wrote = True
        self.ops += wrote
        return out


def step_cpu_ms(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                mask: torch.Tensor | None, repeats: int, bf16: bool = False
                ) -> tuple[float, Written]:
    loss = XECGLoss()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            total = loss(net(x, mask), y).total
        total.backward()

    for _ in range(2):  # warm-up
        step()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        step()
        times.append(time.process_time() - start)
    with Written() as written:
        step()
    return 1000 * sorted(times)[len(times) // 2], written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=9720)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--bf16", action="store_true",
                   help="under bf16 autocast (the CPU's, whose casts are close to CUDA's)")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(a.batch, 12, a.length)
    y = (torch.rand(a.batch, 9) < 0.2).float()
    mask = torch.arange(a.length)[None] < torch.randint(a.length // 3, a.length + 1, (a.batch, 1))
    net = XECGNet(width=a.width).train()
    plain, plain_w = step_cpu_ms(net, x, y, None, a.repeats, a.bf16)
    masked, masked_w = step_cpu_ms(net, x, y, mask, a.repeats, a.bf16)
    print(f"XECGNet width {a.width}, batch {a.batch}, {a.length} samples, "
          f"{'bf16 autocast' if a.bf16 else 'fp32'}, one thread: "
          f"{plain:.0f} CPU-ms per step without a mask, {masked:.0f} with one "
          f"({masked / plain:.2f}x)")
    mb = 2 ** 20
    print(f"written per step: {plain_w.new / mb:,.0f} MB new + {plain_w.in_place / mb:,.0f} MB in "
          f"place without a mask, {masked_w.new / mb:,.0f} + {masked_w.in_place / mb:,.0f} MB with "
          f"one ({(masked_w.new + masked_w.in_place) / (plain_w.new + plain_w.in_place):.2f}x)")
    print(f"ops that write, per step: {plain_w.ops:,} without a mask, {masked_w.ops:,} with one "
          f"({masked_w.ops / plain_w.ops:.2f}x)")
    print(f"ops dispatched (views included), per step: {plain_w.calls:,} without a mask, "
          f"{masked_w.calls:,} with one ({masked_w.calls / plain_w.calls:.2f}x)")


if __name__ == "__main__":
    main()
