"""The LightningModule: a backbone from :mod:`xecg.models`, the xECGNet loss, per-stage metrics."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MaxMetric

from xecg.classes import NUM_CLASSES, NUM_LEADS
from xecg.data.datamodule import average_by_group
from xecg.losses import build_loss
from xecg.metrics import ECGMetrics, tune_thresholds
from xecg.models import build_model

Stage = Literal["train", "val", "test"]


class XECGModule(L.LightningModule):
    """Trains and evaluates xECGNet (``model="xecgnet"``) or a baseline (``abn``: gamma forced to 0;
    ``cnn``: no attention branch).

    Batches are the DataModule's dicts: ``x`` B x 12 x T, ``y`` B x 9, ``mask`` B x T, and for
    sliding-window evaluation ``group`` (window -> record), whose probabilities are averaged per
    record before the metrics see them.

    Args:
        model, width, activation: the network (see :func:`xecg.models.build_model`).
        gamma, reference, distance, detach_reference, batch_reduction: the loss
            (see :class:`xecg.losses.XECGLoss`); gamma defaults to the paper's 0.01 for
            ``xecgnet`` and 0 for ``abn`` (which refuses any other value).
        lr, weight_decay, scheduler: Adam and an optional cosine or plateau schedule.
        threshold: probability threshold for a label (validation, and test unless tuned).
        tune_thresholds: tune per-class thresholds on the validation split; applied at test only.
        mask_padding: pass the padding mask to the model (pooling and loss ignore padding); off
            reproduces the authors, whose pooling also averaged the zero padding.
    """

    def __init__(
        self,
        model: Literal["xecgnet", "abn", "cnn"] = "xecgnet",
        width: float = 1.0,
        activation: Literal["relu", "none"] = "relu",
        gamma: float | None = None,
        reference: Literal["positives", "all9"] = "positives",
        distance: Literal["l2", "mse", "l1"] = "l2",
        detach_reference: bool = False,
        batch_reduction: Literal["mean", "authors_modulo"] = "mean",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        scheduler: Literal["none", "cosine", "plateau"] = "none",
        threshold: float = 0.5,
        tune_thresholds: bool = False,
        mask_padding: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = build_model(model, width=width, activation=activation)
        if gamma is None:
            gamma = 0.0 if model == "abn" else 0.01
        self.criterion = build_loss(model, gamma=gamma, reference=reference, distance=distance,
                                    detach_reference=detach_reference,
                                    batch_reduction=batch_reduction)
        # One collection per stage (never shared: their states must not mix).
        self.train_metrics = ECGMetrics(with_auroc=False)
        self.val_metrics = ECGMetrics()
        self.test_metrics = ECGMetrics()
        self.best_val_micro_f1 = MaxMetric()
        # Buffers travel in checkpoints: thresholds tuned on validation, and the training split's
        # lead statistics so that `xecg predict` normalises new records the same way.
        self.register_buffer("thresholds", torch.full((NUM_CLASSES,), float(threshold)))
        self.register_buffer("lead_mean", torch.zeros(NUM_LEADS))
        self.register_buffer("lead_std", torch.ones(NUM_LEADS))
        self.register_buffer("sample_rate", torch.tensor(500.0))
        self.last_metrics: dict[str, dict[str, float]] = {}
        self._val_outputs: list[tuple[Tensor, Tensor]] = []

    def forward(self, x: Tensor, mask: Tensor | None = None):
        """x: B x 12 x T normalised; mask: B x T (True = real sample). Returns the model output."""
        return self.net(x, mask if self.hparams.mask_padding else None)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and dm is not None and getattr(dm, "mean", None) is not None:
            self.lead_mean.copy_(torch.as_tensor(dm.mean))
            self.lead_std.copy_(torch.as_tensor(dm.std))
            self.sample_rate.fill_(float(dm.store.fs))

    # ----------------------------------------------------------------------------- steps
    def _step(self, batch: dict[str, Tensor], stage: Stage) -> Tensor:
        out = self(batch["x"], batch.get("mask"))
        y = batch["y"]
        group = batch.get("group")
        y_windows = y[group] if group is not None else y
        terms = self.criterion(out, y_windows)
        probs = out.probs
        if group is not None:
            probs = average_by_group(probs, group, y.shape[0])
        thresholds = self.thresholds if stage == "test" else self.hparams.threshold
        self._metrics(stage).update(probs.detach().float(), y, thresholds)
        if stage == "val":
            self._val_outputs.append((probs.detach().float(), y.detach()))
        bs = y.shape[0]
        sync = stage != "train"  # epoch-level eval losses are averaged over processes
        self.log(f"{stage}/loss", terms.total, prog_bar=True, batch_size=bs, sync_dist=sync)
        self.log_dict({f"{stage}/bce_attention": terms.bce_attention,
                       f"{stage}/bce_perception": terms.bce_perception,
                       f"{stage}/regularizer": terms.regularizer},
                      batch_size=bs, sync_dist=sync)
        return terms.total

    def _metrics(self, stage: Stage) -> ECGMetrics:
        return getattr(self, f"{stage}_metrics")

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        out = self(batch["x"], batch.get("mask"))
        probs = out.probs
        if batch.get("group") is not None:
            probs = average_by_group(probs, batch["group"], batch["y"].shape[0])
        return {"index": batch["index"], "probs": probs, "labels": probs >= self.thresholds}

    # ------------------------------------------------------------------------ epoch ends
    def _epoch_end(self, stage: Stage) -> dict[str, Tensor]:
        values = self._metrics(stage).compute()
        # New states must be ordinary tensors: `trainer.validate` runs under inference mode, and
        # states made there cannot be updated in place by a later fit's validation (no_grad).
        with torch.inference_mode(False):
            self._metrics(stage).reset()
        # torchmetrics already reduced the states across processes, so every rank holds the same
        # values; sync_dist (a mean of equal numbers) only spares Lightning's DDP warning.
        self.log_dict({f"{stage}/{k}": v for k, v in values.items() if k != "micro_f1"},
                      sync_dist=True)
        self.log(f"{stage}/micro_f1", values["micro_f1"], prog_bar=stage != "train",
                 sync_dist=True)
        self.last_metrics[stage] = {k: float(v) for k, v in values.items()}
        return values

    def on_train_epoch_end(self) -> None:
        self._epoch_end("train")

    def on_validation_epoch_end(self) -> None:
        values = self._epoch_end("val")
        if not self.trainer.sanity_checking:
            self.best_val_micro_f1.update(values["micro_f1"])
            self.log("val/micro_f1_best", self.best_val_micro_f1.compute(), prog_bar=True)
            if self.hparams.tune_thresholds and self._val_outputs:
                probs = torch.cat([p for p, _ in self._val_outputs])
                target = torch.cat([t for _, t in self._val_outputs])
                self.thresholds.copy_(tune_thresholds(self._gather_rows(probs),
                                                      self._gather_rows(target)))
        self._val_outputs.clear()

    def _gather_rows(self, rows: Tensor) -> Tensor:
        """``rows`` (N x ...) of every process, concatenated. Processes may hold different N (the
        DataModule deals validation records out unevenly) but all_gather needs equal shapes: pad
        to the largest N, gather, and drop each process's padding."""
        counts = self.all_gather(torch.tensor(len(rows), device=rows.device))
        if counts.dim() == 0:  # one process
            return rows
        padded = rows.new_zeros((int(counts.max()), *rows.shape[1:]))
        padded[:len(rows)] = rows
        gathered = self.all_gather(padded)  # processes x max N x ...
        return torch.cat([g[:n] for g, n in zip(gathered, counts.tolist())])

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    # ------------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr,
                               weight_decay=self.hparams.weight_decay)
        if self.hparams.scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                opt, T_max=max(1, self.trainer.max_epochs or 1))
            return {"optimizer": opt, "lr_scheduler": sched}
        if self.hparams.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5,
                                                               patience=10)
            return {"optimizer": opt,
                    "lr_scheduler": {"scheduler": sched, "monitor": "val/micro_f1"}}
        return opt

    # ------------------------------------------------------------------------ one record
    @torch.no_grad()
    def predict_record(self, signal: Tensor) -> dict[str, Tensor]:
        """Run one whole record ``12 x N`` (mV) through the model in eval mode.

        The signal must be at :attr:`sample_rate` (the training store's rate). Normalises with
        the training split's lead statistics held in the checkpoint. Returns
        ``probs`` (9,), ``labels`` (9,) bool, ``attention`` (T',) or None and ``response_maps``
        (9 x T') or None.
        """
        was_training = self.training
        self.eval()
        x = torch.as_tensor(signal, dtype=torch.float32, device=self.lead_mean.device)
        x = (x - self.lead_mean[:, None]) / self.lead_std[:, None]
        out = self(x[None])
        self.train(was_training)
        probs = out.probs[0]
        return {
            "probs": probs,
            "labels": probs >= self.thresholds,
            "attention": None if out.attention is None else out.attention[0, 0],
            "response_maps": None if out.response_maps is None else out.response_maps[0],
        }
