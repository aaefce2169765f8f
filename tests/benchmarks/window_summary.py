"""The answers of a GPU window in a page: what ``gpu_window.sh`` wrote into its work folder (or
its ``window.tgz``), as short tables. The window prints it last, so that the end of the call's
output (all a lent machine's reply is sure to carry) holds the numbers even if no file comes
back.

    python3 tests/benchmarks/window_summary.py WORK_DIR
    python3 tests/benchmarks/window_summary.py benchmarks/gpu-window-DATE/window.tgz

For each form of ``conv_layout.py`` (float32 and bf16): its compiled gradients' error against
an eager float32 copy, the first and last of its fixed-batch losses and the last against the
first form's (an exact form follows xecg's layers), ms per step and the cuDNN transposes; a
form run without cuDNN ends in ``:nocudnn``. For each op and way of ``layout_ops.py``: its
errors against float64 on the CPU, a wrong one marked. Each check's heading names its torch and
cuDNN versions. For each profiled fit: ms per unprofiled step, seconds per epoch, the epochs'
mean training losses, the GPU's busy and idle ms per step, the host's waits per step, the
largest idle gaps and sync sites, and the ops a Lightning step calls more often than the plain
loop's.
"""

from __future__ import annotations

import json
import sys
import tarfile
import tempfile
from pathlib import Path


def _num(v, fmt: str = ".3g") -> str:
    return "-" if v is None else format(v, fmt)


def _versions(data: dict) -> str:
    return f"(torch {data.get('torch', '?')}, cuDNN {data.get('cudnn') or '-'})"


def layout_rows(name: str, data: dict) -> list[str]:
    """A row per form of one ``conv_layout.py`` result file; ``vs first`` is the form's last
    fixed-batch loss against the first form's (xecg's layers in the window): an exact form
    stays within rounding (float32 about 1e-5, bf16 about 0.3% on a CPU)."""
    rows = [f"## {name} {_versions(data)}", "form | grad err median / first conv | losses first "
            "-> last | vs first | ms/step | transpose ms/step"]
    results = data.get("results", [])
    first = (results[0].get("losses") or [None])[-1] if results else None
    for r in results:
        losses = r.get("losses") or []
        span = f"{losses[0]:.5f} -> {losses[-1]:.5f}" if losses else "-"
        gap = f"{losses[-1] / first - 1:+.2%}" if losses and first else "-"
        form = f"{r['form']}:{r['batch']}" + (":nocudnn" if r.get("cudnn") is False else "")
        rows.append(f"{form} | {_num(r.get('grad_err_compiled_median'))} / "
                    f"{_num(r.get('grad_err_compiled_first'))} | {span} | {gap} | "
                    f"{_num(r.get('ms_per_step'), '.1f')} | "
                    f"{_num(r.get('transpose_ms_per_step'), '.2f')}")
    return rows


def ops_rows(data: dict) -> list[str]:
    """A row per op and way of ``layout_ops.py``: relative errors against float64 on the CPU,
    marked ``<- WRONG`` above 0.1 (bf16's rounding stays below 0.05; a wrong kernel is off by
    about 1)."""
    rows = [f"## layout-ops: relative error against float64 on the CPU {_versions(data)}",
            "precision op way | out | grad x | grad w | grad b"]
    keys = ("out", "grad_x", "grad_w", "grad_b")
    for r in data.get("results", []):
        wrong = any((r.get(k) or 0) > 0.1 for k in keys)
        rows.append(f"{r['precision']} {r['op']} {r['way']} | "
                    + " | ".join(_num(r.get(k), ".1e") for k in keys)
                    + (" <- WRONG" if wrong else ""))
    return rows


def fit_rows(name: str, data: dict) -> list[str]:
    """A row per contender of one ``profile_fit.py`` run, and its largest waits."""
    rows = [f"## {name}", "contender | ms/step (unprofiled) | epoch s | epoch loss | GPU busy / "
            "idle ms/step | host waits/step"]
    details = []
    for mode, s in data.items():
        if mode == "config" or not isinstance(s, dict):
            continue
        per_s = s.get("unprofiled_steps_per_s")
        epochs = " ".join(_num(e, ".2f") for e in s.get("epoch_s") or [])
        losses = " ".join(_num(e, ".4f") for e in s.get("epoch_loss") or [])
        rows.append(f"{mode} | {_num(per_s and 1000 / per_s, '.1f')} | {epochs} | {losses} | "
                    f"{_num(s.get('device_busy_ms_per_step'), '.1f')} / "
                    f"{_num(s.get('device_idle_ms_per_step'), '.1f')} | "
                    f"{_num(s.get('syncs_per_step'), '.2f')}")
        for gap in (s.get("idle_gaps") or [])[:3]:
            details.append(f"  {mode} idle {gap['ms_per_step']:.2f} ms/step ({gap['count']}x): "
                           f"{gap['gap']}; waited: {gap['waited']}")
        for site in (s.get("sync_sites") or [])[:3]:
            details.append(f"  {mode} sync {site['count']}x: {site['site']}")
    return rows + details


def extra_op_rows(folder: Path, most: int = 8) -> list[str]:
    """The ops (torch's and the CUDA runtime's) that a Lightning step of one ``profile_fit.py``
    run calls more often than the plain loop's, from each contender's ``op_counts.json``: what
    Lightning adds to a step beside its Python (the two run the same module, loader and
    optimiser)."""
    counts = {}
    for mode in ("lightning", "plain"):
        path = folder / mode / "op_counts.json"
        if not path.exists():
            return []
        counts[mode] = {k: v for k, v in json.loads(path.read_text()).items()
                        if k.startswith(("aten::", "cuda"))}
    light, plain = counts["lightning"], counts["plain"]
    none = {"calls": 0.0, "self_cpu_us": 0.0}
    extra = sorted(((light[k]["calls"] - plain.get(k, none)["calls"], k) for k in light),
                   reverse=True)
    rows = [f"  {k}: {light[k]['calls']:.1f} vs {plain.get(k, none)['calls']:.1f} calls/step, "
            f"{light[k]['self_cpu_us']:.0f} vs {plain.get(k, none)['self_cpu_us']:.0f} host us"
            for d, k in extra[:most] if d >= 0.5]
    return ["  ops a Lightning step calls more often than the plain loop's:"] + rows if rows else []


def summarise(folder: Path) -> str:
    """The page for a window's work folder."""
    out = ["# GPU window summary"]
    for path in sorted(folder.glob("conv-layout-*.json")):
        out += layout_rows(path.stem, json.loads(path.read_text()))
    if (folder / "layout-ops.json").exists():
        out += ops_rows(json.loads((folder / "layout-ops.json").read_text()))
    for path in sorted(folder.glob("profile-*/fits.json")):
        out += fit_rows(path.parent.name, json.loads(path.read_text()))
        out += extra_op_rows(path.parent)
    if len(out) == 1:
        out.append("(nothing finished)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    src = Path(args[0])
    if src.is_dir():
        print(summarise(src))
        return 0
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(src) as tar:
        try:
            tar.extractall(tmp, filter="data")
        except TypeError:  # a Python without extraction filters (before 3.10.12)
            tar.extractall(tmp)
        print(summarise(Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
