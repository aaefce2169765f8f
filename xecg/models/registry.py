"""The registry of networks (timm's ``register_model``, as a class decorator).

Registered classes take ``num_classes`` and ``in_leads`` and record their constructor
arguments as ``hparams`` (:func:`constructor_args`), so a checkpoint can rebuild the network
from its configuration alone (:func:`xecg.module.class_config`).
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn


def constructor_args(obj: object, local_vars: dict[str, Any]) -> dict[str, Any]:
    """The arguments of ``type(obj).__init__`` as they are in ``local_vars`` (call with
    ``locals()`` first thing in ``__init__``). Unlike Lightning's ``save_hyperparameters`` it
    reads only this frame, so a part built inside another module's ``__init__`` does not pick
    up that module's arguments."""
    params = inspect.signature(type(obj).__init__).parameters
    return {k: local_vars[k] for k, p in params.items()
            if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

#: Registered networks by class name, in registration order.
MODELS: dict[str, type[nn.Module]] = {}


def register_model(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: adds ``cls`` to :data:`MODELS` under its class name."""
    if cls.__name__ in MODELS and MODELS[cls.__name__] is not cls:
        raise ValueError(f"two models are named {cls.__name__}: "
                         f"{MODELS[cls.__name__].__module__} and {cls.__module__}")
    MODELS[cls.__name__] = cls
    return cls
