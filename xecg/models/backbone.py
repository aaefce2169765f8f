"""xECGNet's VGG-like feature extractor and the padding-mask helpers every model shares.

Masks are ``B x T`` bool tensors, True where a sample is real and False where it is padding.
``mask=None`` means "no padding" and runs the plain network (the authors' code path).

How padding is kept out of the result: padded positions are set to zero before every
convolution, so a real sample next to the padding sees exactly the zeros that a
same-padded convolution sees at the end of the unpadded signal; and a pooled position is
valid only if its *whole* pooling window is real, so the number of valid positions is
``L // 3`` per pooling, the floor PyTorch applies to the unpadded signal. With padding at the
end (the ``bucket`` policy) the valid part of every feature map is therefore the unpadded
network's feature map, for any real length ``L``. With padding at the start (the paper's
zero-padding to 72,000) positions that touch the padding are invalid, but the pooling grid is
anchored at the padded start, so features are those of a shifted signal, not identical.
BatchNorm layers (:class:`MaskedBatchNorm1d`) compute their training-mode batch statistics over
valid positions only, so padding changes neither a training step nor the running statistics.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xecg.classes import NUM_LEADS

Activation = Literal["relu", "none"]

POOL = 3
#: Conv channels per block; a MaxPool1d(3, stride 3) follows each of the five blocks.
BLOCKS: tuple[tuple[int, ...], ...] = (
    (64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 256, 128),
)
#: Overall time downsampling of the feature extractor: T -> T // 243.
DOWNSAMPLE = POOL ** len(BLOCKS)


def scaled(channels: int, width: float) -> int:
    """Channel count times the width multiplier, rounded, at least 8."""
    return max(8, round(channels * width))


def make_activation(name: Activation) -> nn.Module:
    """``relu`` -> ReLU; ``none`` -> identity (the authors' code has no activations there)."""
    if name == "relu":
        return nn.ReLU()
    if name == "none":
        return nn.Identity()
    raise ValueError(f"activation must be 'relu' or 'none', got {name!r}")


def apply_mask(x: Tensor, mask: Tensor | None) -> Tensor:
    """``B x C x T`` features with padded positions (mask False) set to zero; x if mask is None."""
    return x if mask is None else x * mask.unsqueeze(1).to(x.dtype)


def downsample_mask(mask: Tensor, levels: int = 1) -> Tensor:
    """Pooled mask, ``B x T`` -> ``B x T // 3**levels``: valid where the whole window is real."""
    padding = (~mask).unsqueeze(1).float()
    for _ in range(levels):
        padding = F.max_pool1d(padding, POOL, POOL)
    return padding.squeeze(1) == 0


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Global average pooling over the valid positions, ``B x C x T`` -> ``B x C``.

    A record without any valid position (shorter than 243 samples) pools to zeros.
    """
    if mask is None:
        return x.mean(dim=-1)
    weight = mask.unsqueeze(1).to(x.dtype)
    return (x * weight).sum(dim=-1) / weight.sum(dim=-1).clamp_min(1)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training-mode statistics count only valid positions of a ``B x T``
    mask (True = real); without a mask, or in eval mode, it is plain BatchNorm1d."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None or not self.training:
            return super().forward(x)
        x32 = x.float()  # statistics in float32 also under bf16 autocast, as BatchNorm does
        w = mask.unsqueeze(1).to(x32.dtype)
        n = w.sum().clamp_min(1.0)
        mean = (x32 * w).sum((0, 2)) / n
        centred = x32 - mean[:, None]
        var = (centred.square() * w).sum((0, 2)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (self.momentum if self.momentum is not None
                            else 1.0 / float(self.num_batches_tracked))
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * n / (n - 1).clamp_min(1.0), momentum)
        y = centred * torch.rsqrt(var + self.eps)[:, None]
        if self.affine:
            y = y * self.weight[:, None] + self.bias[:, None]
        return y.to(x.dtype)


class ConvBN(nn.Module):
    """Conv1d (same padding) -> masked BatchNorm -> activation: ``B x c_in x T`` ->
    ``B x c_out x T``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool = True,
                 activation: Activation = "none") -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2, bias=bias)
        self.norm = MaskedBatchNorm1d(c_out)
        self.act = make_activation(activation)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.act(self.norm(self.conv(x), mask))


class FeatureExtractor(nn.Module):
    """Conv1d(k=3, same) + BatchNorm (+ activation) layers in five pooled blocks.

    ``B x in_leads x T`` (and an optional ``B x T`` mask) -> ``B x out_channels x T // 243``
    (and the pooled ``B x T // 243`` mask, None when no mask was given).
    ``width`` scales every channel count (1.0 is the paper's network).
    """

    def __init__(self, in_leads: int = NUM_LEADS, width: float = 1.0,
                 activation: Activation = "relu") -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        c_in = in_leads
        for block in BLOCKS:
            layers = nn.ModuleList()
            for channels in block:
                layers.append(ConvBN(c_in, scaled(channels, width), 3, activation=activation))
                c_in = scaled(channels, width)
            self.blocks.append(layers)
        self.pool = nn.MaxPool1d(POOL, POOL)
        self.out_channels = c_in

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        x = apply_mask(x, mask)
        for layers in self.blocks:
            for layer in layers:
                x = apply_mask(layer(x, mask), mask)
            x = self.pool(x)
            if mask is not None:
                mask = downsample_mask(mask)
                x = apply_mask(x, mask)
        return x, mask


def check_input(x: Tensor, mask: Tensor | None, in_leads: int) -> Tensor | None:
    """Validate a ``B x in_leads x T`` batch and its ``B x T`` mask; returns the mask as bool,
    or None when it marks no padding."""
    if x.dim() != 3 or x.shape[1] != in_leads:
        raise ValueError(f"input must be B x {in_leads} x T, got shape {tuple(x.shape)}")
    if x.shape[2] < DOWNSAMPLE:
        raise ValueError(f"input length {x.shape[2]} is shorter than {DOWNSAMPLE} samples, "
                         "the network's downsampling factor")
    if mask is None:
        return None
    if mask.shape != (x.shape[0], x.shape[2]):
        raise ValueError(f"mask must be B x T = {(x.shape[0], x.shape[2])}, "
                         f"got shape {tuple(mask.shape)}")
    mask = mask.to(torch.bool)
    # No padding in the batch: the plain (faster, fused BatchNorm) path gives the same result.
    return None if bool(mask.all()) else mask
