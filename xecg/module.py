"""The LightningModule: an injected network and loss, per-stage metrics, checkpointed statistics."""

from __future__ import annotations

import os
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MaxMetric

from xecg.classes import NUM_CLASSES, NUM_LEADS
from xecg.data.filters import bandpass, check_band
from xecg.data.windows import Aggregation, aggregate_by_group, eval_windows, fill_window
from xecg.guards import read_checkpoint
from xecg.losses import LossTerms, XECGLoss, check_choice
from xecg.metrics import ECGMetrics, interval_report, tune_thresholds
from xecg.models import DOWNSAMPLE
from xecg.models.backbone import use_length_generic_layers

Stage = Literal["train", "val", "test"]


Scheduler = Literal["none", "cosine", "plateau"]
# torch.compile's modes: "reduce-overhead" replays each step as CUDA graphs (one launch for the
# step's kernels: the remedy for a step bound by the host), "max-autotune" also times kernel
# choices (longer compiles).
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
#: Lightning's instantiator for hparams that hold ``class_path``/``init_args`` dicts: with it,
#: ``XECGModule.load_from_checkpoint(path)`` rebuilds the injected network and loss.
_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"


def batch_mask(batch: dict[str, Any], keep: bool = False) -> Tensor | None:
    """The ``B x T`` padding mask to give the model, or None when the loader found no padding
    (its host-side ``padded`` flag; batches without the flag keep their mask). ``keep``: the
    batch's mask even so (a compiled network would compile a second graph for ``None``)."""
    return batch.get("mask") if keep or batch.get("padded", True) else None


