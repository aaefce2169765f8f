"""Networks: each maps ``B x 12 x T`` (and an optional ``B x T`` padding mask) to an
:class:`XECGNetOutput`.

A model is one class in a module of this package, decorated with :func:`register_model`, plus
one experiment YAML that names it under ``model.net.class_path``. Every module here is imported
below, so the registry (and the tests that iterate over it) sees a new file without any list
to edit. The ABN baseline is not a model: it is :class:`XECGNet` trained with ``gamma: 0``
(``experiments/abn.yaml``); gamma belongs to the loss.
"""

from __future__ import annotations

import importlib
import pkgutil

from xecg.models.backbone import DOWNSAMPLE, FeatureExtractor, downsample_mask, masked_mean
from xecg.models.registry import MODELS, register_model
from xecg.models.xecgnet import CNNBaseline, XECGNet, XECGNetOutput

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")

__all__ = [
    "DOWNSAMPLE", "MODELS", "CNNBaseline", "FeatureExtractor", "XECGNet", "XECGNetOutput",
    "downsample_mask", "masked_mean", "register_model",
]
