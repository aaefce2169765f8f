"""XECGLoss on tiny hand-made R, A, y whose expected values are worked out by hand here."""

from __future__ import annotations

import math

import pytest
import torch

from xecg.losses import LossTerms, XECGLoss
from xecg.models import XECGNetOutput

LOG2 = math.log(2.0)


def _output(maps, attention, mask=None, attention_logits=None, perception_logits=None):
    """An XECGNetOutput around hand-made R (B x C x T') and A (B x T'); zero logits by default."""
    maps = torch.as_tensor(maps, dtype=torch.float32)
    b, c, t = maps.shape
    attention = torch.as_tensor(attention, dtype=torch.float32).reshape(b, 1, t)
    zeros = torch.zeros(b, c)
    return XECGNetOutput(
        perception_logits=zeros if perception_logits is None else perception_logits,
        attention_logits=zeros if attention_logits is None else attention_logits,
        probs=zeros + 0.5,
        mask=torch.ones(b, t, dtype=torch.bool) if mask is None else torch.as_tensor(mask),
        response_maps=maps, attention=attention)


def _two_label_record():
    """C = 9, T' = 2; labels AF (0) and RBBB (6); other classes' maps are 5 and must not count."""
    maps = torch.full((1, 9, 2), 5.0)
    maps[0, 0] = torch.tensor([2.0, 4.0])
    maps[0, 6] = torch.tensor([0.0, 2.0])
    y = torch.zeros(1, 9)
    y[0, [0, 6]] = 1.0
    return maps, torch.tensor([0.5, 1.0]), y


@pytest.mark.parametrize("distance, expected", [
    # positives: ref = ([2, 4] + [0, 2]) / 2 = [1, 3]; ref - A = [0.5, 2.0]
    ("l2", math.sqrt(0.5**2 + 2.0**2)),
    ("mse", (0.5**2 + 2.0**2) / 2),
    ("l1", (0.5 + 2.0) / 2),
])
def test_value_for_known_maps(distance, expected):
    maps, attention, y = _two_label_record()
    perception = torch.zeros(1, 9)
    perception[0, 0], perception[0, 1] = 3.0, -2.0
    # BCE with logits: log(1 + e^-x) for a positive, log(1 + e^x) for a negative.
    bce_perception = (math.log(1 + math.exp(-3.0)) + math.log(1 + math.exp(-2.0))
                      + math.log(1 + math.exp(0.0)) + 6 * LOG2) / 9
    terms = XECGLoss(gamma=0.1, distance=distance)(
        _output(maps, attention, perception_logits=perception), y)
    assert isinstance(terms, LossTerms)
    assert terms.bce_attention.item() == pytest.approx(LOG2)
    assert terms.bce_perception.item() == pytest.approx(bce_perception)
    assert terms.regularizer.item() == pytest.approx(expected)
    assert terms.total.item() == pytest.approx(LOG2 + bce_perception + 0.1 * expected)


def test_all9_reference_divides_by_the_number_of_classes():
    maps, attention, y = _two_label_record()
    # ref = ([2, 4] + [0, 2]) / 9 = [2/9, 6/9]
    expected = math.sqrt((2 / 9 - 0.5) ** 2 + (6 / 9 - 1.0) ** 2)
    terms = XECGLoss(reference="all9")(_output(maps, attention), y)
    assert terms.regularizer.item() == pytest.approx(expected)


def test_one_label_reference_is_that_class_map():
    maps = torch.tensor([[[0.2, 0.9, 0.4], [7.0, 7.0, 7.0]]])
    y = torch.tensor([[1.0, 0.0]])
    for distance in ("l2", "mse", "l1"):
        terms = XECGLoss(distance=distance)(_output(maps, maps[0, 0]), y)
        assert terms.regularizer.item() == pytest.approx(0.0, abs=1e-7)
    # The authors' all9 halves the map here (C = 2): ref - A = -A / 2.
    terms = XECGLoss(reference="all9")(_output(maps, maps[0, 0]), y)
    assert terms.regularizer.item() == pytest.approx(math.sqrt(0.1**2 + 0.45**2 + 0.2**2))


def test_record_without_labels():
    # Record 0 has no label; record 1: label 1, ref = [0, 2], A = 0 -> l2 = 2.
    maps = torch.tensor([[[1.0, 1.0], [3.0, 3.0]], [[9.0, 9.0], [0.0, 2.0]]])
    attention = torch.tensor([[0.6, 0.8], [0.0, 0.0]])
    y = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    positives = XECGLoss()(_output(maps, attention), y)
    assert positives.regularizer.item() == pytest.approx((0.0 + 2.0) / 2)
    # all9: record 0's reference is all zeros, its distance is |A| = 1; record 1: ref = [0, 1].
    all9 = XECGLoss(reference="all9")(_output(maps, attention), y)
    assert all9.regularizer.item() == pytest.approx((1.0 + 1.0) / 2)
    assert torch.isfinite(positives.total) and torch.isfinite(all9.total)


