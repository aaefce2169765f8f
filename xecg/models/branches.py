"""The two heads of xECGNet: the attention branch (R, A, its own logits) and the perception branch.

Layer choices follow the authors' code: bottleneck and branch convolutions have no bias (a
BatchNorm follows or the map must stay a pure linear combination), the dense layers do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xecg.models.backbone import (
    Activation,
    ConvBN,
    MaskedBatchNorm1d,
    apply_mask,
    conv1d,
    make_activation,
    masked_mean,
    scaled,
)


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 -> out/4, k3 out/4, 1x1 -> out, plus a projection shortcut, ReLU.

    ``B x in_channels x T`` -> ``B x out_channels x T``. With a mask every layer's output is
    zero at padded positions (:class:`ConvBN`), what the k=3 convolution (the only one that
    looks at neighbours) must see; so is the block's output where ``x`` is.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 4
        self.reduce = ConvBN(in_channels, mid, 1, bias=False, activation="relu")
        self.conv = ConvBN(mid, mid, 3, bias=False, activation="relu")
        self.expand = ConvBN(mid, out_channels, 1, bias=False)
        self.shortcut = (ConvBN(in_channels, out_channels, 1, bias=False)
                         if in_channels != out_channels else None)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        out = self.expand(self.conv(self.reduce(x, mask), mask), mask)
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x, mask)))


class AttentionBranch(nn.Module):
    """Class response maps R, attention map A and the branch's own logits.

    ``B x in_channels x T'`` features -> (logits ``B x C``, R ``B x C x T'`` (>= 0, ReLU),
    A ``B x 1 x T'`` in (0, 1)). R and A are zero at padded positions. The classifier is the
    authors' 1x1 convolution (C -> C, no bias) followed by global average pooling, computed
    here in the equivalent order (pool, then a bias-free linear map): without it every logit
    would be a mean of non-negative R, i.e. every class predicted present.
    """

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        channels = scaled(256, width)
        self.bottleneck = Bottleneck(in_channels, channels)
        self.norm = MaskedBatchNorm1d(channels)
        self.response = nn.Conv1d(channels, num_classes, 1, bias=False)
        self.classifier = nn.Linear(num_classes, num_classes, bias=False)
        self.attention = ConvBN(num_classes, 1, 1, bias=False)
        self.length_generic = False  # see backbone.use_length_generic_layers

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        maps = F.relu(conv1d(self.response, self.norm(self.bottleneck(x, mask), mask),
                             self.length_generic))
        maps = apply_mask(maps, mask)
        logits = self.classifier(masked_mean(maps, mask))
        attention = apply_mask(torch.sigmoid(self.attention(maps, mask)), mask)
        return logits, maps, attention


class PerceptionBranch(nn.Module):
    """Bottleneck -> global average pooling -> Linear 512 -> (activation) -> Linear C.

    ``B x in_channels x T'`` attended features -> logits ``B x C``.
    """

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0,
                 activation: Activation = "relu") -> None:
        super().__init__()
        channels, hidden = scaled(256, width), scaled(512, width)
        self.bottleneck = Bottleneck(in_channels, channels)
        self.head = nn.Sequential(nn.Linear(channels, hidden), make_activation(activation),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.head(masked_mean(self.bottleneck(x, mask), mask))


def residual_attention(features: Tensor, attention: Tensor) -> Tensor:
    """g' = g * A + g: ``B x C x T'`` features, ``B x 1 x T'`` map shared across channels."""
    return features * attention + features
