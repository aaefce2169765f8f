"""xECGNet's loss: BCE on both branches + gamma * D(reference map, attention map).

L = BCE(attention logits, y) + BCE(perception logits, y) + gamma * mean_b D(ref_b, A_b), where
ref_b is built from the class response maps R of record b's ground-truth classes. BCE is the
mean over the ``B x C`` entries (Keras' ``binary_crossentropy`` averaged over the batch).
Padded positions (``output.mask`` False) count in no distance.

Options that reproduce the authors' code for an honest comparison (``docs/paper.md#loss``):
``reference="all9"`` (sum_c y_c R_c divided by the number of classes, not of true labels),
``batch_reduction="authors_modulo"`` (the batch "mean" written ``%=``: each record's distance
modulo the batch size, then the batch mean, as the Keras code computes it), and ``gamma=0``
(their published runs never trained the regulariser). The ``paper_authors_code`` setting is
therefore ``activation="none"`` on the network and ``reference="all9", distance="l2",
batch_reduction="authors_modulo"`` here.
Models without an attention map (the CNN baseline) get plain BCE on their logits: the
missing terms are zero. The ABN baseline is this loss with ``gamma=0``.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xecg.models import XECGNetOutput
from xecg.models.registry import constructor_args

Reference = Literal["positives", "all9"]
Distance = Literal["l2", "mse", "l1"]
BatchReduction = Literal["mean", "authors_modulo"]


class LossTerms(NamedTuple):
    """Scalar loss terms; ``total = bce_attention + bce_perception + gamma * regularizer``.

    Terms a model does not have (no attention branch) are zero tensors, so each can be logged.
    """

    total: Tensor
    bce_attention: Tensor
    bce_perception: Tensor
    regularizer: Tensor


def check_choice(name: str, value: str, choices: object) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is one of ``choices`` (a ``Literal``
    type, so the type annotation is the one list of allowed values)."""
    choices = get_args(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def reference_map(maps: Tensor, y: Tensor, reference: Reference) -> tuple[Tensor, Tensor]:
    """Reference map ``B x T'`` from R ``B x C x T'`` and labels ``B x C``, and a ``B`` bool
    telling where it is defined.

    ``positives``: mean of R_c over the classes present (weighted by y for soft labels);
    undefined for a record without any label. ``all9``: sum_c y_c R_c / C, always defined.
    """
    weighted = torch.einsum("bc,bct->bt", y, maps)
    if reference == "all9":
        return weighted / maps.shape[1], torch.ones_like(y[:, 0], dtype=torch.bool)
    count = y.sum(dim=1)
    defined = count > 0
    return weighted / torch.where(defined, count, 1).unsqueeze(1), defined


def map_distance(ref: Tensor, attention: Tensor, mask: Tensor, distance: Distance) -> Tensor:
    """Per-record distance ``B`` between ``B x T'`` maps over the valid positions of ``mask``.

    ``l2``: Euclidean norm over time (``docs/paper.md#loss``); ``mse`` / ``l1``: mean squared /
    absolute difference over the valid positions.
    """
    valid = mask.to(ref.dtype)
    diff = (ref - attention) * valid
    if distance == "l2":
        return torch.linalg.vector_norm(diff, dim=1)
    per_position = diff.square() if distance == "mse" else diff.abs()
    return per_position.sum(dim=1) / valid.sum(dim=1).clamp_min(1)


class XECGLoss(nn.Module):
    """``forward(output: XECGNetOutput, y: B x C multi-hot) -> LossTerms``.

    ``detach_reference`` stops the regulariser's gradient into R through the reference map
    (the authors' code lets it flow). A record whose reference is undefined (no label, with
    ``reference="positives"``) contributes zero to the batch mean of the regulariser.
    """

    def __init__(self, gamma: float = 0.01, reference: Reference = "positives",
                 distance: Distance = "l2", detach_reference: bool = False,
                 batch_reduction: BatchReduction = "mean") -> None:
        super().__init__()
        if not (math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
        check_choice("reference", reference, Reference)
        check_choice("distance", distance, Distance)
        check_choice("batch_reduction", batch_reduction, BatchReduction)
        self.hparams = constructor_args(self, locals())  # to rebuild from a checkpoint
        self.gamma = gamma
        self.reference: Reference = reference
        self.distance: Distance = distance
        self.detach_reference = detach_reference
        self.batch_reduction: BatchReduction = batch_reduction

    def forward(self, output: XECGNetOutput, y: Tensor) -> LossTerms:
        logits = output.perception_logits
        if y.shape != logits.shape:
            raise ValueError(f"labels must be B x C = {tuple(logits.shape)}, "
                             f"got shape {tuple(y.shape)}")
        y = y.to(torch.float32)
        zero = y.new_zeros(())
        bce_perception = F.binary_cross_entropy_with_logits(logits.float(), y)
        bce_attention = (zero if output.attention_logits is None else
                         F.binary_cross_entropy_with_logits(output.attention_logits.float(), y))
        regularizer = (zero if output.attention is None or output.response_maps is None
                       else self.regularizer(output.response_maps, output.attention,
                                             output.mask, y))
        total = bce_attention + bce_perception + self.gamma * regularizer
        return LossTerms(total, bce_attention, bce_perception, regularizer)

    def regularizer(self, maps: Tensor, attention: Tensor, mask: Tensor, y: Tensor) -> Tensor:
        """D(ref, A) reduced over the batch: R ``B x C x T'``, A ``B x 1 x T'``, mask ``B x T'``,
        y ``B x C`` -> scalar."""
        ref, defined = reference_map(maps.float(), y, self.reference)
        if self.detach_reference:
            ref = ref.detach()
        per_record = map_distance(ref, attention.float().squeeze(1), mask, self.distance)
        per_record = torch.where(defined, per_record, 0.0)
        if self.batch_reduction == "authors_modulo":
            # The authors' `d %= batch_size` acts on each record's distance before the mean.
            return torch.remainder(per_record, per_record.shape[0]).mean()
        return per_record.mean()
