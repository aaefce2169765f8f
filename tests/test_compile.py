"""torch.compile and the ``bucket`` policy: one compiled network for every length.

Under ``bucket`` each batch has its own length. torch 2.13 specialised the compiled network on
the length in two places (``F.max_pool1d`` in dynamo, the input gradient of
``convolution_backward`` in inductor), so every bucket length was compiled again and, after
eight, torch fell back to eager. Compiled for ``bucket`` (:func:`use_length_generic_layers`), the
network now pools with the strided form of :func:`max_pool` and runs its convolutions as
:class:`_Conv1dFunction`; these tests hold both to the layers they replace and count compiled
graphs across lengths.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from torch import nn
from torch._dynamo.utils import counters

from xecg.classes import NUM_CLASSES, NUM_LEADS
from xecg.losses import XECGLoss
from xecg.models import MODELS
from xecg.models.backbone import _Conv1dFunction, max_pool, use_length_generic_layers

LENGTHS = (1944, 2916, 3888, 5832)  # bucket lengths: multiples of bucket_multiple 972


@pytest.mark.parametrize("length", [9, 10, 11, 243, 1000])
def test_max_pool_is_max_pool1d(length):
    """The form used under compile (dynamo's capture, run eagerly) against F.max_pool1d."""
    x = torch.randn(2, 5, length, requires_grad=True)  # continuous values: no ties
    ours = torch.compile(lambda x: max_pool(x, length_generic=True), backend="eager",
                         dynamic=True)(x)
    torch.testing.assert_close(ours, F.max_pool1d(x, 3, 3), rtol=0, atol=0)
    weights = torch.randn_like(ours)
    (ours_grad,) = torch.autograd.grad((ours * weights).sum(), x)
    (ref_grad,) = torch.autograd.grad((F.max_pool1d(x, 3, 3) * weights).sum(), x)
    torch.testing.assert_close(ours_grad, ref_grad, rtol=0, atol=0)


@pytest.mark.parametrize("kernel, bias", [(3, True), (3, False), (1, False)])
@pytest.mark.parametrize("autocast", [False, True])
def test_conv_function_is_conv1d(kernel, bias, autocast):
    """Values and all three gradients equal nn.Conv1d's, in float32 and under bf16 autocast
    (where its output is bfloat16 and its gradients come back in the operands' dtypes)."""
    torch.manual_seed(0)
    layer = nn.Conv1d(6, 4, kernel, padding=kernel // 2, bias=bias)
    x = torch.randn(3, 6, 50, requires_grad=True)
    grads, outs = [], []
    for fn in (layer, lambda x: _Conv1dFunction.apply(x, layer.weight, layer.bias, kernel // 2)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = fn(x)
        outs.append(y)
        params = [x, layer.weight] + ([layer.bias] if bias else [])
        grads.append(torch.autograd.grad((y.float() * torch.linspace(-1, 1, 50)).sum(), params))
    assert outs[1].dtype == outs[0].dtype == (torch.bfloat16 if autocast else torch.float32)
    tol = {"rtol": 2e-2, "atol": 2e-2} if autocast else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(outs[1], outs[0], **tol)
    for ours, ref in zip(grads[1], grads[0]):
        assert ours.dtype == ref.dtype
        torch.testing.assert_close(ours, ref, **tol)


def _masked_step(net: nn.Module, loss: XECGLoss, length: int) -> dict[str, torch.Tensor]:
    """One masked training step's loss and gradients, on a batch padded at the end."""
    gen = torch.Generator().manual_seed(length)
    x = torch.randn(4, NUM_LEADS, length, generator=gen)
    mask = torch.ones(4, length, dtype=torch.bool)
    mask[1, length - 500:] = False
    mask[2, length - 900:] = False
    y = (torch.rand(4, NUM_CLASSES, generator=gen) > 0.7).float()
    total = loss(net(x, mask), y).total
    grads = torch.autograd.grad(total, list(net.parameters()))
    return {"loss": total.detach(), **{n: g for (n, _), g in zip(net.named_parameters(), grads)}}


def _graphs_over_lengths(name: str, backend: str) -> tuple[int, list, list]:
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    eager = MODELS[name](width=0.0625).train()
    compiled = MODELS[name](width=0.0625).train()
    compiled.load_state_dict(eager.state_dict())
    use_length_generic_layers(compiled)
    compiled.compile(dynamic=True, backend=backend)
    loss = XECGLoss(gamma=0.01)
    steps = [(_masked_step(compiled, loss, t), _masked_step(eager, loss, t)) for t in LENGTHS]
    graphs = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    return graphs, [c for c, _ in steps], [e for _, e in steps]


@pytest.mark.parametrize("name", list(MODELS))
def test_one_traced_graph_serves_every_bucket_length(name):
    """What dynamo captures does not depend on the length (with F.max_pool1d it made one graph
    per length); the slow test below adds autograd tracing and code generation."""
    graphs, compiled, eager = _graphs_over_lengths(name, "eager")
    assert graphs == 1  # 4 with the native layers
    for ours, ref in zip(compiled, eager):
        for key in ref:
            torch.testing.assert_close(ours[key], ref[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
def test_inductor_compiles_a_few_graphs_not_one_per_length():
    """With code generation: four bucket lengths give at most two graphs (inductor picks its
    kernels by size class), where torch 2.13 gave four before."""
    graphs, compiled, eager = _graphs_over_lengths("XECGNet", "inductor")
    assert graphs <= 2
    for ours, ref in zip(compiled, eager):
        for key in ref:
            torch.testing.assert_close(ours[key], ref[key], rtol=1e-3, atol=1e-4, msg=key)
