"""Models: shapes, the paper's size, masks (padding changes nothing in eval mode), the registry,
and that a tiny batch can be overfitted. Tests parametrised by ``name`` run over every model
registered in :data:`xecg.models.MODELS`, so a new model file is tested without editing here."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from xecg.classes import NUM_CLASSES, NUM_LEADS
from xecg.losses import XECGLoss
from xecg.models import (
    DOWNSAMPLE,
    MODELS,
    CNNBaseline,
    XECGNet,
    XECGNetOutput,
    downsample_mask,
    masked_mean,
)
from xecg.models.backbone import MaskedBatchNorm1d


def _randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so eval mode is a real test."""
    gen = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen))
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.data.copy_(torch.randn(n, generator=gen))
            module.bias.data.copy_(torch.randn(n, generator=gen))
    return model.eval()


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("length", [2880, 7500, 2916, 3001])
def test_output_shapes(name, length):
    torch.manual_seed(0)
    model = MODELS[name](width=0.25)
    out = model(torch.randn(2, NUM_LEADS, length))
    t = length // DOWNSAMPLE
    assert isinstance(out, XECGNetOutput)
    assert out.perception_logits.shape == (2, NUM_CLASSES)
    assert out.probs.shape == (2, NUM_CLASSES)
    assert ((out.probs > 0) & (out.probs < 1)).all()
    assert out.mask.shape == (2, t) and out.mask.dtype == torch.bool and out.mask.all()
    if out.attention is None:  # a model without an attention branch has none of its outputs
        assert out.attention_logits is None and out.response_maps is None
        assert torch.allclose(out.probs, torch.sigmoid(out.perception_logits))
    else:
        assert out.attention_logits.shape == (2, NUM_CLASSES)
        assert out.response_maps.shape == (2, NUM_CLASSES, t)
        assert out.attention.shape == (2, 1, t)
        assert (out.response_maps >= 0).all()
        assert ((out.attention > 0) & (out.attention < 1)).all()
        expected = (torch.sigmoid(out.attention_logits) + torch.sigmoid(out.perception_logits)) / 2
        assert torch.allclose(out.probs, expected)


