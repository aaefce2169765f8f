"""Markdown rows for a sim2real comparison over seeds 0-4 (experiments/sim2real.md).

Usage: python experiments/sim2real_table.py NAME=RUNS_PREFIX[:REAL] ... (e.g. v1=runs/s2r-v1-short
v4=runs/s2r-v4-short; seed 0 is PREFIX or PREFIX-seed0, seed S is PREFIX-seedS; REAL names the
run's folder of `xecg evaluate` output, default `real`). Per run:
real-record micro-F1, macro-F1, macro AUROC, CPSC F1, per-class AUROC, how many of the real
Normal records are labelled STE and PAC at the checkpoint's thresholds and how many get
p(STE) >= 0.4, the median p(STE) of Normal records, and the run's synthetic test macro-F1 and
AUROC; then mean ± SD per generator and the paired differences of the last generator against
the first.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from xecg.classes import CLASSES


def row(run: Path, folder: str = "real") -> dict:
    real = json.loads((run / folder / "metrics.json").read_text())
    m = real["evaluate"]
    syn = json.loads((run / "metrics.json").read_text())["test"]
    rows = list(csv.DictReader(open(run / folder / "predictions.csv")))
    normal = [r for r in rows if r["true"] == "Normal"]
    labelled = lambda c: sum(c in r["predicted"].split(";") for r in normal)  # noqa: E731
    p_ste = [float(r["p_STE"]) for r in normal]
    return dict(run=run.name, ckpt=Path(real["checkpoint"]).name, micro=m["micro_f1"],
                macro=m["macro_f1"], auroc=m["auroc"], cpsc=m["cpsc_f1"],
                cls=[m[f"auroc_{c}"] for c in CLASSES], ste=labelled("STE"), pac=labelled("PAC"),
                ste04=sum(p >= 0.4 for p in p_ste), pste=float(np.median(p_ste)), n=len(normal),
                syn_f1=syn["macro_f1"], syn_auroc=syn["auroc"])


def main(args: list[str]) -> None:
    out = {}
    for arg in args:
        name, prefix = arg.split("=", 1)
        prefix, _, folder = prefix.partition(":")
        folder = folder or "real"
        runs = [Path(prefix if s == 0 and Path(prefix).is_dir() else f"{prefix}-seed{s}")
                for s in range(5)]
        out[name] = [row(r, folder) for r in runs if (r / folder / "metrics.json").exists()]
        for r in out[name]:
            print(f"| {name} | {r['run']} ({r['ckpt']}) | {r['micro']:.3f} | {r['macro']:.3f} | "
                  f"{r['auroc']:.3f} | {r['cpsc']:.3f} | "
                  + " | ".join(f"{x:.2f}" for x in r["cls"])
                  + f" | {r['ste']} ({r['ste04']}) | {r['pac']} | {r['pste']:.2f} | "
                  f"{r['syn_f1']:.3f} | {r['syn_auroc']:.3f} |")
    for name, rs in out.items():
        f = lambda k, rs=rs: np.array([r[k] for r in rs])  # noqa: E731
        cls = np.mean([r["cls"] for r in rs], 0)
        print(f"| **{name}** | **mean ± SD, {len(rs)} seeds** | "
              + " | ".join(f"{f(k).mean():.3f} ± {f(k).std(ddof=1):.3f}"
                           for k in ("micro", "macro", "auroc", "cpsc"))
              + " | " + " | ".join(f"{x:.2f}" for x in cls)
              + f" | {f('ste').mean():.1f} ({f('ste04').mean():.1f}) | {f('pac').mean():.1f} | "
              f"{f('pste').mean():.2f} | {f('syn_f1').mean():.3f} | {f('syn_auroc').mean():.3f} |")
    (a, ra), (b, rb) = list(out.items())[0], list(out.items())[-1]
    n = min(len(ra), len(rb))
    for k in ("micro", "macro", "auroc", "cpsc", "ste"):
        d = [rb[i][k] - ra[i][k] for i in range(n)]
        print(f"{k}: {b} - {a} by seed {np.round(d, 3).tolist()}, mean {np.mean(d):+.3f}")
    for j, c in enumerate(CLASSES):
        d = [rb[i]["cls"][j] - ra[i]["cls"][j] for i in range(n)]
        print(f"AUROC {c}: {b} - {a} by seed {np.round(d, 2).tolist()}, mean {np.mean(d):+.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
