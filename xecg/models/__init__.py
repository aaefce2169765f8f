"""Models: ``xecgnet`` (the paper's network), ``abn`` (the same network, trained with gamma = 0)
and ``cnn`` (the feature extractor with a linear head, no attention).

``abn`` and ``xecgnet`` build the same module; what makes a run "abn" is the loss's gamma,
which ``xecg.losses.build_loss("abn")`` fixes at 0.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from xecg.models.backbone import DOWNSAMPLE, FeatureExtractor, downsample_mask, masked_mean
from xecg.models.xecgnet import CNNBaseline, XECGNet, XECGNetOutput

ModelName = Literal["xecgnet", "abn", "cnn"]
MODEL_NAMES: tuple[str, ...] = ("xecgnet", "abn", "cnn")

__all__ = [
    "DOWNSAMPLE", "MODEL_NAMES", "CNNBaseline", "FeatureExtractor", "ModelName", "XECGNet",
    "XECGNetOutput", "build_model", "downsample_mask", "masked_mean",
]


def build_model(name: ModelName, **kwargs: Any) -> nn.Module:
    """The model called ``name``; kwargs go to its constructor (num_classes, in_leads, width,
    activation)."""
    if name in ("xecgnet", "abn"):
        return XECGNet(**kwargs)
    if name == "cnn":
        return CNNBaseline(**kwargs)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
