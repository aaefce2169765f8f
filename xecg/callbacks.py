"""Rank-zero callbacks: attention images, per-class tables and the run's metrics.json."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from xecg.atomic import inside, output_name, write_atomic
from xecg.classes import CLASSES
from xecg.explain.figure import explanation_figure
from xecg.plots import ECG_DPI, save_figure


class SteadyProgressBar(TQDMProgressBar):
    """Lightning's tqdm progress bar, redrawn at most every ``interval`` seconds and when a bar
    reaches its end, not after every step. Lightning's default (``refresh_rate`` 1) redraws
    after each step: about 0.5 ms of the training process a step on this project's CPU
    (cProfile of a Lightning fit at width 0.0625, 192 steps of 12 ms: tqdm's
    ``on_train_batch_end`` took 97 ms), which on a GPU, 30 and more steps a second, is host
    time the step waits for and a redraw nobody can read. ``xecg train`` uses it wherever the
    default bar would be (README "What `make train` does"; ``tests/benchmarks/progress_bar.py``
    measures it)."""

    def __init__(self, interval: float = 0.2, refresh_rate: int = 1, **kwargs) -> None:
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self.interval = interval
        self._drawn = -math.inf

    def _should_update(self, current: int, total: int) -> bool:
        if not super()._should_update(current, total):
            return False
        now = time.monotonic()
        if current == total or now - self._drawn >= self.interval:
            self._drawn = now
            return True
        return False


def _wandb(trainer: L.Trainer) -> WandbLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


def _run_dir(trainer: L.Trainer) -> Path:
    return Path(trainer.default_root_dir)


def render_attention(module, signal: np.ndarray, fs: float, record_id: str,
                     true_labels: list[str], evidence=(), out: dict | None = None,
                     method: str | None = None, title_note: str = ""):
    """The explanation page of one record (``12 x N`` mV): the 12-lead printout with the
    model's attention A shaded (Grad-CAM for a model without A) and one strip per predicted or
    true label, captioned with true and predicted labels
    (:func:`xecg.explain.figure.explanation_figure`). ``out``: the record's
    ``module.predict_record`` result, if already computed. ``title_note``: said beside the
    predicted labels. Returns (figure, caption)."""
    return explanation_figure(module, signal, fs, record_id, true_labels, method,
                              evidence=evidence, out=out, title_note=title_note)


def pick_examples(labels: np.ndarray, k: int) -> np.ndarray:
    """``k`` positions of rows of ``labels`` (N x 9 multi-hot) to draw: multilabel records
    first, one per distinct label combination before any repeats, then single-label records."""
    on = np.asarray(labels) > 0.5
    seen: set[bytes] = set()
    first, rest = [], []
    for i, y in enumerate(on):
        multi = y.sum() >= 2
        if multi and y.tobytes() not in seen:
            first.append(i)
        else:
            rest.append((not multi, i))  # repeated combinations before single-label records
        seen.add(y.tobytes())
    picked = first + [i for _, i in sorted(rest)]
    return np.array(picked[:k], dtype=np.int64)


class AttentionImages(L.Callback):
    """Every ``every_n_epochs`` validation epochs, draws a fixed set of validation records (the
    same ones every time, multilabel ones first) as explanation pages (:func:`render_attention`:
    A shaded over the 12 leads, R of each predicted or true label below); saves PNGs under
    ``RUN/attention/`` and logs them to W&B."""

    def __init__(self, every_n_epochs: int = 5, num_records: int = 4):
        if every_n_epochs < 1:  # a config error, before a run starts (the CLI's one line)
            raise ValueError(f"attention.every_n_epochs must be at least 1, got {every_n_epochs}"
                             " (attention.num_records: 0 draws no pages)")
        self.every_n_epochs = every_n_epochs
        self.num_records = num_records
        self._records: np.ndarray | None = None

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or self.num_records <= 0:
            return
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if not (epoch % self.every_n_epochs == 0 or last or trainer.should_stop):
            return
        dm = trainer.datamodule
        if self._records is None:  # the same records every time, chosen once
            val = dm.indices["val"]
            self._records = val[pick_examples(dm.store.labels[val], self.num_records)]
        out_dir = _run_dir(trainer) / "attention"
        out_dir.mkdir(parents=True, exist_ok=True)
        images, captions = [], []
        for i in self._records:
            rec = dm.raw_store.record(int(i))  # as recorded: predict_record band-passes it
            fig, caption = render_attention(pl_module, rec.signal, rec.fs, rec.id,
                                            rec.label_names, rec.evidence)
            path = inside(out_dir, output_name(f"{_evaluated(trainer, 'epoch{:03d}')}_{rec.id}",
                                               ".png"))
            save_figure(fig, path, dpi=ECG_DPI)
            images.append(str(path))
            captions.append(caption)
        logger = _wandb(trainer)
        if logger is not None and images:
            logger.log_image(key="attention", images=images, caption=captions)


class MetricsReport(L.Callback):
    """Writes ``RUN/metrics.json`` (final validation and test metrics with the protocol they were
    measured under), prints a per-class table after testing and logs it to W&B as a table."""

    def __init__(self, protocol: dict | None = None, meta: dict | None = None):
        """``protocol``: fields reported beside the data protocol (the experiment's name);
        ``meta``: top-level fields of metrics.json, e.g. an ablation's ``variant``."""
        self.protocol = dict(protocol or {})
        self.meta = dict(meta or {})

    def _update_file(self, trainer: L.Trainer, pl_module, stage: str) -> dict:
        path = _run_dir(trainer) / "metrics.json"
        data = json.loads(path.read_text()) if path.is_file() else {}
        dm = trainer.datamodule
        data.update(self.meta)
        data["protocol"] = {**self.protocol, **_datamodule_protocol(dm)}
        if "PL_GLOBAL_SEED" in os.environ:  # set by seed_everything: the run's seed
            data["seed"] = int(os.environ["PL_GLOBAL_SEED"])
        data["model"] = dict(pl_module.hparams)
        settings = getattr(dm, "loader_settings", None)
        if callable(settings):  # chosen for the machine at run time: not in config.yaml
            data["loader"] = settings()
        data[stage] = pl_module.last_metrics.get(stage, {})
        intervals = getattr(pl_module, "last_intervals", {}).get(stage)
        if intervals is not None:
            data.setdefault("intervals", {})[stage] = intervals
        data[f"{stage}_of"] = _evaluated(trainer, "fit epoch {}")
        if trainer.state.fn == "fit":  # until on_fit_end says otherwise
            data["fit_finished"] = False
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and getattr(ckpt, "best_model_path", ""):
            data["best_checkpoint"] = ckpt.best_model_path
            score = ckpt.best_model_score  # a tensor; 0.0 is a score, None is none
            data["best_checkpoint_score"] = {"monitor": ckpt.monitor,
                                             "value": None if score is None else float(score)}
        best = getattr(pl_module, "best_val_micro_f1", None)
        if best is not None and best.update_called:
            # The fit's best validation micro-F1 whatever the checkpoint monitors (before
            # 2026-11-28: the checkpoint's score, e.g. val/auroc under sweeps/smoke.yaml). The
            # local state: every process holds the same, and compute() would wait for the others.
            data["best_val_micro_f1"] = float(best.max_value)
        data["thresholds"] = [round(float(t), 4) for t in pl_module.thresholds]
        write_atomic(path, json.dumps(data, indent=2) + "\n")
        return data

    def _table(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        values = pl_module.last_metrics.get(stage) or {}
        if not all(f"f1_{c}" in values for c in CLASSES):
            return  # this stage never ran (only explanation scores may be there)
        logger = _wandb(trainer)
        rows = [[c, values[f"f1_{c}"]] for c in CLASSES]
        if logger is not None:
            logger.log_table(key=f"{stage}/per_class_f1", columns=["class", "F1"], data=rows)

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self._update_file(trainer, pl_module, "val")

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        self._mark_fit(trainer, finished=False)

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module) -> None:
        self._mark_fit(trainer, finished=True)
        self._table(trainer, pl_module, "val")

    def _mark_fit(self, trainer: L.Trainer, finished: bool) -> None:
        """``fit_finished`` in metrics.json: false from a fit's start until it ends (its last
        epoch or early stopping), so a run killed or pruned mid-fit, whose ``val`` metrics are
        of some epoch, is told apart (``xecg compare --split val`` leaves it out)."""
        path = _run_dir(trainer) / "metrics.json"
        if not path.is_file() and not finished:
            return  # written at the first validation, which reads the mark from here
        data = json.loads(path.read_text()) if path.is_file() else {}
        data["fit_finished"] = finished
        write_atomic(path, json.dumps(data, indent=2) + "\n")

    @rank_zero_only
    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        data = self._update_file(trainer, pl_module, "test")
        self._table(trainer, pl_module, "test")
        print(format_report(data["test"], data["protocol"], title="test",
                            intervals=data.get("intervals", {}).get("test")))


def _evaluated(trainer: L.Trainer, during_fit: str) -> str:
    """What the metrics or images describe: the epoch being fitted, or the checkpoint that a
    separate validate/test loaded (e.g. ``best-epoch015``)."""
    if trainer.state.fn == "fit":
        return during_fit.format(trainer.current_epoch)
    ckpt = getattr(trainer, "ckpt_path", None)
    return Path(ckpt).stem if ckpt else f"{trainer.state.fn}-epoch{trainer.current_epoch:03d}"


def _datamodule_protocol(dm) -> dict:
    if dm is None:
        return {}
    describe = getattr(dm, "describe", None)
    if callable(describe):
        return describe()
    return {k: v for k, v in getattr(dm, "hparams", {}).items()}


#: The interval report's count of the records a subset accuracy rests on.
_RECORD_COUNTS = {"subset_acc_multi": "records_multi", "subset_acc_single": "records_single"}


def format_report(metrics: dict[str, float], protocol: dict, title: str = "test",
                  intervals: dict | None = None) -> str:
    """A per-class F1 table plus the paper's summary numbers, with the protocol beside them and,
    where ``intervals`` (:func:`xecg.metrics.interval_report`) has one, each number's bootstrap
    interval over the records."""
    lines = [f"\n{title} metrics ({_protocol_line(protocol)})",
             f"{'class':<8} {'F1':>6}"]
    lines += [f"{c:<8} {metrics.get(f'f1_{c}', float('nan')):>6.3f}" for c in CLASSES]
    lines.append("-" * 15)
    for key, label in (("micro_f1", "micro-F1"), ("macro_f1", "macro-F1"),
                       ("subset_acc", "subset acc (all)"),
                       ("subset_acc_multi", "subset acc (multilabel)"),
                       ("subset_acc_single", "subset acc (single-label)"),
                       ("auroc", "macro AUROC"), ("cpsc_f1", "CPSC scorer F1")):
        if key == "auroc":  # macro over the classes where it is defined (per-class known)
            defined = [c for c in CLASSES
                       if f"auroc_{c}" in metrics and not math.isnan(metrics[f"auroc_{c}"])]
            if any(f"auroc_{c}" in metrics for c in CLASSES) and len(defined) < len(CLASSES):
                label = f"macro AUROC ({len(defined)}/{len(CLASSES)} classes)"
        if key in metrics:
            interval = (intervals or {}).get(key)
            count = (intervals or {}).get(_RECORD_COUNTS.get(key, ""))
            lines.append(f"{label:<26} {metrics[key]:.3f}"
                         + (f"  [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")
                         + (f"  {count:,} records" if count is not None else ""))
    if intervals:
        lines.append(f"[ ]: {intervals['level']:.0%} bootstrap interval over the "
                     f"{intervals['records']:,} records ({intervals['resamples']:,} resamples)")
    return "\n".join(lines)


def _protocol_line(protocol: dict) -> str:
    keys = ("dataset", "split", "policy", "length", "records")
    return ", ".join(f"{k} {protocol[k]}" for k in keys if k in protocol) or "protocol unknown"
