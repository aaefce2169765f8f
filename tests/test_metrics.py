import numpy as np
import pytest
import torch

from xecg.bootstrap import BOOTSTRAP_METRICS, bootstrap_intervals
from xecg.classes import CLASS_INDEX, CLASSES
from xecg.metrics import (
    CPSCScore,
    ECGMetrics,
    SubsetAccuracy,
    interval_report,
    tune_thresholds,
)


def onehot(*names):
    y = torch.zeros(len(CLASSES))
    for n in names:
        y[CLASS_INDEX[n]] = 1
    return y


def test_subset_accuracy_splits_single_and_multilabel():
    target = torch.stack([onehot("AF"), onehot("AF", "RBBB"), onehot("PVC"), onehot("STD", "PVC")])
    preds = torch.stack([onehot("AF"), onehot("AF"), onehot("PAC"), onehot("STD", "PVC")])
    accs = {}
    for subset in ("all", "multi", "single"):
        m = SubsetAccuracy(subset)
        m.update(preds, target)
        accs[subset] = m.compute().item()
    assert accs == pytest.approx({"all": 0.5, "multi": 0.5, "single": 0.5})
    # Change one multilabel record to correct: only 'all' and 'multi' move.
    preds[1] = target[1]
    m_multi, m_single = SubsetAccuracy("multi"), SubsetAccuracy("single")
    m_multi.update(preds, target)
    m_single.update(preds, target)
    assert m_multi.compute().item() == pytest.approx(1.0)
    assert m_single.compute().item() == pytest.approx(0.5)


def test_cpsc_scorer_matches_hand_computed_confusion():
    # Record 1: AF, predicted AF (hit). Record 2: AF+RBBB, predicted RBBB (hit: among labels).
    # Record 3: Normal, predicted AF (miss -> row Normal, column AF).
    target = torch.stack([onehot("AF"), onehot("AF", "RBBB"), onehot("Normal")])
    probs = torch.stack([onehot("AF"), onehot("RBBB"), onehot("AF")]) * 0.9
    m = CPSCScore()
    m.update(probs, target)
    a = m.confusion
    i_af, i_rbbb, i_n = CLASS_INDEX["AF"], CLASS_INDEX["RBBB"], CLASS_INDEX["Normal"]
    assert a[i_af, i_af] == 1 and a[i_rbbb, i_rbbb] == 1 and a[i_n, i_af] == 1
    assert a.sum() == 3
    out = m.compute()
    # F1(AF) = 2*1 / (row 1 + col 2) = 2/3; F1(RBBB) = 1; F1(Normal) = 0; others 0.
    assert out["cpsc_Faf"].item() == pytest.approx(2 / 3)
    assert out["cpsc_f1"].item() == pytest.approx((2 / 3 + 1) / 9)
    # Fblock pools I-AVB, LBBB, RBBB: 2*1 / (1 + 1)
    assert out["cpsc_Fblock"].item() == pytest.approx(1.0)


def test_missed_multilabel_record_charges_lowest_cpsc_code():
    # AF (CPSC 2) + RBBB (CPSC 5), predicted PVC: the miss goes to row AF.
    m = CPSCScore()
    m.update(onehot("PVC")[None], onehot("RBBB", "AF")[None])
    assert m.confusion[CLASS_INDEX["AF"], CLASS_INDEX["PVC"]] == 1


def test_ecg_metrics_flat_dict_and_thresholds():
    torch.manual_seed(0)
    target = torch.stack([onehot("AF"), onehot("RBBB"), onehot("AF", "STD"), onehot("Normal")])
    probs = target * 0.4 + 0.05  # every true class at 0.45: below 0.5, above 0.3
    m = ECGMetrics()
    m.update(probs, target, thresholds=0.5)
    out = m.compute()
    assert out["micro_f1"].item() == 0.0
    m.reset()
    m.update(probs, target, thresholds=torch.full((9,), 0.3))
    out = m.compute()
    assert out["micro_f1"].item() == pytest.approx(1.0)
    assert out["subset_acc_multi"].item() == pytest.approx(1.0)
    assert {f"f1_{c}" for c in CLASSES} <= out.keys()
    assert out["auroc"].item() > 0.9


