"""``xecg compare``: summaries over seeds, paired tests against a reference, Holm, bootstrap,
outputs and the clear errors, on hand-made metrics.json files."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fixtures import xecg_command, xecg_env
from scipy import stats

from xecg.bootstrap import BOOTSTRAP_METRICS, bootstrap_intervals
from xecg.classes import CLASSES
from xecg.compare import HEADLINE, holm, main, read_predictions

PNG = b"\x89PNG\r\n\x1a\n"

# micro-F1 per seed, chosen so the statistics can be done by hand; cnn lacks seed 4.
MICRO = {
    "abn": {0: 0.80, 1: 0.82, 2: 0.81, 3: 0.79, 4: 0.83},
    "xecgnet": {0: 0.83, 1: 0.84, 2: 0.82, 3: 0.82, 4: 0.86},
    "cnn": {0: 0.78, 1: 0.80, 2: 0.80, 3: 0.77},
}
OTHER = [m for m in HEADLINE if m != "micro_f1"] + [f"f1_{c}" for c in CLASSES] + ["expl_score"]


def run_metrics(variant: str, seed: int) -> dict:
    """Every metric of one run: micro-F1 from MICRO, the rest seeded pseudo-random numbers."""
    rng = np.random.default_rng(1000 * sum(map(ord, variant)) + seed)
    values = {m: round(float(rng.uniform(0.5, 0.9)), 4) for m in OTHER}
    return {"micro_f1": MICRO[variant][seed], **values, "note": "not a number"}





def write_run(root: Path, variant: str, seed: int | None, test: dict | None = None,
              folder: str | None = None, top: dict | None = None) -> Path:
    run = root / (folder or f"{variant}-s{seed}")
    run.mkdir(parents=True)
    if top is not None:
        (run / "metrics.json").write_text(json.dumps(top))
        return run
    data = {"variant": variant, "seed": seed,
            "protocol": {"experiment": variant, "split": "splits/paper.json", "policy": "crop",
                         "seed": 0},
            "model": {"model": variant, "lr": 3e-4}, "val": {"micro_f1": 0.5},
            "test": test if test is not None else run_metrics(variant, seed),
            "thresholds": [0.5] * len(CLASSES)}
    (run / "metrics.json").write_text(json.dumps(data))
    return run


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for variant, seeds in MICRO.items():
        for seed in seeds:
            write_run(root, variant, seed)
    return root


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(text: str) -> float:
    return math.nan if text == "" else float(text)


def summary_of(out: Path) -> dict[tuple[str, str], dict]:
    return {(r["variant"], r["metric"]): r for r in read_csv(out / "summary.csv")}


def paired_of(out: Path) -> dict[tuple[str, str], dict]:
    return {(r["variant"], r["metric"]): r for r in read_csv(out / "paired.csv")}


def test_summary_means_sds_and_t_intervals(runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(runs), "--out", str(out)]) == 0
    summary = summary_of(out)
    # By hand: abn micro-F1 mean 4.05 / 5 = 0.81; squared deviations 1+1+0+4+4 = 10e-4, / 4 ->
    # sd sqrt(2.5e-4) = 0.0158114; t(0.975, 4) = 2.776445 -> half-width 2.776445 * sd / sqrt 5.
    abn = summary[("abn", "micro_f1")]
    assert int(abn["n"]) == 5
    assert num(abn["mean"]) == pytest.approx(0.81)
    assert num(abn["sd"]) == pytest.approx(0.0158114, abs=1e-7)
    assert num(abn["ci_low"]) == pytest.approx(0.81 - 0.0196324, abs=1e-6)
    assert num(abn["ci_high"]) == pytest.approx(0.81 + 0.0196324, abs=1e-6)
    # Every numeric metric of every variant, against numpy/scipy on the same numbers.
    for variant, seeds in MICRO.items():
        for metric in ["micro_f1", *OTHER]:
            x = np.array([run_metrics(variant, s)[metric] for s in seeds])
            half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
            row = summary[(variant, metric)]
            assert int(row["n"]) == len(x)
            assert num(row["mean"]) == pytest.approx(x.mean())
            assert num(row["sd"]) == pytest.approx(x.std(ddof=1))
            assert num(row["ci_low"]) == pytest.approx(x.mean() - half)
            assert num(row["ci_high"]) == pytest.approx(x.mean() + half)
    assert ("abn", "note") not in summary  # strings are not metrics
    printed = capsys.readouterr().out
    assert printed == (out / "compare.md").read_text()
    assert "| abn | 5 | 0.810 ± 0.016 [0.790, 0.830]" in printed
    assert "cnn | 4 |" in printed and "(test split)" in printed
    assert 'policy = "crop"' in printed  # protocol common to the runs
    assert (out / "compare.png").read_bytes()[:8] == PNG


def test_paired_differences_p_values_and_holm(runs, tmp_path):
    out = tmp_path / "out"
    assert main([str(runs), "--out", str(out)]) == 0
    paired = paired_of(out)
    assert {v for v, _ in paired} == {"xecgnet", "cnn"}  # abn is the default reference
    # By hand: xecgnet - abn = .03 .02 .01 .03 .03, mean 0.024, sd sqrt(80e-6 ) = 0.0089443,
    # se 0.004, t = 6.0, half-width 2.776445 * 0.004 = 0.0111058.
    x = paired[("xecgnet", "micro_f1")]
    assert int(x["n"]) == 5 and x["seeds"] == "0;1;2;3;4"
    assert num(x["mean_diff"]) == pytest.approx(0.024)
    assert num(x["ci_low"]) == pytest.approx(0.024 - 0.0111058, abs=1e-6)
    assert num(x["ci_high"]) == pytest.approx(0.024 + 0.0111058, abs=1e-6)
    assert num(x["t_p"]) == pytest.approx(2 * stats.t.sf(6.0, 4))
    assert math.isnan(num(x["wilcoxon_p"]))  # n = 5 < 6: no Wilcoxon
    # cnn lacks seed 4: paired over seeds 0-3 only; cnn - abn = -.02 -.02 -.01 -.02.
    c = paired[("cnn", "micro_f1")]
    assert int(c["n"]) == 4 and c["seeds"] == "0;1;2;3"
    assert num(c["mean_diff"]) == pytest.approx(-0.0175)
    a = [MICRO["abn"][s] for s in range(4)]
    b = [MICRO["cnn"][s] for s in range(4)]
    assert num(c["t_p"]) == pytest.approx(stats.ttest_rel(b, a).pvalue)
    # Holm over the two comparisons of each headline metric.
    for metric in HEADLINE:
        p = sorted(num(paired[(v, metric)]["t_p"]) for v in ("xecgnet", "cnn"))
        low, high = min(1.0, 2 * p[0]), max(min(1.0, 2 * p[0]), p[1])
        got = sorted(num(paired[(v, metric)]["t_p_holm"]) for v in ("xecgnet", "cnn"))
        assert got == pytest.approx([low, high])
        for v in ("xecgnet", "cnn"):
            seeds = sorted(set(MICRO[v]) & set(MICRO["abn"]))
            va = [run_metrics(v, s)[metric] for s in seeds]
            ref = [run_metrics("abn", s)[metric] for s in seeds]
            assert num(paired[(v, metric)]["mean_diff"]) == pytest.approx(np.mean(va) -
                                                                          np.mean(ref))
            assert num(paired[(v, metric)]["t_p"]) == pytest.approx(stats.ttest_rel(va, ref).pvalue)


def test_reference_option_and_wilcoxon_from_six_seeds(tmp_path):
    root = tmp_path / "runs"
    a = [0.70, 0.72, 0.71, 0.69, 0.73, 0.74, 0.70]
    b = [0.72, 0.73, 0.74, 0.70, 0.76, 0.75, 0.705]
    for seed, (x, y) in enumerate(zip(a, b)):
        write_run(root, "base", seed, {"micro_f1": x})
        write_run(root, "new", seed, {"micro_f1": y})
    out = tmp_path / "out"
    assert main([str(root), "--out", str(out), "--reference", "new",
                 "--metrics", "micro_f1"]) == 0
    row = paired_of(out)[("base", "micro_f1")]
    diff = np.array(a) - np.array(b)
    assert row["reference"] == "new" and int(row["n"]) == 7
    assert num(row["mean_diff"]) == pytest.approx(diff.mean())
    assert num(row["wilcoxon_p"]) == pytest.approx(stats.wilcoxon(diff).pvalue)
    # One comparison: Holm leaves it as it is.
    assert num(row["wilcoxon_p_holm"]) == pytest.approx(num(row["wilcoxon_p"]))


def test_holm_hand_example():
    # Sorted 0.005 0.01 0.03 0.04 -> x4 x3 x2 x1 = 0.02 0.03 0.06 0.04 -> monotone 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([math.nan, 0.02, 0.5])  # NaN is not a test: m = 2
    assert math.isnan(adjusted[0]) and adjusted[1:] == pytest.approx([0.04, 0.5])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1


def write_predictions(run: Path, n: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = rng.random((n, len(CLASSES))) < 0.15
    true[np.arange(n), rng.integers(0, len(CLASSES), n)] = True  # every record has a label
    pred = true ^ (rng.random(true.shape) < 0.08)
    with open(run / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["record", *[f"p_{c}" for c in CLASSES], "predicted", "true", "source"])
        for i, (t, p) in enumerate(zip(true, pred)):
            probs = np.where(p, 0.9, 0.1)
            w.writerow([f"A{i:04d}", *[f"{x:.4f}" for x in probs],
                        ";".join(c for c, on in zip(CLASSES, p) if on),
                        ";".join(c for c, on in zip(CLASSES, t) if on), "cpsc"])
    return true, pred


def test_bootstrap_interval_contains_estimate_and_is_seeded(runs, tmp_path):
    true, pred = write_predictions(runs / "abn-s0")
    tp = (true & pred).sum()
    micro = 2 * tp / (2 * tp + (true ^ pred).sum())
    subset = (true == pred).all(1).mean()
    outs = [tmp_path / name for name in ("a", "b", "c")]
    assert main([str(runs), "--out", str(outs[0])]) == 0
    assert main([str(runs), "--out", str(outs[1])]) == 0
    assert main([str(runs), "--out", str(outs[2]), "--bootstrap-seed", "7"]) == 0
    rows = {r["metric"]: r for r in read_csv(outs[0] / "bootstrap.csv")}
    assert set(rows) == set(BOOTSTRAP_METRICS)
    assert rows["micro_f1"]["variant"] == "abn" and rows["micro_f1"]["seed"] == "0"
    assert int(rows["micro_f1"]["records"]) == 80
    for metric, point in (("micro_f1", micro), ("subset_acc", subset)):
        r = rows[metric]
        assert num(r["estimate"]) == pytest.approx(point)
        assert num(r["ci_low"]) < num(r["estimate"]) < num(r["ci_high"])
    # Same seed, same interval; another seed, another one.
    first = (outs[0] / "bootstrap.csv").read_text()
    assert first == (outs[1] / "bootstrap.csv").read_text()
    assert first != (outs[2] / "bootstrap.csv").read_text()
    assert "Per-run bootstrap" in (outs[0] / "compare.md").read_text()


def test_bootstrap_estimates_agree_with_xecg_metrics(tmp_path):
    torch = pytest.importorskip("torch")
    from xecg.metrics import ECGMetrics

    run = tmp_path / "run"
    run.mkdir()
    write_predictions(run, n=50, seed=3)
    true, pred = read_predictions(run / "predictions.csv", None)
    m = ECGMetrics(with_auroc=False)
    m.update(torch.tensor(pred, dtype=torch.float32), torch.tensor(true, dtype=torch.float32))
    ref = m.compute()
    got = bootstrap_intervals(true, pred, resamples=10, seed=0)
    assert set(got) == set(BOOTSTRAP_METRICS)
    for metric, (estimate, _, _) in got.items():
        assert estimate == pytest.approx(ref[metric].item(), abs=1e-6), metric


def test_a_run_without_predictions_shows_the_intervals_its_test_stage_wrote(tmp_path):
    """A run of ``xecg train`` writes no predictions.csv but keeps its test stage's intervals
    in metrics.json (``intervals.test``): compare shows those, as written."""
    root = tmp_path / "runs"
    run = write_run(root, "xecgnet", 0, test={"micro_f1": 0.8, "subset_acc": 0.7})
    data = json.loads((run / "metrics.json").read_text())
    data["intervals"] = {"test": {"level": 0.95, "resamples": 1000, "seed": 0, "records": 300,
                                  "micro_f1": [0.77, 0.83], "subset_acc": [0.65, 0.75]}}
    (run / "metrics.json").write_text(json.dumps(data))
    write_run(root, "abn", 0, test={"micro_f1": 0.79, "subset_acc": 0.69})  # has none
    damaged = write_run(root, "cnn", 0, test={"micro_f1": 0.7, "subset_acc": 0.6})
    cnn = json.loads((damaged / "metrics.json").read_text())
    cnn["intervals"] = {"test": {"micro_f1": "0.6-0.8", "subset_acc": [0.5], "records": "x"}}
    (damaged / "metrics.json").write_text(json.dumps(cnn))  # left out, not a crash
    out = tmp_path / "out"
    assert main([str(root), "--out", str(out)]) == 0
    rows = {r["metric"]: r for r in read_csv(out / "bootstrap.csv")}
    assert set(rows) == {"micro_f1", "subset_acc"} and rows["micro_f1"]["variant"] == "xecgnet"
    assert [num(rows["micro_f1"][k]) for k in ("estimate", "ci_low", "ci_high")] == [
        0.8, 0.77, 0.83]
    assert rows["subset_acc"]["records"] == "300"
    assert "0.800 [0.770, 0.830]" in (out / "compare.md").read_text()


def test_fallback_variant_and_seed_and_duplicates(tmp_path, capsys):
    root = tmp_path / "runs"
    for seed in range(3):
        # No top-level variant/seed: protocol.experiment and config.yaml's seed_everything.
        data = {"protocol": {"experiment": "old"}, "model": {"model": "abn"},
                "test": {"micro_f1": 0.5 + seed / 100}}
        run = write_run(root, "x", None, folder=f"old-{seed}", top=data)
        (run / "config.yaml").write_text(f"seed_everything: {seed}\ntrainer:\n  max_epochs: 3\n")
    # An earlier run of old seed 0, kept beside it; older, so it is ignored.
    dup = write_run(root, "x", None, folder="old-0.20240101-000000",
                    top={"protocol": {"experiment": "old"}, "seed": 0,
                         "test": {"micro_f1": 0.1}})
    os.utime(dup / "metrics.json", (1, 1))
    for seed in range(3):
        write_run(root, "new", seed, {"micro_f1": 0.6 + seed / 100})
    out = tmp_path / "out"
    assert main([str(root), "--out", str(out)]) == 0
    summary = summary_of(out)
    assert int(summary[("old", "micro_f1")]["n"]) == 3
    assert num(summary[("old", "micro_f1")]["mean"]) == pytest.approx(0.51)
    row = paired_of(out)[("old", "micro_f1")]  # no abn: first alphabetically, "new"
    assert row["reference"] == "new" and row["seeds"] == "0;1;2"
    assert num(row["mean_diff"]) == pytest.approx(-0.1)
    assert "old-0.20240101-000000" in capsys.readouterr().err


def test_subprocess_writes_files_in_default_folder(runs):
    proc = subprocess.run([*xecg_command(), "compare", str(runs)], capture_output=True,
                          text=True, env=xecg_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = runs / "compare"  # default: the first DIR's compare/
    for name in ("compare.md", "summary.csv", "paired.csv", "compare.png"):
        assert (out / name).is_file(), name
    assert (out / "compare.png").read_bytes()[:8] == PNG
    assert "| variant | n | micro-F1 |" in proc.stdout
    assert proc.stdout == (out / "compare.md").read_text()


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_error_no_metrics_json(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    assert error_line(capsys) == f"xecg: error: no metrics.json found under {empty}"


def test_error_invalid_json_alone_and_skipped_beside_valid(tmp_path, capsys):
    root = tmp_path / "runs"
    bad = root / "broken" / "metrics.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"test": {"micro_f1": 0.8,')
    assert main([str(root)]) == 2
    line = error_line(capsys)
    assert str(bad) in line and "not valid JSON" in line
    write_run(root, "abn", 0, {"micro_f1": 0.8})
    write_run(root, "abn", 1, {"micro_f1": 0.9})
    assert main([str(root), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and str(bad) in err
    assert int(summary_of(tmp_path / "out")[("abn", "micro_f1")]["n"]) == 2


def test_error_unknown_reference(runs, capsys):
    assert main([str(runs), "--reference", "nope"]) == 2
    assert error_line(capsys) == ("xecg: error: reference variant 'nope' not found; "
                                  "available: abn, cnn, xecgnet")


def test_error_unknown_metric(runs, capsys):
    assert main([str(runs), "--metrics", "micro_f1", "bogus"]) == 2
    assert "metric bogus not in any run's 'test' metrics" in error_line(capsys)


def test_val_leaves_out_runs_whose_fit_did_not_finish(tmp_path, capsys):
    """``--split val``: validation is written every epoch, so a run killed or pruned mid-fit
    holds some epoch's metrics; only runs whose fit finished (or that were tested) count."""
    root = tmp_path / "runs"
    top = {"variant": "abn", "protocol": {"experiment": "abn"}, "val": {"micro_f1": 0.6}}
    write_run(root, "abn", 0, top={**top, "seed": 0, "fit_finished": True})
    write_run(root, "abn", 1, top={**top, "seed": 1, "fit_finished": True,
                                   "val": {"micro_f1": 0.7}})
    killed = write_run(root, "abn", 2, top={**top, "seed": 2, "fit_finished": False,
                                            "val_of": "fit epoch 1", "val": {"micro_f1": 0.1}})
    tested = write_run(root, "abn", 3, test={"micro_f1": 0.65})  # tested: its fit ended
    assert main([str(root), "--split", "val", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert (f"{killed / 'metrics.json'}: its fit did not finish (killed, pruned or still "
            "running; or written before 2026-11-28), so its 'val' metrics are of fit epoch 1, "
            "not of the run: skipped") in err
    assert str(tested) not in err
    assert int(summary_of(tmp_path / "out")[("abn", "micro_f1")]["n"]) == 3
