"""``ema.decay``: validate, checkpoint and test an exponential moving average of the weights.

An average of the weights along the last stretch of training is a flatter, steadier model than
the last step's weights, and it tends to generalise better away from the training distribution
(Izmailov et al. 2018, SWA; Cha et al. 2021, SWAD, for domain shift). Lightning's
``WeightAveraging`` does the averaging; :class:`WeightEMA` fixes three things for xecg's module:

- The module's own buffers (thresholds tuned on validation, the training split's lead statistics,
  the sample rate) are state, not weights: copied between the models, never averaged.
- The average is swapped out at ``on_validation_end`` rather than at the epoch's end, so the
  thresholds the module tunes at its epoch end, the explanation scores and the checkpoint all
  belong to the averaged weights that were validated.
- Outside ``fit`` (``trainer.validate``/``test`` of a checkpoint after training) nothing is
  swapped or reloaded: the checkpoint's ``state_dict`` already holds the average. Lightning's
  callback would load the raw weights from ``current_model_state`` there.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torch.optim.swa_utils import AveragedModel


def ema_update(decay: float, warmup: bool = True):
    """The ``multi_avg_fn`` of :class:`AveragedModel`: an exponential moving average with weight
    ``decay`` per update, or with ``warmup`` ``min(decay, (1 + n) / (10 + n))`` (n: updates so
    far; TensorFlow's ``ExponentialMovingAverage(num_updates=...)``), so that early validations
    are not dominated by the initialisation. Integer buffers (BatchNorm's batch count) are
    copied."""

    @torch.no_grad()
    def update(averages: list[Tensor], currents: list[Tensor], n: Tensor) -> None:
        if not averages[0].is_floating_point():  # one dtype per call
            for average, current in zip(averages, currents):
                average.copy_(current)
            return
        k = int(n)  # one host read per call
        d = min(decay, (1.0 + k) / (10.0 + k)) if warmup else decay
        torch._foreach_lerp_(averages, currents, 1.0 - d)

    return update


class WeightEMA(WeightAveraging):
    """An exponential moving average of the weights (and of BatchNorm's running statistics),
    updated after every training step; off when ``decay`` is null.

    Args:
        decay: the average's weight per step, in (0, 1): about the last ``1 / (1 - decay)``
            steps count (0.995: 200).
        warmup: cap the decay at ``(1 + n) / (10 + n)`` after n updates. That cap stays below
            0.995 for 1,790 steps and below 0.999 for 9,000: in a run shorter than that it sets
            the decay, and step k of n then weighs in proportion to ``k ** 8`` (an average
            centred at nine tenths of the run). ``false``: the decay from the first step.
    """

    def __init__(self, decay: float | None = None, warmup: bool = True) -> None:
        if decay is not None and not 0.0 < decay < 1.0:
            raise ValueError(f"ema.decay must be in (0, 1) or null, got {decay}")
        self.decay = decay
        self._update = ema_update(decay or 0.0, warmup)
        super().__init__(use_buffers=True, multi_avg_fn=self._update)

    # ------------------------------------------------------------------ when it acts
    def _on(self, trainer: L.Trainer) -> bool:
        return self._average_model is not None and trainer.state.fn == TrainerFn.FITTING

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # No configure_model call as in Lightning's: xecg's compiles the network in place, and
        # its parameter names stay the same, so the copy's names match either way.
        if stage == "fit" and self.decay is not None and self._average_model is None:
            self._average_model = AveragedModel(pl_module, use_buffers=True,
                                                multi_avg_fn=self._update)

    # ------------------------------------------------------------------ the module's own state
    def _copy_state(self, source: torch.nn.Module, target: torch.nn.Module) -> None:
        """Copy the module's own buffers (not its network's) from ``source`` to ``target``."""
        own = dict(target.named_buffers(recurse=False))
        for name, buffer in source.named_buffers(recurse=False):
            own[name].copy_(buffer)

    # ------------------------------------------------------------------ training
    def on_fit_start(self, trainer, pl_module) -> None:
        # The copy was made before the module's setup set its lead statistics. From here on
        # both models hold the same own buffers, which the per-step average leaves unchanged
        # (lerp of equal values), so they are copied only where the module changes them.
        if self._on(trainer):
            self._copy_state(pl_module, self._average_model.module)

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._on(trainer):  # Lightning's asserts an average exists
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._on(trainer):
            self._copy_state(pl_module, self._average_model.module)
            self._copy_average_to_current(pl_module)

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if self._on(trainer):
            self._copy_state(pl_module, self._average_model.module)
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        pass  # the module tunes its thresholds now, on the average: swapped back below

    def on_validation_end(self, trainer, pl_module) -> None:
        # Runs before ModelCheckpoint's (Lightning calls checkpoint callbacks last).
        if self._on(trainer):
            self._swap_models(pl_module)
            self._copy_state(self._average_model.module, pl_module)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if self._on(trainer):
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if self._on(trainer):  # resuming a fit: both the average and the current weights
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
