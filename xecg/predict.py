"""``xecg predict --ckpt CKPT PATH --out DIR``: label records and draw their attention.

PATH is one record file, a folder in any supported layout, or a prepared store (``xecg
prepare``). Probabilities are the test stage's: the same windows and averaging, read from the
checkpoint (:meth:`xecg.module.XECGModule.predict_record`). Writes ``DIR/predictions.csv``
(record, probability per class, predicted and, where known, true labels) and one PNG per record
with the 12 leads and the attention map over them. Unreadable records are named and skipped;
when every one is, the command stops with exit 2 (``skipped.csv`` still written). What an earlier
``xecg predict`` wrote in DIR (its CSVs and pages) is removed first, so DIR holds this run's.
``--ckpt`` given again (``--ckpt A --ckpt B``): the ensemble's probabilities and labels
(:mod:`xecg.ensemble`), with the maps of the first checkpoint, as each page says.

The checkpoint is loaded with ``weights_only=True`` (:func:`xecg.guards.load_module`), and every
file is written inside DIR whatever a record id holds (:func:`xecg.atomic.output_name`).
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import torch

from xecg import ensemble
from xecg.atomic import inside, output_name, write_csv
from xecg.callbacks import render_attention
from xecg.classes import CLASSES
from xecg.ensemble import Checkpoints
from xecg.errors import WriteError, XECGError, error_exit
from xecg.plots import ECG_DPI, save_figure
from xecg.records import (
    check_device,
    nothing_done,
    records_at_rate,
    remove_previous,
    select_records,
    write_skipped,
)

#: The first line of each CSV this command writes: how an earlier run's files are known.
HEADERS = {"predictions.csv": "record,p_", "skipped.csv": "file,reason"}


def predict(ckpt: Checkpoints, path: str | os.PathLike, out: str | os.PathLike,
            images: bool = True, device: str = "cpu") -> Path:
    """Predict every record under ``path`` with the checkpoint (or the ensemble of several);
    returns the CSV's path. Raises :class:`xecg.records.NothingDone` (after writing
    ``skipped.csv``) when no record could be predicted."""
    modules = ensemble.load_members(ensemble.checkpoint_list(ckpt), check_device(device))
    module = modules[0]  # the maps' (and with one checkpoint, everything's)
    maps_note = ("" if len(modules) == 1 else
                 f"ensemble of {len(modules)} checkpoints; maps: the first's")
    fs_model = float(module.sample_rate)
    selection = select_records(Path(path))
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        removed = remove_previous(out, "predict", HEADERS, _pages_listed(out))
    except OSError as err:
        if isinstance(err, WriteError):
            raise
        raise WriteError.of(out, err, "nothing was predicted") from err
    if removed:
        print(f"{out}: removed what an earlier `xecg predict` wrote there ({removed})")
    header = ["record", *[f"p_{c}" for c in CLASSES], "predicted", "true", "source"]
    rows, skipped = [], []
    for rec in records_at_rate(selection, fs_model, skipped, "predict"):
        result = ensemble.predict_record(modules, torch.as_tensor(rec.signal))
        if images:
            fig, _ = render_attention(module, rec.signal, fs_model, rec.id, rec.label_names,
                                      out=result, title_note=maps_note)
            try:
                save_figure(fig, inside(out, output_name(rec.id, ".png")), dpi=ECG_DPI,
                            writer="xecg predict")
            except OSError as err:
                if isinstance(err, WriteError):
                    raise
                raise WriteError.of(out / output_name(rec.id, ".png"), err) from err
        probs = result["probs"].float().cpu().tolist()
        predicted = [c for c, on in zip(CLASSES, result["labels"].tolist()) if on]
        rows.append([rec.id, *[f"{p:.4f}" for p in probs], ";".join(predicted),
                     ";".join(rec.label_names), rec.source])
    write_skipped(out, skipped)
    if not rows:  # an empty predictions.csv would pass for a result
        raise nothing_done(Path(path), out, skipped, "predicted")
    csv_path = out / "predictions.csv"
    write_csv(csv_path, header, rows)
    print(f"{len(rows)} records predicted, {selection.count_skipped(skipped)} -> {csv_path}")
    return csv_path


def _pages_listed(out: Path) -> list[str]:
    """The page names of the records in an earlier ``out/predictions.csv``: the pages of an
    xecg that did not mark its PNGs as its own."""
    try:
        with open(out / "predictions.csv", newline="") as f:
            if not f.readline().startswith(HEADERS["predictions.csv"]):
                return []
            f.seek(0)
            return [output_name(row["record"], ".png") for row in csv.DictReader(f)
                    if row.get("record")]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="xecg predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", type=Path, help="a record file or a dataset folder (any layout)")
    p.add_argument("--ckpt", required=True, type=Path, action="append",
                   help="checkpoint of a trained run; given again (--ckpt A --ckpt B): their "
                        "ensemble's probabilities, with the first one's maps")
    p.add_argument("--out", required=True, type=Path, help="folder for the CSV and images")
    p.add_argument("--no-images", dest="images", action="store_false",
                   help="write only predictions.csv")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    try:
        predict(args.ckpt, args.path, args.out, images=args.images, device=args.device)
    except (XECGError, FileNotFoundError) as err:
        return error_exit(err)
    return 0
