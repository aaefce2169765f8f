"""``xecg explain``: explanation pages of records, or scores of maps against known evidence.

  xecg explain --ckpt CKPT PATH --out DIR [--method M ...] [--window START_SECONDS]
  xecg explain --ckpt CKPT --evaluate STORE --out DIR [--method M ...] [--limit N]

PATH is one record file, a folder in any supported layout, or a store (``--records ID ...``
or ``--limit N`` for some of its records); each record gets
``DIR/RECORD_METHOD.png``: the 12-lead printout (3 x 4 leads of 2.5 s and a 10 s lead II
rhythm strip, 25 mm/s, 10 mm/mV) with the map shaded and one strip per predicted or true label.
The first 10 s are shown; ``--window START`` shows 10 s from START instead (a START past
the record's last 10 s shows those, and says so). What an earlier ``xecg explain`` wrote in DIR
(its pages and skipped.csv) is removed first; when every record is skipped, exit 2.

Methods: ``attention`` (xECGNet's A), ``cam`` (its class response maps R_c), ``gradcam``
(Grad-CAM on the last convolutional layer, any model), ``ig`` (Integrated Gradients, zero
baseline, |attributions| summed over leads). Default: attention for xECGNet, gradcam otherwise.

``--evaluate STORE`` scores the maps against the evidence intervals of every record of STORE
that has them (RMA, RRA, pointing game, coverage, AOPC; each with its chance level) for the
trained network and a randomly initialised one, and writes ``DIR/scores.csv``,
``DIR/summary.csv`` and ``DIR/summary.md``. Default methods: every one the model has except ig.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from xecg.explain.maps import METHODS


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def start_seconds(text: str) -> float:
    """An argparse type: a window start in seconds, finite and not negative."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0):  # NaN fails both comparisons
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, got {text}")
    return value


def explain_records(ckpt, path, out, methods=None, window: float = 0.0, device: str = "cpu",
                    ig_steps: int = 32, records: list[str] | None = None,
                    limit: int | None = None) -> list[Path]:
    """Write one explanation page per record and method; returns the PNGs written.
    ``records``: only these ids; ``limit``: only the first N records."""
    from tqdm import tqdm

    from xecg.atomic import inside, output_name
    from xecg.errors import ConfigError, XECGError
    from xecg.explain.figure import explanation_figure, window_start
    from xecg.explain.maps import check_methods, default_methods
    from xecg.guards import load_module
    from xecg.plots import ECG_DPI, save_figure
    from xecg.records import (
        check_device,
        nothing_done,
        records_at_rate,
        remove_previous,
        select_records,
        write_skipped,
    )

    if not (math.isfinite(window) and window >= 0):
        raise ConfigError(f"--window {window}: must be a number of seconds, 0 or more")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: must be at least 1")
    # weights_only: tensors and plain data; the device checked first, not blamed on the file
    module = load_module(ckpt, map_location=check_device(device))
    module.eval()
    methods = check_methods(module.net, methods or default_methods(module.net))
    fs = float(module.sample_rate)
    selection = select_records(Path(path))
    if records:
        unknown = sorted(set(records) - selection.found)
        if unknown:
            raise XECGError(f"{path}: no record {', '.join(unknown)}")
        selection = selection.only(records)
    if limit is not None:
        selection = selection.only(selection.ids[:limit])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    removed = remove_previous(out, "explain", {"skipped.csv": "file,reason"})
    if removed:
        print(f"{out}: removed what an earlier `xecg explain` wrote there ({removed})")
    written, skipped = [], []
    for rec in records_at_rate(selection, fs, skipped, "explain"):
        shown = window_start(rec.length, fs, window)
        if window > 0 and shown != window:  # clamped: say so, the page is not what was asked
            tqdm.write(f"{rec.id}: --window {window:g} s lies past its last 10 s "
                       f"({rec.length / fs:.1f} s record); shown from {shown:.1f} s")
        result = module.predict_record(torch.as_tensor(rec.signal))
        for method in methods:
            fig, _ = explanation_figure(module, rec.signal, fs, rec.id, rec.label_names, method,
                                        start_s=window, evidence=rec.evidence, out=result,
                                        ig_steps=ig_steps)
            # Inside DIR whatever the record id holds (a path, "..").
            path_png = inside(out, output_name(rec.id, f"_{method}.png"))
            save_figure(fig, path_png, dpi=ECG_DPI, writer="xecg explain")
            written.append(path_png)
    write_skipped(out, skipped)
    if not written:
        raise nothing_done(Path(path), out, skipped, "explained")
    print(f"{len(written)} pages written, records {selection.count_skipped(skipped)} -> {out}")
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="xecg explain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", type=Path, nargs="?",
                   help="a record file, a dataset folder (any layout) or a store")
    p.add_argument("--ckpt", required=True, type=Path, help="checkpoint of a trained run")
    p.add_argument("--out", required=True, type=Path, help="folder for the PNGs or the scores")
    p.add_argument("--method", nargs="+", choices=METHODS, default=None, metavar="METHOD",
                   help=f"one or more of {', '.join(METHODS)}")
    p.add_argument("--window", type=start_seconds, default=0.0, metavar="START_SECONDS",
                   help="show 10 s from here (default 0: the first 10 s; past the record's "
                        "last 10 s: those)")
    p.add_argument("--evaluate", type=Path, default=None, metavar="STORE",
                   help="score maps against the evidence intervals of this store's records")
    p.add_argument("--records", nargs="+", default=None, metavar="ID",
                   help="pages: only these record ids")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="only the first N records (with --evaluate: N records with evidence)")
    p.add_argument("--no-randomised", dest="randomised", action="store_false",
                   help="--evaluate: skip the randomly initialised network")
    p.add_argument("--ig-steps", type=positive_int, default=None,
                   help="Integrated Gradients steps (default 32 for pages, 16 for --evaluate)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if (args.path is None) == (args.evaluate is None):
        p.error("give either PATH (pages) or --evaluate STORE (scores)")
    from xecg.errors import XECGError, error_exit

    try:
        if args.evaluate is not None:
            from xecg.explain.evaluate import evaluate_command

            evaluate_command(args.ckpt, args.evaluate, args.out, args.method, args.randomised,
                             args.limit, args.ig_steps or 16, args.bootstrap, args.device)
        else:
            explain_records(args.ckpt, args.path, args.out, args.method, args.window,
                            args.device, args.ig_steps or 32, args.records, args.limit)
    except (XECGError, FileNotFoundError) as err:
        return error_exit(err)
    return 0
