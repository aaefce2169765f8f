"""``xecg predict --ckpt CKPT PATH --out DIR``: label records and draw their attention.

PATH is one record file, a folder in any supported layout, or a prepared store (``xecg
prepare``). Probabilities are the test stage's: the same windows and averaging, read from the
checkpoint (:meth:`xecg.module.XECGModule.predict_record`). Writes ``DIR/predictions.csv``
(record, probability per class, predicted and, where known, true labels) and one PNG per record
with the 12 leads and the attention map over them. Unreadable records are named and skipped.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from tqdm import tqdm

from xecg.atomic import write_csv
from xecg.callbacks import render_attention
from xecg.classes import CLASSES
from xecg.data.prepare import resample
from xecg.data.readers import DatasetError, open_dataset
from xecg.data.record import RecordError
from xecg.data.store import Store, is_store
from xecg.module import XECGModule
from xecg.plots import ECG_DPI, save_figure


class _StoreReader:
    """A prepared store seen through the reader API that :func:`predict` uses."""

    def __init__(self, path: Path):
        self.store = Store(path)
        self.records = list(self.store.ids)

    def load_record(self, rec_id: str, require_labels: bool = False):
        return self.store.record(self.store.index_of(rec_id))


def _reader_and_ids(path: Path):
    """The dataset reader for PATH and the record ids to predict (one, for a file)."""
    if is_store(path):
        reader = _StoreReader(path)
        return reader, reader.records
    if path.is_file():
        reader = open_dataset(path.parent, require_reference=False)
        if path.stem not in reader.records:
            raise DatasetError(f"{path}: not a record file of a supported layout")
        return reader, [path.stem]
    reader = open_dataset(path, require_reference=False)
    return reader, reader.records


def predict(ckpt: str | os.PathLike, path: str | os.PathLike, out: str | os.PathLike,
            images: bool = True, device: str = "cpu") -> Path:
    """Predict every record under ``path`` with the checkpoint; returns the CSV's path."""
    module = XECGModule.load_from_checkpoint(ckpt, map_location=device)
    module.eval()
    fs_model = float(module.sample_rate)
    reader, ids = _reader_and_ids(Path(path))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header = ["record", *[f"p_{c}" for c in CLASSES], "predicted", "true", "source"]
    rows, skipped = [], []
    for rec_id in tqdm(ids, desc="predict", unit="rec"):
        try:
            rec = reader.load_record(rec_id, require_labels=False)
        except RecordError as err:
            tqdm.write(f"skipped {err}")
            skipped.append((err.path, err.problem))
            continue
        signal = rec.signal if rec.fs == fs_model else resample(rec.signal, rec.fs, fs_model)
        result = module.predict_record(torch.as_tensor(signal))
        if images:
            fig, _ = render_attention(module, signal, fs_model, rec.id, rec.label_names,
                                      out=result)
            save_figure(fig, out / f"{rec.id}.png", dpi=ECG_DPI)
        probs = result["probs"].float().cpu().tolist()
        predicted = [c for c, on in zip(CLASSES, result["labels"].tolist()) if on]
        rows.append([rec.id, *[f"{p:.4f}" for p in probs], ";".join(predicted),
                     ";".join(rec.label_names), rec.source])
    csv_path = out / "predictions.csv"
    write_csv(csv_path, header, rows)
    if skipped:
        write_csv(out / "skipped.csv", ["file", "reason"], skipped)
    print(f"{len(rows)} records predicted, {len(skipped)} skipped -> {csv_path}")
    return csv_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="xecg predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", type=Path, help="a record file or a dataset folder (any layout)")
    p.add_argument("--ckpt", required=True, type=Path, help="checkpoint of a trained run")
    p.add_argument("--out", required=True, type=Path, help="folder for the CSV and images")
    p.add_argument("--no-images", dest="images", action="store_false",
                   help="write only predictions.csv")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    try:
        predict(args.ckpt, args.path, args.out, images=args.images, device=args.device)
    except (DatasetError, FileNotFoundError) as err:
        print(f"xecg predict: {err}")
        return 2
    return 0
