"""Speed of ``xecg prepare`` on real WFDB records, beside a plain ``wfdb.rdrecord`` loop.

    python tests/benchmarks/bench_prepare.py                  # the 100 shared records
    python tests/benchmarks/bench_prepare.py --replicate 20   # 2,000 files, to extrapolate to 6,877

Both are timed in the same run on the same files; each is repeated and reported as best and
median records/s. ``prepare`` is run as with ``--force`` (it really rewrites the store).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = Path(os.environ.get("XECG_SHARED_DATA", ROOT.parent / "shared" / "data"))
CPSC_RECORDS = 6877


def replicate(src: Path, dst: Path, copies: int) -> None:
    """``copies`` renamed copies of each record in ``src`` (headers rewritten, .mat hard-linked)."""
    for k in range(copies):
        for hea in sorted(src.glob("*.hea")):
            rec, new = hea.stem, f"{hea.stem}_{k:03d}"
            lines = hea.read_text().splitlines()
            lines[0] = lines[0].replace(rec, new, 1)
            lines = [lines[0]] + [line.replace(f"{rec}.mat", f"{new}.mat") for line in lines[1:]]
            (dst / f"{new}.hea").write_text("\n".join(lines) + "\n")
            mat = dst / f"{new}.mat"
            try:
                os.link(hea.with_suffix(".mat"), mat)
            except OSError:
                shutil.copy2(hea.with_suffix(".mat"), mat)


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA / "cpsc2018-wfdb-sample")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--replicate", type=int, default=1, help="copies of the sample to time")
    p.add_argument("--workers", type=int, default=None,
                   help="prepare's reader processes (default: CPUs - 1)")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"skipped: real WFDB sample not found at {args.data} (set XECG_SHARED_DATA)")
        return 0

    import wfdb

    from xecg.data.prepare import default_workers, prepare_dataset

    with tempfile.TemporaryDirectory(prefix="xecg-bench-") as tmp:
        data = args.data
        if args.replicate > 1:
            data = Path(tmp) / "data"
            data.mkdir()
            replicate(args.data, data, args.replicate)
        headers = sorted(data.glob("*.hea"))
        n = len(headers)

        def rdrecord_loop() -> None:
            for hea in headers:
                wfdb.rdrecord(str(hea.with_suffix("")))

        def prepare() -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                code = prepare_dataset(data, Path(tmp) / "store", force=True, progress=False,
                                       workers=args.workers)
            if code:
                raise SystemExit(f"prepare failed with exit status {code}")

        prepare()  # warm the page cache and imports for both contenders
        results = {"wfdb.rdrecord loop": timed(rdrecord_loop, args.repeat),
                   "xecg prepare": timed(prepare, args.repeat)}

    print(f"{n:,} records from {args.data} (x{args.replicate}), {os.cpu_count()} CPUs, "
          f"workers={args.workers or default_workers()}, best/median of {args.repeat}")
    print(f"{'':22s} {'best rec/s':>11s} {'median rec/s':>13s} {'est. 6,877 s':>13s}")
    rates = {}
    for name, times in results.items():
        best, median = n / min(times), n / statistics.median(times)
        rates[name] = median
        print(f"{name:22s} {best:11.0f} {median:13.0f} {CPSC_RECORDS / median:13.1f}")
    ratio = rates["xecg prepare"] / rates["wfdb.rdrecord loop"]
    print(f"prepare / rdrecord (median): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
