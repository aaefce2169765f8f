"""Explanation scores on hand-made maps: perfect, inverse and uninformative maps, the pointing
game's tolerance, AOPC's ordering, the pooled-to-input geometry and the summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xecg.explain.maps import GRADCAM_STRIDE, to_input_resolution
from xecg.explain.scores import (
    adjusted,
    aopc,
    bootstrap_mean,
    chance,
    covered,
    deletion_counts,
    evidence_mask,
    flat_scores,
    localisation,
    pointing,
    rma,
    rra,
    segments,
    summarise,
    widen,
)

FS = 500.0
T = 5000
TOL = 20  # 40 ms at 500 Hz


@pytest.fixture
def mask() -> np.ndarray:
    return evidence_mask([(1000, 1300), (3000, 3100)], T)


def test_a_map_equal_to_the_evidence_scores_one(mask):
    scores = localisation(mask.astype(float), mask, FS)
    for metric, (value, level) in scores.items():
        assert value == pytest.approx(1.0), metric
        assert adjusted(value, level) == pytest.approx(1.0), metric
    assert scores["rma"][1] == pytest.approx(400 / T)
    assert scores["pointing"][1] == pytest.approx((400 + 4 * TOL) / T)  # widened mask


def test_its_complement_scores_zero(mask):
    inverse = (~mask).astype(float)
    assert rma(inverse, mask) == 0.0
    assert rra(inverse, mask) == 0.0
    level = chance(mask)
    assert adjusted(0.0, level) == pytest.approx(-level / (1 - level))
    far = np.zeros(T)
    far[4500] = 1.0  # a peak far from any evidence
    assert pointing(far, mask, TOL) == 0.0
    # Negative values carry no relevance: A+ = max(A, 0).
    assert rma(inverse - 2.0 * mask, mask) == 0.0


@pytest.mark.parametrize("value", [0.3, 1.0, 7.5])
def test_a_constant_map_scores_the_chance_level(mask, value):
    flat = np.full(T, value)
    assert rma(flat, mask) == pytest.approx(chance(mask))
    assert rra(flat, mask) == pytest.approx(chance(mask))
    assert pointing(flat, mask, TOL) == pytest.approx(chance(widen(mask, TOL)))
    assert adjusted(rma(flat, mask), chance(mask)) == pytest.approx(0.0)
    # A map without positive mass is uniform too.
    assert rma(np.zeros(T), mask) == pytest.approx(chance(mask))
    assert rra(-flat, mask) == pytest.approx(chance(mask))


def test_rra_shares_ties_at_the_cut_off():
    # Pooled maps are constant over 243 samples: ties are the rule. Here K = 100 and the top
    # value covers 200 samples, half inside the mask: expected share inside 0.5.
    m = evidence_mask([(150, 250)], 1000)
    values = np.zeros(1000)
    values[100:300] = 1.0
    assert rra(values, m) == pytest.approx(0.5)
    values[200:210] = 2.0  # 10 clear winners inside, then 90 of 190 ties, 90 of them inside
    assert rra(values, m) == pytest.approx((10 + 90 * 90 / 190) / 100)


def test_pointing_game_tolerance_is_40_ms(mask):
    def peak_at(i: int) -> np.ndarray:
        v = np.zeros(T)
        v[i] = 1.0
        return v

    start, end = 1000, 1300  # end exclusive: the last evidence sample is 1299
    assert pointing(peak_at(start - TOL), mask, TOL) == 1.0  # just inside
    assert pointing(peak_at(start - TOL - 1), mask, TOL) == 0.0  # just outside
    assert pointing(peak_at(end - 1 + TOL), mask, TOL) == 1.0
    assert pointing(peak_at(end + TOL), mask, TOL) == 0.0
    assert localisation(peak_at(start - TOL), mask, FS)["pointing"][0] == 1.0
    # Several maximal samples: the share of them that hit.
    two = peak_at(1100) + peak_at(4500)
    assert pointing(two, mask, TOL) == 0.5


def test_adjusted_is_undefined_when_the_evidence_is_the_whole_record():
    assert math.isnan(adjusted(1.0, 1.0))


def test_coverage_needs_more_than_the_chance_share_for_every_label():
    a = evidence_mask([(0, 100)], 1000)
    b = evidence_mask([(500, 600)], 1000)
    both = (a | b).astype(float)
    assert covered(both, [a, b])
    assert not covered(a.astype(float), [a, b])
    assert covered(a.astype(float), [a, np.ones(1000, bool)])  # whole-record evidence: covered


def test_pooled_maps_return_to_input_resolution_with_the_pooling_geometry():
    pooled = np.array([1.0, 2.0, 3.0])
    out = to_input_resolution(pooled, 800)
    assert out.shape == (800,)
    assert (out[:243] == 1).all() and (out[243:486] == 2).all() and (out[486:729] == 3).all()
    assert (out[729:] == 3).all()  # the tail takes the last value
    zero = to_input_resolution(pooled, 800, tail="zero")
    assert (zero[:729] == out[:729]).all() and (zero[729:] == 0).all()
    # Batched (classes x T'), tensors, and the Grad-CAM layer's stride of 81.
    two = to_input_resolution(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), 170, GRADCAM_STRIDE)
    assert two.shape == (2, 170)
    assert (two[0, :81] == 1).all() and (two[0, 81:162] == 2).all() and (two[0, 162:] == 2).all()
    assert (two[1, 81:] == 4).all()


def test_aopc_is_higher_when_the_relevant_segment_goes_first():
    n = 243 * 8
    x = torch.ones(1, 12, n)
    relevant = 243 * 5

    def probability(batch):  # depends only on segment 5
        s = batch[:, :, relevant:relevant + 243].mean((1, 2))
        p = torch.sigmoid(4 * s - 2)
        return torch.stack([p, 1 - p], 1)

    values = np.zeros(n)
    values[relevant:relevant + 243] = 1.0
    good = aopc(probability, x, values, 0)
    bad = aopc(probability, x, -values, 0)  # the relevant segment ranked last
    assert good > 0.5 and bad == pytest.approx(0.0, abs=1e-6)
    counts = deletion_counts(len(segments(n)))
    assert counts[0] == 0 and counts[-1] == 4 and counts == sorted(counts)
    assert segments(500) == [(0, 243), (243, 486), (486, 500)]


def test_bootstrap_resamples_records_and_summaries_name_their_keys():
    mean, lo, hi = bootstrap_mean(np.array([1.0, 1.0, 1.0]), np.array(["a", "b", "c"]))
    assert (mean, lo, hi) == (1.0, 1.0, 1.0)
    mean, lo, hi = bootstrap_mean(np.array([0.0, 1.0, 0.5, np.nan]), np.array(["a", "b", "c", "d"]))
    assert mean == pytest.approx(0.5) and 0.0 <= lo < 0.5 < hi <= 1.0

    def row(record, model, method, label, metric, value, level):
        return {"record": record, "model": model, "method": method, "label": label,
                "metric": metric, "value": value, "chance": level,
                "adjusted": adjusted(value, level)}

    rows = [row("r1", "trained", "attention", "union", "rma", 0.8, 0.2),
            row("r2", "trained", "attention", "union", "rma", 0.6, 0.2),
            row("r1", "trained", "attention", "multilabel", "coverage", 1.0, float("nan")),
            row("r1", "trained", "cam", "PVC", "rma", 0.5, 0.1),
            row("r2", "trained", "cam", "STD", "rma", 0.7, 0.3),
            row("r1", "randomised", "attention", "union", "rma", 0.2, 0.2)]
    summary = summarise(rows, resamples=200)
    cam_all = next(r for r in summary if r["method"] == "cam" and r["label"] == "all")
    assert cam_all["n"] == 2 and cam_all["mean"] == pytest.approx(0.6)
    assert cam_all["chance"] == pytest.approx(0.2)
    flat = flat_scores(summary)
    assert flat["expl_rma_attention"] == pytest.approx(0.7)
    assert flat["expl_rma_adj_attention"] == pytest.approx(0.625)
    assert flat["expl_rma_cam"] == pytest.approx(0.6)
    assert flat["expl_coverage"] == flat["expl_coverage_attention"] == 1.0
    assert flat["expl_randomised_rma_attention"] == pytest.approx(0.2)
    assert flat["expl_randomised_rma_adj_attention"] == pytest.approx(0.0)
