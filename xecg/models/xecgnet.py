"""xECGNet (Yoo et al. 2021) and the plain CNN baseline, with one typed output for both.

The ABN baseline is this same XECGNet trained with gamma = 0: gamma belongs to the loss
(:class:`xecg.losses.XECGLoss`), not to the network. Paper notes: ``docs/paper.md#network``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from xecg.classes import NUM_CLASSES, NUM_LEADS
from xecg.models.backbone import Activation, FeatureExtractor, check_input, masked_mean
from xecg.models.branches import AttentionBranch, PerceptionBranch, residual_attention
from xecg.models.registry import constructor_args, register_model


@dataclass(frozen=True, kw_only=True)
class XECGNetOutput:
    """What a model returns for a ``B x leads x T`` batch; ``T' = T // 243``, C classes.

    - ``perception_logits``: ``B x C`` (the CNN baseline's only logits).
    - ``probs``: ``B x C`` predicted probabilities; xECGNet: mean of both branches' sigmoids.
    - ``mask``: ``B x T'`` bool, True at valid pooled positions (all True without padding).
    - ``attention_logits``: ``B x C``, attention branch; None for the CNN baseline.
    - ``response_maps``: R, ``B x C x T'``, >= 0, zero at padding; None for the CNN baseline.
    - ``attention``: A, ``B x 1 x T'``, in (0, 1), zero at padding; None for the CNN baseline.
    """

    perception_logits: Tensor
    probs: Tensor
    mask: Tensor
    attention_logits: Tensor | None = None
    response_maps: Tensor | None = None
    attention: Tensor | None = None


def _pooled_mask(mask: Tensor | None, features: Tensor) -> Tensor:
    if mask is not None:
        return mask
    return torch.ones(features.shape[0], features.shape[2], dtype=torch.bool,
                      device=features.device)


@register_model
class XECGNet(nn.Module):
    """xECGNet: feature extractor, attention branch (R, A), residual attention, perception branch.

    ``forward(x: B x in_leads x T, mask: B x T bool | None) -> XECGNetOutput``.
    ``width=1.0`` is the paper's network (about 4.1 M parameters); ``activation="none"``
    reproduces the authors' code (no activation in the feature extractor or between the
    perception branch's dense layers).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, in_leads: int = NUM_LEADS,
                 width: float = 1.0, activation: Activation = "relu") -> None:
        super().__init__()
        self.hparams = constructor_args(self, locals())  # to rebuild from a checkpoint
        self.in_leads = in_leads
        self.features = FeatureExtractor(in_leads, width, activation)
        channels = self.features.out_channels
        self.attention_branch = AttentionBranch(channels, num_classes, width)
        self.perception_branch = PerceptionBranch(channels, num_classes, width, activation)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> XECGNetOutput:
        mask = check_input(x, mask, self.in_leads)
        features, mask = self.features(x, mask)
        attention_logits, maps, attention = self.attention_branch(features, mask)
        perception_logits = self.perception_branch(residual_attention(features, attention), mask)
        probs = (torch.sigmoid(attention_logits) + torch.sigmoid(perception_logits)) / 2
        return XECGNetOutput(perception_logits=perception_logits, probs=probs,
                             mask=_pooled_mask(mask, features),
                             attention_logits=attention_logits, response_maps=maps,
                             attention=attention)


@register_model
class CNNBaseline(nn.Module):
    """The same feature extractor, global average pooling and one linear layer; no attention.

    ``forward(x: B x in_leads x T, mask: B x T bool | None) -> XECGNetOutput`` with only
    ``perception_logits``, ``probs`` and ``mask`` set, so the loss reduces to plain BCE.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, in_leads: int = NUM_LEADS,
                 width: float = 1.0, activation: Activation = "relu") -> None:
        super().__init__()
        self.hparams = constructor_args(self, locals())  # to rebuild from a checkpoint
        self.in_leads = in_leads
        self.features = FeatureExtractor(in_leads, width, activation)
        self.head = nn.Linear(self.features.out_channels, num_classes)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> XECGNetOutput:
        mask = check_input(x, mask, self.in_leads)
        features, mask = self.features(x, mask)
        logits = self.head(masked_mean(features, mask))
        return XECGNetOutput(perception_logits=logits, probs=torch.sigmoid(logits),
                             mask=_pooled_mask(mask, features))