def test_tune_thresholds_finds_separating_value():
    probs = torch.tensor([[0.3] * 9, [0.2] * 9, [0.1] * 9])
    target = torch.zeros(3, 9)
    target[0, 0] = 1  # class 0 positive at 0.3, negatives at 0.2 and 0.1
    th = tune_thresholds(probs, target)
    assert 0.2 < th[0] <= 0.3
    assert torch.all(th[1:] == 0.5)  # no positives: untouched


def test_tune_thresholds_takes_the_middle_of_the_best_range():
    """A separable class: every threshold in (0.2, 0.8] gives F1 1; the middle of that range is
    chosen, not its lowest point just above the negatives. Where the best F1 is reached at one
    threshold only, that one."""
    probs = torch.tensor([[0.8] * 9, [0.9] * 9, [0.2] * 9, [0.1] * 9])
    target = torch.zeros(4, 9)
    target[:2, 0] = 1
    target[0, 1] = 1  # class 1: positive at 0.8, a negative at 0.9 above it
    th = tune_thresholds(probs, target)
    assert th[0] == pytest.approx(0.5, abs=0.006)
    # class 1 (not separable): its best F1, 2/3, holds for thresholds in (0.2, 0.8] as well.
    assert th[1] == pytest.approx(0.5, abs=0.006)
    uneven = torch.tensor([[0.3], [0.25], [0.6], [0.1]]).repeat(1, 9)
    labels = torch.tensor([[1.0], [0.0], [1.0], [0.0]]).repeat(1, 9)
    # F1 1 only for thresholds in (0.25, 0.3]: 0.26-0.30, middle 0.28.
    assert tune_thresholds(uneven, labels)[0] == pytest.approx(0.28, abs=0.006)


def _labelled(n: int, seed: int, absent: int | None = None):
    """``n`` records' multi-hot labels and predictions (85% of the labels right); class
    ``absent`` neither true nor predicted anywhere."""
    rng = np.random.default_rng(seed)
    true = rng.random((n, len(CLASSES))) < 0.15
    pred = np.where(rng.random(true.shape) < 0.85, true, ~true)
    if absent is not None:
        true[:, absent] = pred[:, absent] = False
    return true, pred


def test_bootstrap_estimates_are_ecg_metrics_values_and_lie_in_their_intervals():
    true, pred = _labelled(300, 0, absent=CLASS_INDEX["STE"])  # an F1 of 0 in the macro mean
    got = bootstrap_intervals(true, pred, resamples=200)
    m = ECGMetrics(with_auroc=False)
    m.update(torch.tensor(pred, dtype=torch.float32), torch.tensor(true, dtype=torch.float32))
    ref = m.compute()
    assert set(got) == set(BOOTSTRAP_METRICS)
    for metric, (estimate, low, high) in got.items():
        assert estimate == pytest.approx(ref[metric].item(), abs=1e-6), metric
        assert low < estimate < high, metric


def test_bootstrap_intervals_are_seeded_order_free_and_narrow_with_more_records():
    true, pred = _labelled(200, 1)
    first = bootstrap_intervals(true, pred, resamples=300, seed=0)
    assert bootstrap_intervals(true, pred, resamples=300, seed=0) == first
    assert bootstrap_intervals(true, pred, resamples=300, seed=1) != first
    shuffled = np.random.default_rng(2).permutation(len(true))  # another process order
    assert bootstrap_intervals(true[shuffled], pred[shuffled], resamples=300) == first
    more = bootstrap_intervals(*_labelled(3200, 1), resamples=300)
    for metric in ("micro_f1", "subset_acc"):  # 16x the records: about a quarter the width
        width, wider = more[metric][2] - more[metric][1], first[metric][2] - first[metric][1]
        assert 0.15 < width / wider < 0.4, metric


def test_records_without_a_kind_get_no_interval_for_it():
    true, pred = _labelled(50, 3)
    true[:, 1:] = False  # every record has at most one label: no multilabel records
    true[:, 0] = True
    got = bootstrap_intervals(true, pred, resamples=50)
    assert "subset_acc_multi" not in got and {"subset_acc", "subset_acc_single"} <= set(got)
    report = interval_report(torch.tensor(pred, dtype=torch.float32),
                             torch.tensor(true, dtype=torch.float32), torch.full((9,), 0.5))
    assert report["records"] == 50 and report["level"] == 0.95
    assert report["records_multi"] == 0 and report["records_single"] == 50
    assert report["subset_acc"] == list(bootstrap_intervals(true, pred)["subset_acc"][1:])