def class_config(obj: object) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of an object whose class records its constructor
    arguments as ``hparams`` (every registered model and the loss): the form in which an
    experiment YAML names it and a checkpoint rebuilds it."""
    cls = type(obj)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}",
            "init_args": dict(getattr(obj, "hparams", {}))}


def load_net_weights(net: nn.Module, ckpt: str) -> tuple[float, float] | None:
    """Copy the ``net.*`` weights of checkpoint ``ckpt`` into ``net`` (same architecture: every
    tensor must match; the checkpoint's thresholds, statistics and optimiser are not used).
    Returns the band-pass its training data went through (``data.bandpass``), or None."""
    checkpoint = read_checkpoint(ckpt)
    state = checkpoint["state_dict"]
    weights = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ValueError(f"init_from {ckpt}: its network does not fit this one ({err})") from None
    return check_band(checkpoint.get("xecg_bandpass"))


class XECGModule(L.LightningModule):
    """Trains and evaluates a network from :mod:`xecg.models` with the xECGNet loss.

    Batches are the DataModule's dicts: ``x`` B x 12 x T, ``y`` B x 9, ``mask`` B x T, and for
    sliding-window evaluation ``group`` (window -> record), whose probabilities are averaged per
    record before the metrics see them.

    Args:
        net: the network, e.g. ``XECGNet(width=0.25)`` or ``CNNBaseline()`` (in YAML:
            ``model.net.class_path`` / ``init_args``).
        loss: :class:`xecg.losses.XECGLoss` (default: the paper's gamma 0.01); the ABN baseline
            is ``XECGLoss(gamma=0)``. Networks without an attention map train on plain BCE.
        lr, weight_decay, scheduler: Adam and an optional cosine or plateau schedule.
        threshold: probability threshold for a label (validation, and test unless tuned).
        tune_thresholds: tune per-class thresholds on the validation split; applied at test only.
        mask_padding: pass the padding mask to the model (pooling and loss ignore padding); off
            reproduces the authors, whose pooling also averaged the zero padding.
        init_from: a checkpoint whose network weights (its ``net.*`` entries, nothing else)
            initialise ``net`` (fine-tuning from a pretrained run). Not saved as a hyperparameter:
            a checkpoint of the new run holds its own weights and loads without the old file.
        window_aggregation: how the windows of a record (``crop`` evaluation, ``xecg predict``,
            ``evaluate``) make its probabilities: ``mean`` (the default), ``max``, the
            strongest window, which keeps a rare ectopic beat from being averaged away, or
            ``episodic``: the max for PAC and PVC (one beat makes them), the mean for the rest.
        compile: compile the network with ``torch.compile`` when a Trainer sets the model up
            (``configure_model``); with dynamic lengths under the ``bucket`` policy. Pays off on a
            GPU (the first steps wait for the compiler); checkpoints are the same either way.
        compile_mode: torch.compile's ``mode`` when ``compile`` is on: ``default``, or
            ``reduce-overhead`` (CUDA graphs: each step's kernels launched as one graph, a new
            graph per batch shape), ``max-autotune``, ``max-autotune-no-cudagraphs``.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: XECGLoss | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        scheduler: Scheduler = "none",
        threshold: float = 0.5,
        tune_thresholds: bool = False,
        mask_padding: bool = True,
        init_from: str | None = None,
        compile: bool = False,
        window_aggregation: Aggregation = "mean",
        compile_mode: CompileMode = "default",
    ):
        super().__init__()
        check_choice("scheduler", scheduler, Scheduler)
        check_choice("compile_mode", compile_mode, CompileMode)
        check_choice("window_aggregation", window_aggregation, Aggregation)
        self.net = net
        # The pretrained network's band-pass: fine-tuning data should go through the same.
        self._init_band = load_net_weights(net, init_from) if init_from else None
        self._init_from = init_from
        self.criterion = XECGLoss() if loss is None else loss
        # The parts are saved as their configurations, not as pickled modules: a checkpoint
        # rebuilds them through Lightning's instantiator whether the module was made by
        # LightningCLI or by hand.
        self.save_hyperparameters(ignore=["net", "loss", "init_from"])
        self.hparams.update(net=class_config(net), loss=class_config(self.criterion),
                            _instantiator=_INSTANTIATOR)
        # One collection per stage (never shared: their states must not mix). Evaluation's see
        # the rows of every process, gathered at the epoch's end (`_epoch_rows`), so they reduce
        # nothing themselves.
        self.train_metrics = ECGMetrics(with_auroc=False)
        self.val_metrics = ECGMetrics(sync_on_compute=False)
        self.test_metrics = ECGMetrics(sync_on_compute=False)
        self.best_val_micro_f1 = MaxMetric()
        # In checkpoints: after a resume, val/micro_f1_best still covers the epochs before it.
        self.best_val_micro_f1.persistent(True)
        # Buffers travel in checkpoints: thresholds tuned on validation, and the training split's
        # lead statistics so that `xecg predict` normalises new records the same way.
        self.register_buffer("thresholds", torch.full((NUM_CLASSES,), float(threshold)))
        self.register_buffer("lead_mean", torch.zeros(NUM_LEADS))
        self.register_buffer("lead_std", torch.ones(NUM_LEADS))
        self.register_buffer("sample_rate", torch.tensor(500.0))
        # How the test stage cuts a record into windows (the DataModule's length policy), kept in
        # checkpoints so that `xecg predict` averages the same windows. Until a fit sets it:
        # the whole record, end-padded to the network's pooling multiple.
        self.eval_windows: dict[str, Any] = {"policy": "bucket", "length": DOWNSAMPLE,
                                             "bucket_multiple": DOWNSAMPLE}
        # The band-pass (Hz) the training data went through (`data.bandpass`), or None: new
        # records get the same before any window is cut (`prepare_signal`).
        self.bandpass: tuple[float, float] | None = None
        self.last_metrics: dict[str, dict[str, float]] = {}
        # The test stage's summary metrics with 95% bootstrap intervals over its records
        # (metrics.json's `intervals`).
        self.last_intervals: dict[str, dict] = {}
        # Per-step accumulators, read at epoch ends or once in a while (see `_step`): per stage
        # the epoch's (probs, target) rows, the loss terms' sums and the records they cover.
        self._rows: dict[str, list[tuple[Tensor, Tensor]]] = {}
        self._loss_sums: dict[str, tuple[Tensor, int]] = {}

    def forward(self, x: Tensor, mask: Tensor | None = None):
        """x: B x 12 x T normalised; mask: B x T (True = real sample). Returns the model output."""
        mask = mask if self.hparams.mask_padding else None
        if self.hparams.get("compile"):
            # Batches differ in size (an epoch's last batch, a crop's windows per record): a
            # symbolic batch from the first call makes one graph, where torch would compile a
            # second when the size first changes (46 s on an H100 for the paper's network).
            for t in (x, mask):
                if t is not None:
                    torch._dynamo.maybe_mark_dynamic(t, 0)
        return self.net(x, mask)

    def use_data(self, dm) -> None:
        """Take what the module needs of a set-up ``CPSCDataModule``: its lead statistics,
        sample rate, windows (what ``compile`` and :meth:`mask_for` decide by) and band. The
        fit's ``setup`` calls it; so does a loop of one's own before ``configure_model``."""
        self.lead_mean.copy_(torch.as_tensor(dm.mean))
        self.lead_std.copy_(torch.as_tensor(dm.std))
        self.sample_rate.fill_(float(dm.store.fs))
        self.eval_windows = {"policy": dm.policy, "length": dm.length,
                             "bucket_multiple": dm.bucket_multiple}
        self.bandpass = getattr(dm, "bandpass", None)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and dm is not None and getattr(dm, "mean", None) is not None:
            self.use_data(dm)
            if self._init_from and self._init_band != self.bandpass:
                rank_zero_warn(f"init_from {self._init_from}: its network was trained on data "
                               f"band-passed to {self._init_band} Hz, this run's data.bandpass is "
                               f"{self.bandpass}: set the same band, or the pretrained filters see "
                               "other signals")

    def configure_model(self) -> None:
        """``compile``: compile the network in place (its parameter names do not change). Under
        the ``bucket`` policy every batch has its own length, so sizes are dynamic from the
        start, and the network pools and convolves in forms that keep the length symbolic
        (``models.backbone.use_length_generic_layers``), so one compiled graph serves every
        length (inductor adds one per size class of its kernel choices; tests/test_compile.py).
        Otherwise torch.compile makes a dimension dynamic once it sees it change."""
        if self.hparams.get("compile") and getattr(self.net, "_compiled_call_impl", None) is None:
            bucket = self.eval_windows.get("policy") == "bucket"
            use_length_generic_layers(self.net, bucket)
            mode = self.hparams.get("compile_mode", "default")
            # The progress bar stands still while inductor compiles: say why, once.
            rank_zero_info(f"model.compile: torch.compile (mode {mode}"
                           f"{', symbolic lengths for bucket' if bucket else ''}) compiles the "
                           "network at the first training step and again at the first "
                           "validation step (eval mode): 1-2 minutes each on an H100 at the "
                           "paper's width")
            # mode only when asked: torch takes no mode beside an explicit backend (tests)
            self.net.compile(dynamic=True if bucket else None,
                             **({} if mode == "default" else {"mode": mode}))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["xecg_eval_windows"] = dict(self.eval_windows)
        checkpoint["xecg_bandpass"] = None if self.bandpass is None else list(self.bandpass)
        if "PL_GLOBAL_SEED" in os.environ:  # set by seed_everything: a resume takes it again
            checkpoint["xecg_seed"] = int(os.environ["PL_GLOBAL_SEED"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.eval_windows = dict(checkpoint.get("xecg_eval_windows", self.eval_windows))
        self.bandpass = check_band(checkpoint.get("xecg_bandpass"))

    # ----------------------------------------------------------------------------- steps
    def mask_for(self, batch: dict[str, Tensor]) -> Tensor | None:
        """The ``B x T`` mask the network gets for a loader's batch (a loop of one's own calls
        it too). A compiled network under ``bucket`` or ``pad``, where nearly every batch is
        padded, gets it for a batch without padding too: its masked graph serves that batch,
        where ``None`` would be a second compilation (1-2 minutes on a GPU) for a handful of
        batches (e.g. the longest records, all cut to ``data.length``)."""
        keep = (bool(self.hparams.get("compile"))
                and self.eval_windows.get("policy") in ("bucket", "pad"))
        return batch_mask(batch, keep)

    # Per step, only tensor arithmetic on the device: Lightning's `self.log` costs milliseconds of
    # Python per value (and a host-device sync when a progress-bar value is read back), and a
    # torchmetrics update several more (which made a fit 13% slower than a plain loop at width
    # 0.25 on a CPU), and its input checks read the batch back (`unique`, `if`): a host-device
    # sync per step (tests/test_module.py, `HostReads`). So the loss terms are summed on the
    # device and logged as means: in training every `log_every_n_steps` (the mean since the last
    # logged step, as a CPU tensor), in evaluation once per epoch; each stage's metrics see the
    # epoch's rows once, at its end (the same states as one update per step).
    def _step(self, batch: dict[str, Tensor], stage: Stage) -> Tensor:
        out = self(batch["x"], self.mask_for(batch))
        y = batch["y"]
        group = batch.get("group")
        y_windows = y[group] if group is not None else y
        terms = self.criterion(out, y_windows)
        probs = out.probs
        if group is not None:
            probs = self._per_record(probs, group, y.shape[0])
        n = y.shape[0]
        if batch.get("repeat"):
            # Records counted elsewhere, run so that every process takes as many steps (DDP
            # training: a batch dealt out twice; evaluation: another process's record in a split
            # with fewer records than processes): no rows, and a loss of no weight in the means
            # (training still steps on its gradient, as every process must).
            probs, y, n = probs[:0], y[:0], 0
        # A copy: under CUDA graphs (compile_mode reduce-overhead) the network's outputs live in
        # the graph's memory, which its next replay overwrites.
        self._rows.setdefault(stage, []).append((probs.detach().to(torch.float32, copy=True),
                                                 y.detach()))
        self._add_loss(stage, terms, n)
        if stage == "train" and self._logs_this_step():
            self._log_loss("train", sync_dist=False)
        return terms.total

    def _add_loss(self, stage: Stage, terms, n: int) -> None:
        """Add the batch's loss terms, weighted by its ``n`` records, to the stage's sums."""
        values = torch.stack([t.detach().float() for t in terms]) * n
        if stage in self._loss_sums:
            # Out of place: sums made under inference mode (`trainer.validate`) stay usable.
            total, count = self._loss_sums[stage]
            values, n = total + values, count + n
        self._loss_sums[stage] = (values, n)

    def _log_loss(self, stage: Stage, sync_dist: bool) -> None:
        """Log the mean loss terms since the last call as ``STAGE/loss``, ``STAGE/bce_attention``,
        ``STAGE/bce_perception`` and ``STAGE/regularizer``, and start new sums."""
        sums, n = self._loss_sums.pop(stage, (None, 0))
        if sums is None:
            return
        if sync_dist and self._trainer is not None and self._trainer.world_size > 1:
            # Every process's sums and records, added by one all_reduce (a process whose records
            # were all copies adds zeros). Lightning's own mean weighted by `batch_size` averages
            # the batch sizes across processes as integers: 2 and 1 records made 1, not 1.5.
            # (new_full: a fill on the device, where new_tensor would copy from the host; cat:
            # a new tensor, which the reduction overwrites in place.)
            values = self.trainer.strategy.reduce(torch.cat([sums, sums.new_full((1,), n)]),
                                                  reduce_op="sum")
            sums, n = values[:-1], values[-1].clamp_min(1)
        means = sums / n
        if stage == "train":
            # A CPU tensor: the progress bar reads `train/loss` back after every step, which
            # would wait for the GPU each time; here it waits once per logged step.
            means = means.cpu()
        names = ("loss", *LossTerms._fields[1:])  # `total` is logged as loss (sweep checks)
        # Evaluation: the same means on every process, so sync_dist (their mean) changes
        # nothing and only spares Lightning's DDP warning.
        self.log(f"{stage}/loss", means[0], prog_bar=True, batch_size=1, sync_dist=sync_dist)
        self.log_dict({f"{stage}/{k}": v for k, v in zip(names[1:], means[1:])},
                      batch_size=1, sync_dist=sync_dist)

    def _logs_this_step(self) -> bool:
        """Whether Lightning sends this training step's values to the loggers (every
        ``log_every_n_steps``; always without a Trainer)."""
        trainer = self._trainer
        if trainer is None:
            return True
        connector = getattr(trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True) or trainer.fast_dev_run)

    def _metrics(self, stage: Stage) -> ECGMetrics:
        return getattr(self, f"{stage}_metrics")

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        out = self(batch["x"], self.mask_for(batch))
        probs = out.probs
        if batch.get("group") is not None:
            probs = self._per_record(probs, batch["group"], batch["y"].shape[0])
        probs, index = probs.clone(), batch["index"]  # CUDA graphs reuse the output's memory
        if batch.get("repeat"):  # another process's record (see `_step`): predicted there
            probs, index = probs[:0], index[:0]
        return {"index": index, "probs": probs, "labels": probs >= self.thresholds}

    def _per_record(self, probs: Tensor, group: Tensor, records: int) -> Tensor:
        """Window probabilities ``W x 9`` -> per record ``records x 9`` by ``window_aggregation``
        (:func:`aggregate_by_group`; checkpoints before the option: mean)."""
        return aggregate_by_group(probs, group, records,
                                  self.hparams.get("window_aggregation", "mean"))

    # ------------------------------------------------------------------------ epoch ends
    def _epoch_rows(self, stage: Stage) -> tuple[Tensor, Tensor] | None:
        """The stage's ``(probs, target)`` rows since its epoch began (``N x 9`` each), or None
        where there are none; the next epoch starts empty. Training: this process's rows (its
        metrics reduce their states across processes).
        Evaluation: every process's, gathered here once for the metrics, the threshold tuning
        and the test intervals (the DataModule gives each record to one process; a copy sent
        to a process with none adds no row). Every process calls this at the same point."""
        rows = self._rows.pop(stage, None)
        if rows is None:
            return None
        probs, target = torch.cat([p for p, _ in rows]), torch.cat([t for _, t in rows])
        if stage == "train":  # none where every batch was a repeat (the metrics take no rows)
            return (probs, target) if len(probs) else None
        gathered = self._gather_rows(torch.cat([probs, target.to(probs.dtype)], 1))
        if not len(gathered):
            return None
        return gathered[:, :NUM_CLASSES], gathered[:, NUM_CLASSES:]

    def _epoch_end(self, stage: Stage, rows: tuple[Tensor, Tensor] | None) -> dict[str, Tensor]:
        """Update the stage's metrics with the epoch's ``rows`` (test: at the tuned thresholds;
        else at ``threshold``), log them and the mean losses, and return them."""
        if stage != "train":
            self._log_loss(stage, sync_dist=True)
        if rows is not None:
            thresholds = self.thresholds if stage == "test" else self.hparams.threshold
            self._metrics(stage).update(*rows, thresholds)
        values = self._metrics(stage).compute()
        # New states must be ordinary tensors: `trainer.validate` runs under inference mode, and
        # states made there cannot be updated in place by a later fit's validation (no_grad).
        with torch.inference_mode(False):
            self._metrics(stage).reset()
        # Every rank holds the same values (training: torchmetrics reduced the states across
        # processes; evaluation: the rows were gathered), so sync_dist (a mean of equal numbers)
        # only spares Lightning's DDP warning.
        self.log_dict({f"{stage}/{k}": v for k, v in values.items() if k != "micro_f1"},
                      sync_dist=True)
        self.log(f"{stage}/micro_f1", values["micro_f1"], prog_bar=stage != "train",
                 sync_dist=True)
        self.last_metrics[stage] = {k: float(v) for k, v in values.items()}
        return values

    def on_train_start(self) -> None:
        self._loss_sums.pop("train", None)

    def on_train_epoch_start(self) -> None:
        self._rows.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        self._rows.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self._rows.pop("test", None)

    def on_train_epoch_end(self) -> None:
        self._epoch_end("train", self._epoch_rows("train"))

    def on_validation_epoch_end(self) -> None:
        rows = self._epoch_rows("val")
        values = self._epoch_end("val", rows)
        if not self.trainer.sanity_checking:
            self.best_val_micro_f1.update(values["micro_f1"])
            # equal on every process, as the metrics above (sync_dist spares the DDP warning)
            self.log("val/micro_f1_best", self.best_val_micro_f1.compute(), prog_bar=True,
                     sync_dist=True)
            if self.hparams.tune_thresholds and rows is not None:
                self.thresholds.copy_(tune_thresholds(*rows))  # every process's rows

    def _gather_rows(self, rows: Tensor) -> Tensor:
        """``rows`` (N x ...) of every process, concatenated. Processes may hold different N (the
        DataModule deals validation records out unevenly) but all_gather needs equal shapes: pad
        to the largest N, gather, and drop each process's padding."""
        if self._trainer is None or self._trainer.world_size == 1:  # one process
            return rows
        counts = self.all_gather(torch.tensor(len(rows), device=rows.device))
        padded = rows.new_zeros((int(counts.max()), *rows.shape[1:]))
        padded[:len(rows)] = rows
        gathered = self.all_gather(padded)  # processes x max N x ...
        return torch.cat([g[:n] for g, n in zip(gathered, counts.tolist())])

    def on_test_epoch_end(self) -> None:
        rows = self._epoch_rows("test")
        self._epoch_end("test", rows)
        if rows is not None:  # every process's records, as one test set
            self.last_intervals["test"] = interval_report(*rows, self.thresholds)

    # ------------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        # fused: one kernel for all parameters, and the form that skips a step on the device
        # when told to (found_inf), so that NonFiniteLossGuard never makes a step wait for it.
        # Not under float16 with its GradScaler: a fused Adam unscales the gradients inside its
        # step, and Lightning's gradient clipping cannot work with that.
        fp16 = str(getattr(self._trainer, "precision", "")).startswith("16")
        fused = (not fp16 and all(p.device.type in ("cpu", "cuda")
                                  for p in self.parameters())) or None
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr,
                               weight_decay=self.hparams.weight_decay, fused=fused)
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
    def prepare_signal(self, signal: Tensor | np.ndarray) -> np.ndarray:
        """A record ``12 x N`` (mV, at :attr:`sample_rate`) as the training data were: band-passed
        when the run used ``data.bandpass``; contiguous float32 ``12 x N`` (not normalised)."""
        block = np.asarray(signal.cpu() if isinstance(signal, Tensor) else signal, np.float32)
        if self.bandpass is not None:
            block = bandpass(block, float(self.sample_rate), self.bandpass)
        return np.ascontiguousarray(block)

    def _lead_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """The training split's lead ``mean`` and ``1 / std``, ``12 x 1`` each, for fill_window."""
        mean = self.lead_mean.cpu().numpy().reshape(NUM_LEADS, 1)
        return mean, (1.0 / self.lead_std.cpu().numpy()).reshape(NUM_LEADS, 1)

    def _whole(self, block: np.ndarray) -> Tensor:
        """A prepared record ``12 x N`` as one normalised window ``1 x 12 x N`` on the device."""
        whole = np.empty((1, NUM_LEADS, block.shape[1]), np.float32)
        fill_window(whole[0], np.empty(block.shape[1], bool), block, 0, *self._lead_stats())
        return torch.from_numpy(whole).to(self.lead_mean.device)

    def model_input(self, signal: Tensor | np.ndarray) -> Tensor:
        """A whole record ``12 x N`` (mV, at :attr:`sample_rate`) as the network sees it: ``1 x
        12 x N`` float32 on the module's device, band-passed as in training (when it was) and
        normalised with the training split's lead statistics. The input of the maps of
        :meth:`predict_record` and of ``xecg explain``."""
        return self._whole(self.prepare_signal(signal))

    @torch.no_grad()
    def predict_record(self, signal: Tensor | np.ndarray, maps: bool = True) -> dict[str, Tensor]:
        """Run one record ``12 x N`` (mV, at :attr:`sample_rate`) through the model in eval mode.

        Probabilities are those of the test stage: the same windows (:attr:`eval_windows`,
        from the training DataModule), normalised with the training split's lead statistics,
        combined by ``window_aggregation``. The maps come from one more pass over the whole
        record (:meth:`model_input`), so that they cover all of it; ``maps=False`` skips it
        (``xecg evaluate`` and ``xecg predict`` use the probabilities only). Returns ``probs``
        (9,), ``labels`` (9,) bool, ``attention`` (T',) or None and ``response_maps`` (9 x T')
        or None, with ``T' = N // 243``.
        """
        was_training = self.training
        self.eval()
        block = self.prepare_signal(signal)
        mean, inv_std = self._lead_stats()
        starts, T = eval_windows(block.shape[1], **self.eval_windows)
        x = np.empty((len(starts), NUM_LEADS, T), np.float32)
        mask = np.empty((len(starts), T), bool)
        for w, start in enumerate(starts.tolist()):
            fill_window(x[w], mask[w], block, start, mean, inv_std)
        device = self.lead_mean.device
        probs = self(torch.from_numpy(x).to(device), torch.from_numpy(mask).to(device)).probs
        # All windows are one record's: one group.
        probs = self._per_record(probs, probs.new_zeros(len(probs), dtype=torch.long), 1)[0]
        out = self(self._whole(block)) if maps else None
        self.train(was_training)
        return {
            "probs": probs,
            "labels": probs >= self.thresholds,
            "attention": None if out is None or out.attention is None else out.attention[0, 0],
            "response_maps": (None if out is None or out.response_maps is None
                              else out.response_maps[0]),
        }
