"""``xecg evaluate --ckpt CKPT [--ckpt CKPT ...] PATH [--out DIR]``: the test stage's metrics
on any labelled data, of one checkpoint or of an ensemble of several.

PATH is a dataset folder in any supported layout, one record file, or a prepared store
(``--split FILE`` keeps only the records of one of its splits, ``--subset``, default ``test``).
Every record goes through :meth:`xecg.module.XECGModule.predict_record`: the checkpoint's
windows, normalisation and averaging, so the probabilities are those of ``xecg test``. The
metrics are :class:`xecg.metrics.ECGMetrics` updated exactly as the test stage updates them
(the checkpoint's thresholds), plus AUROC per class (``auroc_<class>``, NaN where the data hold
no positive or no negative of the class). Records at another rate are resampled to the
model's; records with no label among the nine are skipped and counted, and so are unreadable
ones. Prints a table and, with ``--out``, writes ``DIR/metrics.json`` and
``DIR/predictions.csv``.

Several checkpoints (runs of one recipe with other seeds, as ``make sim2real`` trains) are
evaluated as one ensemble (:mod:`xecg.ensemble`: the mean of the members' probabilities, at
the mean of their thresholds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch
from torchmetrics.functional.classification import multilabel_auroc

from xecg import ensemble
from xecg.atomic import write_atomic, write_csv
from xecg.callbacks import format_report
from xecg.classes import CLASSES, NUM_CLASSES
from xecg.data.readers import DatasetError
from xecg.data.splits import load_split, missing_records
from xecg.ensemble import Checkpoints
from xecg.errors import error_exit
from xecg.metrics import ECGMetrics, interval_report
from xecg.records import records_at_rate, select_records, write_skipped


def evaluate(ckpt: Checkpoints, path: str | os.PathLike, out: str | os.PathLike | None = None,
             split: str | os.PathLike | None = None, subset: str = "test", device: str = "cpu",
             progress: bool = True, quiet: bool = False) -> dict:
    """Metrics of checkpoint ``ckpt`` (or of the ensemble of several) on the labelled records
    under ``path``.

    Returns the dict written to ``metrics.json``: ``evaluate`` (the flat metrics), ``records``,
    ``skipped_no_label``, ``skipped_unreadable``, ``thresholds``, ``checkpoints`` (and
    ``checkpoint`` for one), ``protocol`` (with ``members``, the ensemble's size).
    """
    ckpts = ensemble.checkpoint_list(ckpt)
    modules = ensemble.load_members(ckpts, device)
    module = modules[0]
    fs_model = float(module.sample_rate)
    selection = select_records(Path(path))
    if split is not None:
        wanted = load_split(split)[subset]
        missing = missing_records(split, subset, wanted, selection.found, str(path))
        if missing:  # metrics titled as the split's would be those of another set of records
            raise DatasetError(f"{missing}; evaluate the data the split was made of")
        selection = selection.only(wanted)
    thresholds = ensemble.thresholds(modules)
    metrics = ECGMetrics().to(thresholds.device)
    rows, all_probs, all_targets = [], [], []
    no_label, unreadable = [], []
    for rec in records_at_rate(selection, fs_model, unreadable, "evaluate", progress,
                               no_label=no_label):
        probs = ensemble.predict_record(modules, torch.as_tensor(rec.signal))["probs"]
        probs = probs.float()[None]
        target = torch.as_tensor(rec.labels, dtype=torch.float32, device=probs.device)[None]
        # As the test stage: the record's probabilities, its multi-hot labels, the thresholds.
        metrics.update(probs, target, thresholds)
        all_probs.append(probs.cpu())
        all_targets.append(target.cpu())
        p = probs[0].cpu()
        predicted = [c for c, on in zip(CLASSES, (p >= thresholds.cpu()).tolist()) if on]
        rows.append([rec.id, *[f"{v:.6f}" for v in p.tolist()], ";".join(predicted),
                     ";".join(rec.label_names)])
    if not rows:
        raise DatasetError(f"{path}: no record with a label among the nine classes "
                           f"({len(no_label)} without one, {len(unreadable)} unreadable)")
    values = {k: float(v) for k, v in metrics.compute().items()}
    probs, targets = torch.cat(all_probs), torch.cat(all_targets)
    values.update(per_class_auroc(probs, targets))
    result = {
        "evaluate": values,
        "intervals": {"evaluate": interval_report(probs, targets, thresholds)},
        **({"checkpoint": str(ckpts[0])} if len(ckpts) == 1 else {}),
        "checkpoints": [str(c) for c in ckpts],
        "data": str(path),
        "records": len(rows),
        "positives": {c: int(n) for c, n in zip(CLASSES, targets.sum(0).tolist())},
        "skipped_no_label": len(no_label),
        "skipped_unreadable": selection.skipped_records(unreadable),
        "thresholds": [round(float(t), 4) for t in thresholds],
        "protocol": {"dataset": str(path), "split": f"{split}:{subset}" if split else "all",
                     **module.eval_windows, "records": len(rows), "members": len(ckpts)},
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "metrics.json", json.dumps(result, indent=2) + "\n")
        write_csv(out / "predictions.csv",
                  ["record", *[f"p_{c}" for c in CLASSES], "predicted", "true"], rows)
        write_skipped(out, unreadable)
    if not quiet:
        title = "evaluate" if len(ckpts) == 1 else f"evaluate, ensemble of {len(ckpts)}"
        print(format_report(values, result["protocol"], title=title,
                            intervals=result["intervals"]["evaluate"]))
        aurocs = [values[f"auroc_{c}"] for c in CLASSES]
        print(f"{'AUROC per class':<26} " + " ".join(
            f"{c} {'n/a' if math.isnan(a) else f'{a:.3f}'}" for c, a in zip(CLASSES, aurocs))
            + ("  (n/a: the records hold no positive or no negative of the class)"
               if any(math.isnan(a) for a in aurocs) else ""))
        print(f"{len(rows)} records evaluated; skipped: {len(no_label)} with no label among the "
              f"nine, unreadable or no record: {selection.count_skipped(unreadable)}"
              + (f" -> {out}" if out is not None else ""))
    return result


def per_class_auroc(probs: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """``auroc_<class>``: NaN for a class without both positives and negatives."""
    per_class = multilabel_auroc(probs, target.int(), NUM_CLASSES, average="none")
    pos = target.sum(0)
    valid = (pos > 0) & (pos < len(target))
    return {f"auroc_{c}": float(v) if ok else float("nan")
            for c, v, ok in zip(CLASSES, per_class.tolist(), valid.tolist())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="xecg evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", type=Path,
                   help="a labelled dataset folder (any layout), record file or store")
    p.add_argument("--ckpt", required=True, type=Path, action="append",
                   help="checkpoint of a trained run; given again (--ckpt A --ckpt B): their "
                        "ensemble, the mean of their probabilities and of their thresholds")
    p.add_argument("--out", type=Path, default=None, help="folder for metrics.json and the CSV")
    p.add_argument("--split", type=Path, default=None,
                   help="a split JSON: evaluate only the records of --subset")
    p.add_argument("--subset", default="test", choices=("train", "val", "test"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    try:
        evaluate(args.ckpt, args.path, args.out, split=args.split, subset=args.subset,
                 device=args.device)
    except (DatasetError, FileNotFoundError) as err:
        return error_exit(err)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

