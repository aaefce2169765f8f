"""Checkpoints of one recipe used as one model: ``xecg evaluate`` and ``xecg predict`` with
``--ckpt`` given more than once (``make sim2real`` evaluates three runs so).

Each member gives a record's probabilities its own way (its windows, lead statistics, band and
window aggregation: :meth:`xecg.module.XECGModule.predict_record`); the ensemble's are their
mean, and its thresholds the mean of the members'. Why: what a network takes from synthetic
records varies from run to run (one ``make sim2real`` run scored micro-F1 0.51-0.63 on the 100
shared real records), and three runs together gave 0.668 ± 0.015 where one gave 0.606 ± 0.032
(experiments/sim2real.md, "Ensembles"). One member is the model itself, unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from xecg.guards import CheckpointError, load_module

Checkpoints = str | os.PathLike | Sequence[str | os.PathLike]


def checkpoint_list(ckpt: Checkpoints) -> list[str | os.PathLike]:
    """One checkpoint or several, as a list."""
    return [ckpt] if isinstance(ckpt, (str, os.PathLike)) else list(ckpt)


def load_members(ckpts: Sequence[str | os.PathLike], device: str = "cpu") -> list:
    """The checkpoints' modules in eval mode (``weights_only``, one-line errors:
    :func:`xecg.guards.load_module`). Members must share a sample rate, since a record is
    resampled once for all of them: else a :class:`CheckpointError` names each and its rate."""
    modules = [load_module(c, map_location=device).eval() for c in ckpts]
    if len({float(m.sample_rate) for m in modules}) > 1:
        raise CheckpointError("an ensemble's checkpoints must share a sample rate; "
                              + ", ".join(f"{c}: {float(m.sample_rate):g} Hz"
                                          for c, m in zip(ckpts, modules)))
    return modules


def thresholds(modules: Sequence) -> torch.Tensor:
    """The ensemble's per-class thresholds (``9``): the mean of the members'."""
    return torch.stack([m.thresholds for m in modules]).mean(0)


def predict_record(modules: Sequence, signal: torch.Tensor) -> dict[str, torch.Tensor]:
    """One record ``12 x N`` (mV, at the members' rate) through every member: ``probs`` (9,),
    their mean, and ``labels`` (9,) bool at the mean thresholds. With one member, its own
    :meth:`~xecg.module.XECGModule.predict_record` result. No maps: a page draws its own."""
    if len(modules) == 1:
        return modules[0].predict_record(signal, maps=False)
    probs = torch.stack([m.predict_record(signal, maps=False)["probs"].float()
                         for m in modules]).mean(0)
    return {"probs": probs, "labels": probs >= thresholds(modules).to(probs.device)}