def test_full_width_is_the_papers_network():
    model = XECGNet()
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params - 4.1e6) / 4.1e6 < 0.03, n_params
    # Channel plan of the feature extractor: 13 conv layers ending at 128 channels.
    convs = [m for m in model.features.modules() if isinstance(m, nn.Conv1d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256,
                                               512, 512, 512, 512, 256, 128]
    assert all(c.kernel_size == (3,) for c in convs)
    out = model.eval()(torch.randn(1, NUM_LEADS, 2880))
    assert out.response_maps.shape == (1, NUM_CLASSES, 11)


def test_width_scales_channels_with_a_floor():
    slim = XECGNet(width=0.25)
    assert slim.features.out_channels == 32
    assert XECGNet(width=0.01).features.out_channels == 8
    assert sum(p.numel() for p in slim.parameters()) < 0.1 * 4.1e6


@pytest.mark.parametrize("activation, n_relu", [("relu", 13), ("none", 0)])
def test_activation_option(activation, n_relu):
    model = XECGNet(width=0.25, activation=activation)
    relus = [m for m in model.features.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == n_relu
    head = model.perception_branch.head
    assert isinstance(head[1], nn.ReLU if activation == "relu" else nn.Identity)


def test_downsample_mask_needs_the_whole_window():
    mask = torch.tensor([[True] * 7 + [False] * 2, [False] * 4 + [True] * 5])
    assert downsample_mask(mask).tolist() == [[True, True, False], [False, False, True]]
    long = torch.arange(3 * DOWNSAMPLE).unsqueeze(0) < 2 * DOWNSAMPLE + 242
    assert downsample_mask(long, levels=5).tolist() == [[True, True, False]]
    both_ends = torch.tensor([[False] * 2 + [True] * 11 + [False] * 2, [False] * 15])
    assert downsample_mask(both_ends).tolist() == [[False, True, True, True, False],
                                                   [False] * 5]


@pytest.mark.parametrize("length", [243 * 9, 243 * 9 + 2])
def test_downsample_mask_equals_pooling_the_padding(length):
    """Against the definition (max-pool the padding), for start and end padding of every
    amount, at every level."""
    real = torch.arange(length).unsqueeze(0)
    masks = torch.cat([real < torch.arange(0, length + 1, 7).unsqueeze(1),
                       real >= torch.arange(0, length + 1, 7).unsqueeze(1)])
    padding = (~masks).unsqueeze(1).float()
    for levels in range(1, 6):
        padding = nn.functional.max_pool1d(padding, 3, 3)
        assert torch.equal(downsample_mask(masks, levels), padding.squeeze(1) == 0)


def test_a_mask_with_gaps_is_refused():
    mask = torch.ones(2, 486, dtype=torch.bool)
    mask[1, 100:200] = False  # real samples on both sides of a gap
    with pytest.raises(ValueError, match="one run of real samples"):
        XECGNet(width=0.0625)(torch.randn(2, NUM_LEADS, 486), mask)


def test_masked_mean_equals_unpadded_mean():
    x = torch.tensor([[[1.0, 2.0, 6.0, 100.0, -7.0]]])
    mask = torch.tensor([[True, True, True, False, False]])
    assert masked_mean(x, mask).item() == pytest.approx(3.0)
    assert masked_mean(x, None).item() == pytest.approx(102.0 / 5)
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("length", [2880, 2916, 3001])
def test_end_padding_with_mask_matches_unpadded_input(name, length):
    torch.manual_seed(0)
    model = _randomise_batchnorm(MODELS[name](width=0.25))
    padded_length = 15 * DOWNSAMPLE
    x = torch.randn(1, NUM_LEADS, length)
    padded = torch.zeros(1, NUM_LEADS, padded_length)
    padded[..., :length] = x
    mask = torch.arange(padded_length).unsqueeze(0) < length
    with torch.no_grad():
        ref, out, unmasked = model(x), model(padded, mask), model(padded)
    t = length // DOWNSAMPLE
    assert out.mask.tolist() == [[i < t for i in range(padded_length // DOWNSAMPLE)]]
    assert torch.allclose(out.perception_logits, ref.perception_logits, atol=1e-5)
    assert torch.allclose(out.probs, ref.probs, atol=1e-6)
    # Without the mask the padding does change the result: the test above can fail.
    assert not torch.allclose(unmasked.perception_logits, ref.perception_logits, atol=1e-5)
    if ref.attention is not None:
        assert torch.allclose(out.attention_logits, ref.attention_logits, atol=1e-5)
        assert torch.allclose(out.response_maps[..., :t], ref.response_maps, atol=1e-5)
        assert torch.allclose(out.attention[..., :t], ref.attention, atol=1e-6)
        assert (out.response_maps[..., t:] == 0).all() and (out.attention[..., t:] == 0).all()


@pytest.mark.parametrize("name", list(MODELS))
def test_end_padding_in_training_mode_changes_nothing(name):
    """Batch statistics count only real samples: a training step on padded records gives the
    unpadded outputs and running statistics."""
    torch.manual_seed(0)
    model = MODELS[name](width=0.25).train()
    plain, masked, unmasked = (copy.deepcopy(model) for _ in range(3))
    length, padded_length = 2916, 15 * DOWNSAMPLE
    x = torch.randn(2, NUM_LEADS, length)
    padded = torch.zeros(2, NUM_LEADS, padded_length)
    padded[..., :length] = x
    mask = (torch.arange(padded_length) < length).expand(2, -1)
    ref, out = plain(x), masked(padded, mask)
    unmasked(padded)
    assert torch.allclose(out.perception_logits, ref.perception_logits, atol=1e-4)
    assert torch.allclose(out.probs, ref.probs, atol=1e-5)
    ref_state, out_state = plain.state_dict(), masked.state_dict()
    for key, value in ref_state.items():
        assert torch.allclose(out_state[key].float(), value.float(), atol=1e-5), key
    # Without the mask, the zeros enter the statistics: the comparison above can fail.
    first_bn = next(k for k in ref_state if k.endswith("running_mean"))
    assert not torch.allclose(unmasked.state_dict()[first_bn], ref_state[first_bn], atol=1e-5)


def test_masked_batchnorm_without_padding_is_batchnorm():
    torch.manual_seed(0)
    x = torch.randn(4, 8, 50)
    ours, reference = MaskedBatchNorm1d(8), nn.BatchNorm1d(8)
    y = ours(x, torch.ones(4, 50, dtype=torch.bool))
    assert torch.allclose(y, reference(x), atol=1e-5)
    assert torch.allclose(ours.running_mean, reference.running_mean, atol=1e-6)
    assert torch.allclose(ours.running_var, reference.running_var, atol=1e-5)
    assert ours.num_batches_tracked == reference.num_batches_tracked == 1


def test_masked_batchnorm_statistics_are_float64_accurate_over_millions_of_positions():
    """The masked statistics over a batch padded to 72,000 samples are those of float64 to
    float32 rounding (sums of 2 million squares in float32 lose 0.2% when added naively), and
    the output is zero at padded positions."""
    torch.manual_seed(0)
    x = torch.randn(32, 4, 72000) * 3 + 0.5
    mask = torch.arange(72000) < torch.randint(3000, 72001, (32, 1))
    bn = MaskedBatchNorm1d(4, momentum=1.0)  # running statistics := this batch's
    y = bn(x, mask)
    valid = x.double().permute(1, 0, 2)[:, mask]  # C x N valid samples
    n = valid.shape[1]
    assert torch.allclose(bn.running_mean.double(), valid.mean(1), rtol=1e-6, atol=1e-6)
    assert torch.allclose(bn.running_var.double(), valid.var(1), rtol=1e-6)  # unbiased, n - 1
    assert n > 1_000_000 and (y.permute(1, 0, 2)[:, ~mask] == 0).all()


def test_start_padding_marks_padded_positions_invalid():
    torch.manual_seed(0)
    model = _randomise_batchnorm(XECGNet(width=0.25))
    pad = 4 * DOWNSAMPLE + 100
    x = torch.zeros(2, NUM_LEADS, 12 * DOWNSAMPLE)
    x[..., pad:] = torch.randn(2, NUM_LEADS, x.shape[-1] - pad)
    mask = torch.arange(x.shape[-1]).expand(2, -1) >= pad
    with torch.no_grad():
        out = model(x, mask)
    # Pooled positions 0..3 are all padding and 4 straddles the boundary: all invalid.
    assert out.mask[0].tolist() == [False] * 5 + [True] * 7
    assert (out.response_maps[..., :5] == 0).all() and (out.attention[..., :5] == 0).all()
    assert (out.attention[..., 5:] > 0).all()


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = XECGNet(width=0.25)
    x, y = torch.randn(4, NUM_LEADS, 2880), torch.eye(NUM_CLASSES)[:4]
    XECGLoss(gamma=1.0)(model(x), y).total.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


@pytest.mark.parametrize("name", list(MODELS))
def test_registered_models_record_their_arguments(name):
    model = MODELS[name](width=0.5, activation="none")
    assert model.hparams["width"] == 0.5 and model.hparams["activation"] == "none"
    rebuilt = MODELS[name](**model.hparams)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]


def test_registry_and_bad_inputs():
    assert MODELS["XECGNet"] is XECGNet and MODELS["CNNBaseline"] is CNNBaseline
    from xecg.models import register_model

    with pytest.raises(ValueError, match="two models are named XECGNet"):
        register_model(type("XECGNet", (nn.Module,), {}))
    with pytest.raises(ValueError, match="activation"):
        XECGNet(activation="gelu")
    model = XECGNet(width=0.25)
    with pytest.raises(ValueError, match="B x 12 x T"):
        model(torch.randn(2, 8, 2880))
    with pytest.raises(ValueError, match="shorter than 243"):
        model(torch.randn(2, 12, 200))
    with pytest.raises(ValueError, match="mask must be"):
        model(torch.randn(2, 12, 2880), torch.ones(2, 2000, dtype=torch.bool))


@pytest.mark.parametrize("name", list(MODELS))
def test_tiny_batch_is_overfitted(name):
    torch.manual_seed(0)
    x = torch.randn(8, NUM_LEADS, 2880)
    y = (torch.rand(8, NUM_CLASSES) < 0.3).float()
    model, loss = MODELS[name](width=0.25), XECGLoss(gamma=0.01)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(30):
        terms = loss(model(x), y)
        optimiser.zero_grad()
        terms.total.backward()
        optimiser.step()
    assert terms.bce_perception.item() < 0.05
    if model(x).attention is not None:
        assert terms.bce_attention.item() < 0.2
    assert torch.equal((model(x).probs > 0.5).float(), y)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_input_rounded_to_the_autocast_type_changes_nothing(name, dtype):
    """``data.half_transfer`` sends ``x`` as the 16-bit type of the run's autocast: it only
    enters the first convolution, which autocast rounds to that type anyway, so the outputs and
    gradients are those of the float32 input, bit for bit (training mode, with a mask)."""
    torch.manual_seed(0)
    model = MODELS[name](width=0.125).train()
    x = torch.randn(3, NUM_LEADS, 4 * DOWNSAMPLE)
    mask = torch.arange(4 * DOWNSAMPLE) < torch.tensor([[4 * DOWNSAMPLE], [700], [500]])
    results = []
    for inp in (x, x.to(dtype).float()):
        model.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            out = model(inp, mask)
        out.probs.float().sum().backward()
        results.append((out.probs, [p.grad.clone() for p in model.parameters()]))
    assert not torch.equal(x, x.to(dtype).float())  # the rounding is there to be absorbed
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.equal(a, b)
