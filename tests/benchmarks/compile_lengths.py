"""How often a compiled XECGNet is compiled over bucket lengths: a training step (forward,
loss, backward, Adam) of the network as ``XECGModule.configure_model`` compiles it for
``bucket`` (length-generic layers, ``dynamic=True``), masked, one length after another.
Prints the first step's seconds at each (length, batch) (compiling, or choosing kernels for a new
shape), the median of the next ``--steps``, and the graph count so far; run with
``TORCH_LOGS=recompiles`` to see why torch compiled again. A bucketed epoch's batches have many
lengths and a last, smaller batch: ``--batches 32 9`` covers both.

    python tests/benchmarks/compile_lengths.py --device cuda            # a lent GPU: bf16
    python tests/benchmarks/compile_lengths.py --device cuda --mode reduce-overhead
    python tests/benchmarks/compile_lengths.py --width 0.25 --lengths 972 1944 2916
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from bench import train_step  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

from xecg.classes import NUM_CLASSES, NUM_LEADS  # noqa: E402
from xecg.losses import XECGLoss  # noqa: E402
from xecg.models import XECGNet  # noqa: E402
from xecg.models.backbone import use_length_generic_layers  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batches", type=int, nargs="+", default=[32, 9])
    p.add_argument("--lengths", type=int, nargs="+", default=[9720, 19440, 29160, 38880, 48600])
    p.add_argument("--steps", type=int, default=5, help="timed steps after the first")
    p.add_argument("--mode", default=None, help="torch.compile mode (default: torch's)")
    p.add_argument("--native", action="store_true", help="keep the native layers")
    a = p.parse_args()
    dev = a.device
    torch.manual_seed(0)
    net = XECGNet(width=a.width).to(dev)
    use_length_generic_layers(net, not a.native)
    net.compile(dynamic=True, mode=a.mode)
    bf16 = dev == "cuda"
    step = train_step(net, XECGLoss(gamma=0.01), torch.optim.Adam(net.parameters(), lr=1e-3),
                      dev, bf16)
    print(f"torch {torch.__version__} on {dev}"
          f"{' ' + torch.cuda.get_device_name() if dev == 'cuda' else ''}, width {a.width}, "
          f"{'bf16' if bf16 else 'fp32'}, {'native' if a.native else 'length-generic'} layers, "
          f"mode {a.mode}", flush=True)
    for T in a.lengths:
        for B in a.batches:
            x = torch.randn(B, NUM_LEADS, T, device=dev)
            y = (torch.rand(B, NUM_CLASSES, device=dev) < 0.2).float()
            n = torch.randint(T // 2, T + 1, (B,), device=dev)
            n[0] = T  # the longest record fills the bucket
            mask = torch.arange(T, device=dev) < n[:, None]
            times = []
            for _ in range(1 + a.steps):
                if dev == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                step(x, y, mask)
                if dev == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            median = statistics.median(times[1:])
            print(f"length {T:>6} batch {B:>3}: first step {times[0]:8.2f} s, then "
                  f"{1000 * median:7.1f} ms ({B * T / median / 1e6:6.1f} M samples/s), "
                  f"graphs so far {counters['stats']['unique_graphs']}", flush=True)


if __name__ == "__main__":
    main()
