"""CPU cost of the padding mask in one training step of XECGNet: ``python
tests/benchmarks/masked_step.py [--width W --batch B --length T]`` prints the median CPU-ms of a
forward and backward step (the xECGNet loss) without and with a mask (random lengths from a third
of T to T), one thread. Run it with ``PYTHONPATH`` at another checkout to compare versions of the
masked layers (README "Benchmarks")."""

from __future__ import annotations

import argparse
import time

import torch

from xecg.losses import XECGLoss
from xecg.models import XECGNet


def step_cpu_ms(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                mask: torch.Tensor | None, repeats: int) -> float:
    loss = XECGLoss()
    for _ in range(2):  # warm-up
        loss(net(x, mask), y).total.backward()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        loss(net(x, mask), y).total.backward()
        times.append(time.process_time() - start)
    return 1000 * sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=9720)
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(a.batch, 12, a.length)
    y = (torch.rand(a.batch, 9) < 0.2).float()
    mask = torch.arange(a.length)[None] < torch.randint(a.length // 3, a.length + 1, (a.batch, 1))
    net = XECGNet(width=a.width).train()
    plain = step_cpu_ms(net, x, y, None, a.repeats)
    masked = step_cpu_ms(net, x, y, mask, a.repeats)
    print(f"XECGNet width {a.width}, batch {a.batch}, {a.length} samples, one thread: "
          f"{plain:.0f} CPU-ms per step without a mask, {masked:.0f} with one "
          f"({masked / plain:.2f}x)")


if __name__ == "__main__":
    main()
