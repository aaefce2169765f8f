"""``xecg evaluate --ckpt CKPT [--ckpt CKPT ...] PATH [--out DIR]``: the test stage's metrics
on any labelled data, of one checkpoint or of an ensemble of several.

PATH is a dataset folder in any supported layout, one record file, or a prepared store
(``--split FILE`` keeps only the records of one of its splits, ``--subset``, default ``test``;
``--subset`` alone: that subset of the split the checkpoint was trained on, as it recorded it).
Records the checkpoint trained on are counted and warned about: their numbers are not held out.
Every record goes through :meth:`xecg.module.XECGModule.predict_record`: the checkpoint's
windows, normalisation and averaging, so the probabilities are those of ``xecg test``. The
metrics are :class:`xecg.metrics.ECGMetrics` updated exactly as the test stage updates them
(the checkpoint's thresholds), plus AUROC per class (``auroc_<class>``: n/a, ``null`` in
metrics.json, where the data hold no positive or no negative of the class). Records at
another rate are resampled to the model's; records with no label among the nine are skipped
and counted, and so are unreadable ones. Prints a table and, with ``--out``, writes
``DIR/metrics.json`` and ``DIR/predictions.csv``.

Several checkpoints (runs of one recipe with other seeds, as ``make sim2real`` trains) are
evaluated as one ensemble (:mod:`xecg.ensemble`: the mean of the members' probabilities, at
the mean of their thresholds).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch
from torchmetrics.functional.classification import multilabel_auroc

from xecg import ensemble
from xecg.atomic import json_text, write_atomic, write_csv
from xecg.callbacks import format_report
from xecg.classes import CLASSES, NUM_CLASSES
from xecg.data.readers import DatasetError
from xecg.data.splits import SPLITS, load_split, missing_records, split_changes
from xecg.ensemble import Checkpoints
from xecg.errors import XECGError, error_exit
from xecg.guards import read_checkpoint
from xecg.metrics import ECGMetrics, interval_report
from xecg.records import check_device, records_at_rate, select_records, write_skipped


def trained_split(ckpts: list[Path]) -> tuple[dict[str, list[str]], str] | None:
    """The record ids of each subset of the split the checkpoints were trained on and the split
    file's name, from their DataModule state (saved since 2026-11-28), or None where one does
    not record it. Members trained on different splits are an error: their subsets differ."""
    found = []
    for ckpt in ckpts:
        state = read_checkpoint(ckpt).get("CPSCDataModule") or {}
        records = state.get("split_records")
        if not isinstance(records, dict):
            return None
        found.append(({k: list(records.get(k, [])) for k in SPLITS}, str(state.get("split"))))
    if any(split_changes(found[0][0], other) for other, _ in found[1:]):
        raise DatasetError("the checkpoints were trained on different splits: give the one to "
                           "evaluate with --split FILE")
    return found[0]


def evaluate(ckpt: Checkpoints, path: str | os.PathLike, out: str | os.PathLike | None = None,
             split: str | os.PathLike | None = None, subset: str | None = None,
             device: str = "cpu", progress: bool = True, quiet: bool = False) -> dict:
    """Metrics of checkpoint ``ckpt`` (or of the ensemble of several) on the labelled records
    under ``path``.

    Returns the dict written to ``metrics.json``: ``evaluate`` (the flat metrics), ``records``,
    ``skipped_no_label``, ``skipped_unreadable``, ``thresholds``, ``checkpoints`` (and
    ``checkpoint`` for one), ``protocol`` (with ``members``, the ensemble's size),
    ``training_records`` (how many of the records the checkpoint trained on, where it records
    its split).

    ``split``: a split file, whose ``subset`` (default ``test``) is evaluated; ``subset`` alone:
    that subset of the split the checkpoints recorded.
    """
    ckpts = ensemble.checkpoint_list(ckpt)
    modules = ensemble.load_members(ckpts, check_device(device))
    module = modules[0]
    fs_model = float(module.sample_rate)
    selection = select_records(Path(path))
    trained = trained_split(ckpts)
    if split is not None or subset is not None:
        subset = subset or "test"
        if split is not None:
            wanted = load_split(split)[subset]
        elif trained is None:
            raise DatasetError(f"--subset {subset}: {ckpts[0]} does not record the split it "
                               "was trained on (a checkpoint before 2026-11-28): give the split "
                               "file with --split FILE")
        else:
            wanted, split = trained[0][subset], f"{trained[1]} (as the checkpoint recorded it)"
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
        note = getattr(selection.reader, "missing_reference", None)  # an ICBEB folder's
        raise DatasetError(f"{path}: no record with a label among the nine classes "
                           f"({len(no_label)} without one, {len(unreadable)} unreadable)"
                           + (f"; {note}" if note else ""))
    # Records the checkpoint learnt from: their numbers are not those of unseen data.
    seen = set(trained[0]["train"]) if trained is not None else set()
    training_records = sum(row[0] in seen for row in rows)
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
        **({"training_records": training_records} if trained is not None else {}),
        "thresholds": [round(float(t), 4) for t in thresholds],
        "protocol": {"dataset": str(path), "split": f"{split}:{subset}" if split else "all",
                     **module.eval_windows, "records": len(rows), "members": len(ckpts)},
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "metrics.json", json_text(result))
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
    if training_records:
        print(f"warning: {training_records} of the {len(rows)} records evaluated are training "
              "records of the checkpoint: these numbers are not held out (--subset test "
              "evaluates the test records of its split)", file=sys.stderr)
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
    p.add_argument("--subset", default=None, choices=SPLITS,
                   help="the records of this subset of --split (default test), or without "
                        "--split of the split the checkpoint was trained on")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    try:
        evaluate(args.ckpt, args.path, args.out, split=args.split, subset=args.subset,
                 device=args.device)
    except (XECGError, DatasetError, FileNotFoundError) as err:
        return error_exit(err)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

