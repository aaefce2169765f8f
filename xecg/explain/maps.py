"""Explanation maps over time: xECGNet's own maps (A, R) and two model-agnostic ones (captum).

Every map is returned at input resolution, one value per sample of the record:

- ``attention``: xECGNet's attention map A (``B x 1 x T'``), one map shared by all classes.
- ``cam``: the class response map R_c of class c (``B x 9 x T'``), xECGNet only.
- ``gradcam``: captum ``LayerGradCam`` on the last convolutional layer of the feature extractor
  (the last ConvBN of the fifth block, before the final pooling: ``T // 81`` positions, as
  Grad-CAM on VGG uses the last conv layer), ReLU applied, per class. Any model with a
  :class:`xecg.models.FeatureExtractor` named ``features`` (both registered models).
- ``ig``: captum ``IntegratedGradients`` from a zero baseline (zero after normalisation, i.e.
  each lead at its training mean), per class, collapsed over leads by summing **absolute**
  attributions: on an ECG the sign of an attribution follows the sign of the deflection it
  multiplies (input x gradient), so a negative QRS in aVR is as relevant as a positive one in
  II; the absolute value keeps both.

Gradient methods explain the score ``logit(p_c)`` of the model's probability p_c (for the CNN
that is its logit; for xECGNet, whose p is the mean of two sigmoids, computed stably), which
does not saturate the way p_c does.

Pooled maps go back to input resolution with the pooling geometry (:func:`to_input_resolution`):
position i covers samples ``[s i, s (i + 1))`` with stride s = 243 (81 for Grad-CAM), and the
tail beyond ``T' s`` samples, which no full pooling window covers, takes the last position's
value (``tail="last"``; ``"zero"`` leaves it at 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xecg.classes import NUM_LEADS
from xecg.errors import XECGError
from xecg.models import DOWNSAMPLE

METHODS: tuple[str, ...] = ("attention", "cam", "gradcam", "ig")
#: Methods that read xECGNet's attention branch.
OWN_MAPS = ("attention", "cam")
#: What each method shows, for titles and reports.
DESCRIPTIONS = {
    "attention": "attention map A",
    "cam": "class response map R",
    "gradcam": "Grad-CAM",
    "ig": "Integrated Gradients (|attribution| summed over leads)",
}
#: Samples per position of the Grad-CAM layer (four poolings of 3 precede it).
GRADCAM_STRIDE = DOWNSAMPLE // 3

Tail = Literal["last", "zero"]


class MapUnavailable(XECGError):
    """A map the model cannot give (xECGNet's A or R asked of a model without attention)."""


@dataclass
class Explanation:
    """Maps of one record at input resolution (``N`` samples, float32).

    ``shared``: A for ``attention``, else None; ``classes``: class index -> map of that class
    (R_c for ``attention`` and ``cam``); ``probs``: (9,) probabilities of this whole-record pass.
    """

    method: str
    probs: np.ndarray
    shared: np.ndarray | None = None
    classes: dict[int, np.ndarray] = field(default_factory=dict)


def check_method(method: str) -> None:
    if method not in METHODS:
        raise XECGError(f"unknown explanation method {method!r}; choose from "
                        f"{', '.join(METHODS)}")


def has_own_maps(net: nn.Module) -> bool:
    """True if the network returns A and R (xECGNet), judged by one tiny forward pass."""
    device = next(net.parameters()).device
    with _eval(net), torch.no_grad():
        out = net(torch.zeros(1, getattr(net, "in_leads", NUM_LEADS), DOWNSAMPLE, device=device))
    return out.attention is not None and out.response_maps is not None


def _unavailable(method: str, net: nn.Module) -> MapUnavailable:
    return MapUnavailable(
        f"--method {method} needs xECGNet's {DESCRIPTIONS[method]}, but the model "
        f"{type(net).__name__} has no attention branch; use --method gradcam or ig")


def check_methods(net: nn.Module, methods: Sequence[str]) -> list[str]:
    """``methods`` without repeats, after checking that each exists and that the network can
    give it (:class:`MapUnavailable` naming the method and the model otherwise)."""
    methods = list(dict.fromkeys(methods))
    for method in methods:
        check_method(method)
    own = [m for m in methods if m in OWN_MAPS]
    if own and not has_own_maps(net):
        raise _unavailable(own[0], net)
    return methods


def default_methods(net: nn.Module) -> list[str]:
    """``attention`` for a model with its own maps, else ``gradcam``."""
    return ["attention"] if has_own_maps(net) else ["gradcam"]


def to_input_resolution(values: np.ndarray | Tensor, length: int, stride: int = DOWNSAMPLE,
                        tail: Tail = "last") -> np.ndarray:
    """``(..., T')`` pooled map -> ``(..., length)``: position i covers samples
    ``[stride i, stride (i + 1))``; samples from ``T' stride`` on get the last value (``tail``
    ``"last"``) or 0 (``"zero"``). Positions beyond ``length`` are dropped."""
    if isinstance(values, Tensor):
        values = values.detach().float().cpu().numpy()
    values = np.asarray(values, dtype=np.float32)
    out = np.zeros((*values.shape[:-1], length), dtype=np.float32)
    n = min(values.shape[-1], -(-length // stride))
    if n == 0:
        return out
    body = np.repeat(values[..., :n], stride, axis=-1)[..., :length]
    out[..., :body.shape[-1]] = body
    if tail == "last" and body.shape[-1] < length:
        out[..., body.shape[-1]:] = values[..., n - 1:n]
    elif tail not in ("last", "zero"):
        raise ValueError(f"tail must be 'last' or 'zero', got {tail!r}")
    return out


def class_scores(out) -> Tensor:
    """``logit(p)`` per class (``B x C``) of a model output: the CNN's logits, or for xECGNet
    (p = mean of two sigmoids) ``log(s(a) + s(b)) - log(s(-a) + s(-b))``, stable at any logit."""
    if out.attention_logits is None:
        return out.perception_logits
    a, b = out.attention_logits, out.perception_logits
    pos = torch.logaddexp(F.logsigmoid(a), F.logsigmoid(b))
    neg = torch.logaddexp(F.logsigmoid(-a), F.logsigmoid(-b))
    return pos - neg


@contextmanager
def _eval(net: nn.Module):
    was = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was)


@contextmanager
def _gradients():
    """Gradients on even inside Lightning's validation loop (inference mode, no_grad)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _gradcam_layer(net: nn.Module) -> nn.Module:
    features = getattr(net, "features", None)
    blocks = getattr(features, "blocks", None)
    if blocks is None:
        raise MapUnavailable(f"gradcam needs a network with a FeatureExtractor named "
                             f"'features'; {type(net).__name__} has none")
    return blocks[-1][-1]


def explain(net: nn.Module, x: Tensor, method: str, classes: Sequence[int] = (),
            ig_steps: int = 32, ig_batch: int = 16, tail: Tail = "last") -> Explanation:
    """Maps of ``method`` for one normalised record ``x`` (``1 x 12 x N``), for ``classes``.

    ``attention`` gives A and the R_c of ``classes``; ``cam`` the R_c; ``gradcam`` and ``ig``
    one map per class. Raises :class:`MapUnavailable` for ``attention``/``cam`` on a model
    without an attention branch. ``ig_steps``: integration steps (Gauss-Legendre), evaluated
    ``ig_batch`` inputs at a time.
    """
    check_method(method)
    if method == "ig" and not (isinstance(ig_steps, int) and ig_steps >= 1):
        # captum would stop with a bare AssertionError (or integrate over nothing at 0)
        raise XECGError(f"--ig-steps {ig_steps}: Integrated Gradients needs at least 1 step")
    if x.dim() != 3 or x.shape[0] != 1:
        raise ValueError(f"x must be 1 x leads x N, got {tuple(x.shape)}")
    n = x.shape[-1]
    classes = sorted({int(c) for c in classes})
    with _eval(net):
        with torch.no_grad():
            out = net(x)
        probs = out.probs[0].float().cpu().numpy()
        if method in OWN_MAPS:
            if out.attention is None or out.response_maps is None:
                raise _unavailable(method, net)
            maps = to_input_resolution(out.response_maps[0], n, tail=tail)
            shared = (to_input_resolution(out.attention[0, 0], n, tail=tail)
                      if method == "attention" else None)
            return Explanation(method, probs, shared, {c: maps[c] for c in classes})
        if not classes:
            return Explanation(method, probs)
        with _gradients():
            maps = _gradcam(net, x, classes, tail) if method == "gradcam" else \
                _integrated_gradients(net, x, classes, ig_steps, ig_batch)
    return Explanation(method, probs, None, dict(zip(classes, maps)))


def _forward_scores(net: nn.Module):
    return lambda inputs: class_scores(net(inputs))


def _gradcam(net: nn.Module, x: Tensor, classes: list[int], tail: Tail) -> np.ndarray:
    from captum.attr import LayerGradCam

    cam = LayerGradCam(_forward_scores(net), _gradcam_layer(net))
    inputs = x.detach().clone().expand(len(classes), -1, -1).contiguous()
    attr = cam.attribute(inputs, target=classes, relu_attributions=True)  # K x 1 x N // 81
    return to_input_resolution(attr[:, 0], x.shape[-1], stride=GRADCAM_STRIDE, tail=tail)


def _integrated_gradients(net: nn.Module, x: Tensor, classes: list[int], steps: int,
                          batch: int) -> np.ndarray:
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(_forward_scores(net))
    maps = []
    for c in classes:  # one class at a time keeps memory at `batch` inputs of 12 x N
        attr = ig.attribute(x.detach().clone(), baselines=torch.zeros_like(x), target=c,
                            n_steps=steps, internal_batch_size=batch)
        maps.append(attr[0].abs().sum(0).float().cpu().numpy())
    return np.stack(maps).astype(np.float32)


def randomised_copy(net: nn.Module, seed: int = 0) -> nn.Module:
    """A freshly initialised network of the same class and arguments (the model-randomisation
    sanity check of Adebayo et al. 2018): weights from ``seed``, BatchNorm at its initial
    statistics. The global random state is left as it was."""
    hparams = dict(getattr(net, "hparams", {}))
    device = next(net.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(net)(**hparams)
    return fresh.to(device).eval()
