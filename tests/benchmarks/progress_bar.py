"""What Lightning's progress bar costs a training step: the same Lightning fit (bench.py's, as
``make train`` configures it: metrics, logging, LR monitor) with Lightning's default tqdm bar,
redrawn after every step, and with xecg's :class:`~xecg.callbacks.SteadyProgressBar`, redrawn at
most every 0.2 s, in turn for ``--rounds`` rounds. A step of the smallest network (width
0.0625, batch 8, 243-sample crops, one thread, CPU), so that the bar's share shows; the number
is the median step's CPU milliseconds of this process (steadier than the wall clock on a shared
machine).

    python3 tests/benchmarks/progress_bar.py --out benchmarks/results-progress-bar.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--records", type=int, default=512)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    bars = {"tqdm_every_step": "tqdm", "steady": "steady"}  # bench.case_fit's progress_bar
    ms: dict[str, list[float]] = {name: [] for name in bars}
    with tempfile.TemporaryDirectory(prefix="xecg-bench-bar-") as tmp:
        store = bench.random_store(Path(tmp) / "store",
                                   bench.cpsc_lengths(a.records, seed=2, scale=10), fs=50.0)
        c = {"case": "fit", "device": "cpu", "batch": 8, "width": 0.0625, "workers": 0,
             "precision": "32-true", "epochs": 2, "warmup": 5, "policy": "crop", "length": 243,
             "mask_padding": True, "mode": "lightning", "store": str(store)}
        for _ in range(a.rounds):
            for name, bar in bars.items():
                fit = bench.case_fit({**c, "progress_bar": bar})
                ms[name].append(1000 / fit["median_steps_per_cpu_s"])
    result = {"machine": bench.machine("cpu"),  # date, commit, load average, ...
              "config": {k: v for k, v in c.items() if k != "store"},
              "median_step_cpu_ms": ms,
              "saved_ms_per_step": [t - s for t, s in zip(ms["tqdm_every_step"], ms["steady"])]}
    print(json.dumps(result, indent=1))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