def test_batch_mean_and_authors_modulo():
    # Per-record l2: record 0 ref = [0, 3] -> 3; record 1 ref = [0.3, 0.4] -> 0.5; A = 0.
    maps = torch.tensor([[[0.0, 3.0], [1.0, 1.0]], [[1.0, 1.0], [0.3, 0.4]]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    attention = torch.zeros(2, 2)
    assert XECGLoss()(_output(maps, attention), y).regularizer.item() == pytest.approx(1.75)
    modulo = XECGLoss(batch_reduction="authors_modulo")(_output(maps, attention), y)
    assert modulo.regularizer.item() == pytest.approx((3 % 2 + 0.5 % 2) / 2)  # 0.75


@pytest.mark.parametrize("distance", ["l2", "mse", "l1"])
def test_padded_positions_do_not_count(distance):
    maps, attention, y = _two_label_record()
    mask = torch.tensor([[True, True, False]])
    loss = XECGLoss(distance=distance)
    values = []
    for fill in (0.0, 50.0):
        padded_maps = torch.cat([maps, torch.full((1, 9, 1), fill)], dim=2)
        padded_attention = torch.cat([attention, torch.tensor([fill / 100])])
        values.append(loss(_output(padded_maps, padded_attention, mask=mask), y).total.item())
    unpadded = loss(_output(maps, attention), y).total.item()
    assert values[0] == pytest.approx(unpadded) and values[1] == pytest.approx(unpadded)


def test_gradients_reach_attention_and_reference_maps():
    maps, attention, y = _two_label_record()
    maps.requires_grad_(True)
    attention.requires_grad_(True)
    XECGLoss(gamma=1.0)(_output(maps, attention), y).total.backward()
    assert attention.grad.abs().min() > 0
    assert maps.grad[0, [0, 6]].abs().sum() > 0
    # Only the present classes form the reference.
    assert (maps.grad[0, [1, 2, 3, 4, 5, 7, 8]] == 0).all()


def test_detached_reference_stops_gradient_into_r():
    maps, attention, y = _two_label_record()
    maps.requires_grad_(True)
    attention.requires_grad_(True)
    XECGLoss(gamma=1.0, detach_reference=True)(_output(maps, attention), y).total.backward()
    assert maps.grad is None
    assert attention.grad.abs().min() > 0


def test_zero_distance_and_zero_gamma_give_finite_gradients():
    maps = torch.tensor([[[0.2, 0.9]]], requires_grad=True)
    attention = maps.detach()[0, 0].clone().requires_grad_(True)
    XECGLoss(gamma=0.0)(_output(maps, attention), torch.ones(1, 1)).total.backward()
    assert torch.isfinite(attention.grad).all() and torch.isfinite(maps.grad).all()


def test_model_without_attention_gets_plain_bce():
    logits = torch.tensor([[2.0, -1.0]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0]])
    output = XECGNetOutput(perception_logits=logits, probs=torch.sigmoid(logits),
                           mask=torch.ones(1, 4, dtype=torch.bool))
    terms = XECGLoss(gamma=100.0)(output, y)
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))) / 2
    assert terms.total.item() == pytest.approx(expected)
    assert terms.bce_attention.item() == 0.0 and terms.regularizer.item() == 0.0
    terms.total.backward()
    assert logits.grad.abs().min() > 0


def test_low_precision_maps_are_reduced_in_float32():
    maps, attention, y = _two_label_record()
    output = _output(maps, attention)
    half = XECGNetOutput(perception_logits=output.perception_logits, probs=output.probs,
                         mask=output.mask, attention_logits=output.attention_logits,
                         response_maps=maps.bfloat16(), attention=output.attention.bfloat16())
    terms = XECGLoss()(half, y)
    assert terms.total.dtype == torch.float32
    assert terms.regularizer.item() == pytest.approx(math.sqrt(0.5**2 + 2.0**2))


def test_bad_options_and_labels():
    with pytest.raises(ValueError, match="reference"):
        XECGLoss(reference="all")
    with pytest.raises(ValueError, match="distance"):
        XECGLoss(distance="cosine")
    with pytest.raises(ValueError, match="batch_reduction"):
        XECGLoss(batch_reduction="sum")
    with pytest.raises(ValueError, match="gamma"):
        XECGLoss(gamma=-1.0)
    maps, attention, _ = _two_label_record()
    with pytest.raises(ValueError, match="labels must be B x C"):
        XECGLoss()(_output(maps, attention), torch.ones(1, 8))


def test_loss_records_its_arguments_and_refuses_unknown_choices():
    loss = XECGLoss(gamma=0.1, distance="mse")
    assert dict(loss.hparams) == {"gamma": 0.1, "reference": "positives", "distance": "mse",
                                  "detach_reference": False, "batch_reduction": "mean"}
    with pytest.raises(ValueError, match="distance must be one of 'l2', 'mse', 'l1'"):
        XECGLoss(distance="cosine")
