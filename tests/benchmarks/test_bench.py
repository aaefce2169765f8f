"""``bench.py --quick`` runs its comparisons and writes results a reader can use (speed itself is
measured by running the script, never by tests)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def test_quick_run_writes_the_comparisons_as_json(tmp_path):
    out = tmp_path / "results.json"
    code = bench.main(["--quick", "--in-process", "--no-validation", "--only",
                       "lightning_vs_plain", "bucket_vs_pad", "--out", str(out),
                       "--wfdb", str(tmp_path / "absent")])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["quick"] is True and results["machine"]["cpus"] >= 1
    lvp = results["lightning_vs_plain"]
    assert lvp["config"]["width"] == 0.25 and lvp["config"]["length"] == 2880
    for name in ("lightning", "plain"):
        assert lvp[name]["steps_per_s"] > 0 and lvp[name]["peak_rss_mb"] > 0
    assert math.isclose(lvp["ratio"], lvp["lightning"]["steps_per_s"] / lvp["plain"]["steps_per_s"])
    bvp = results["bucket_vs_pad"]
    assert "divided by 10" in bvp["scaled"] and bvp["config"]["bucket_multiple"] == 243
    for name in ("pad", "bucket"):
        assert bvp[name]["epoch_s"] > 0 and bvp[name]["first_epoch_s"] > 0
    # Bucketing computes far fewer samples than padding every record to 7,200.
    assert bvp["real_fraction"]["bucket"] > 3 * bvp["real_fraction"]["pad"]
    assert "loader" not in results and "prepare" not in results
    assert "lightning_vs_plain" in bench.table(results)


def test_gpu_plan_has_a_cpu_path_for_checking_it(tmp_path, monkeypatch):
    """``--gpu --device cpu --quick``: the GPU plan's cases (paper lengths scaled down, bf16,
    compiled) without a GPU, to check the script before a GPU machine runs it."""
    seen = []  # the cases it would run (results are left empty: its summaries fail)
    monkeypatch.setattr(bench.Runner, "__call__", lambda self, c: seen.append(c) or {})
    bench.main(["--gpu", "--device", "cpu", "--quick", "--only", "lightning_vs_plain",
                "bucket_vs_pad", "bucket_vs_pad_compiled", "model_only",
                "--out", str(tmp_path / "r.json")])
    paper = [c for c in seen if c["case"] == "fit" and c["mode"] == "plain"
             and c["policy"] == "pad"]  # lightning_vs_plain_paper's plain loop
    assert paper and {c["precision"] for c in paper} == {"bf16-mixed"}
    assert {c["length"] for c in paper} == {bench.PAPER_LENGTH // 10}  # scaled on a CPU
    assert {c["compile"] for c in seen if c["case"] == "fit"} == {False, True}
    assert {c["device"] for c in seen} == {"cpu"}
    assert not any(c["case"] == "train_eval" for c in seen)  # no short trainings on a GPU
    # model_only: the network alone with and without the mask, the loader alone on padded
    # batches with and without pad_on_device; the padded epoch runs as the paper (no mask).
    assert {c["mask"] for c in seen if c["case"] == "step"} == {False, True}
    assert {c["trim"] for c in seen if c["case"] == "loader" and c.get("policy") == "pad"} == \
        {False, True}
    assert {c.get("mask_padding", True) for c in seen
            if c["case"] == "fit" and c["mode"] == "lightning" and c["policy"] == "pad"
            and c["length"] == bench.PAPER_LENGTH // 10 and c["compile"] is False} >= {False}


@pytest.mark.slow
def test_gpu_plan_runs_on_a_cpu(tmp_path):
    out = tmp_path / "results-gpu.json"
    code = bench.main(["--gpu", "--device", "cpu", "--quick", "--in-process", "--only",
                       "lightning_vs_plain", "bucket_vs_pad", "bucket_vs_pad_compiled",
                       "--out", str(out)])
    results = json.loads(out.read_text())
    assert code == 0, results
    assert results["lightning_vs_plain_paper"]["config"]["precision"] == "bf16-mixed"
    assert results["bucket_vs_pad_compiled"]["config"]["compile"] is True
    assert results["bucket_vs_pad_compiled"]["bucket"]["compiled_graphs"] >= 1
