"""The README's benchmark commands, run as a user types them (each in a subprocess, minutes each:
``slow``). They check that the scripts run and write what the docs say they write, not the speeds
(which benchmarks measure, never tests)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile

import pytest
from fixtures import ROOT, xecg_env

pytestmark = pytest.mark.slow


def quick_bench(out, *args: str) -> subprocess.CompletedProcess:
    """``python tests/benchmarks/bench.py --quick --out OUT ARGS``, which must succeed."""
    proc = subprocess.run([sys.executable, "tests/benchmarks/bench.py", "--quick", "--out",
                           str(out), *args], cwd=ROOT, env=xecg_env(), capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_quick_bench_writes_every_comparison(tmp_path):
    """``bench.py --quick`` (README "Benchmarks"): every default comparison in the JSON, with a
    ratio that was computed, and the table printed."""
    out = tmp_path / "results-quick.json"
    proc = quick_bench(out)
    results = json.loads(out.read_text())
    for key in ("lightning_vs_plain", "lightning_overhead", "bucket_vs_pad", "loader_transfer",
                "loader", "ddp_balance"):
        assert key in results, key
        assert f"\n{key} " in proc.stdout, key  # a row of the printed table
    assert results["lightning_vs_plain"]["ratio"] > 0
    assert results["bucket_vs_pad"]["speedup"] > 0
    assert results["bucket_vs_pad"]["pad"]["epoch_s"] > 0


def test_gpu_window_script_runs_on_a_cpu(tmp_path):
    """``DEVICE=cpu bash tests/benchmarks/gpu_window.sh`` (benchmarks/README.md): the steps that
    do not need CUDA finish; in float32 the compiled 2-D form's gradients are the eager
    network's, as xecg's layers' are; the archive holds both compiled fits' summaries, and the
    log each fit's epochs and unprofiled steps/s."""
    env = xecg_env(OUT=str(tmp_path), DEVICE="cpu", PY=sys.executable)
    proc = subprocess.run(["bash", "tests/benchmarks/gpu_window.sh"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "window.log").read_text()
    # pytest, conv_layout.py twice, layout_ops.py, 2 fits
    assert log.count("==== exit 0 ") == 6, log[-3000:]
    assert "skipped (out of time)" not in log
    with tarfile.open(tmp_path / "window.tgz") as tar:
        layout = json.load(tar.extractfile("./conv-layout-fp32.json"))
        bf16 = json.load(tar.extractfile("./conv-layout-bf16.json"))
        ops = json.load(tar.extractfile("./layout-ops.json"))["results"]
        summaries = [json.load(tar.extractfile(f"./profile-pad-{run}/summary.json"))
                     for run in ("native/lightning", "native/plain", "conv2d-static/lightning")]
    assert [r["form"] for r in layout["results"]] == ["conv1d", "conv2d"]
    for r in layout["results"]:
        assert r["grad_err_compiled_median"] < 1e-3, r
    # the same training steps on one batch: float32 losses of the two forms step by step
    native, conv2d = (r["losses"] for r in layout["results"])
    assert len(native) == len(conv2d) >= 6 and native[-1] < native[0]
    assert conv2d == pytest.approx(native, rel=1e-3)
    # and in bf16, where they differ by its rounding (0.3% after 12 steps at width 0.25)
    native, conv2d = (r["losses"] for r in bf16["results"])
    assert len(native) == len(conv2d) >= 6 and native[-1] < native[0]
    assert conv2d == pytest.approx(native, rel=0.03)
    # each op of a block, on contiguous and channels-last tensors, eager and compiled, is
    # float64's on the CPU (float32: to its rounding; bf16: to bf16's); no cuDNN ways on a CPU
    assert {(r["precision"], r["way"]) for r in ops} == {
        (p, w) for p in ("fp32", "bf16") for w in ("eager", "eager_cl", "compiled_cl")}
    for r in ops:
        limit = 1e-5 if r["precision"] == "fp32" else 0.05
        assert max(r[k] for k in ("out", "grad_x", "grad_w", "grad_b")) < limit, r
    for summary in summaries:
        assert summary["steps"] == 2 and summary["wall_ms_per_step"] > 0
        # the ops that make the host wait for a GPU, counted over the profiled steps: none here
        assert summary["syncs_per_step"] == 0 and summary["sync_sites"] == []
        # where a GPU waited, from the profile's trace (a CPU's has no device events)
        assert summary["device_idle_ms_per_step"] is None and summary["idle_gaps"] == []
    assert '"unprofiled_steps_per_s": ' in log and '"epoch_s": [' in log
    # the page of answers at the end, also from the archive as a later session reads it
    page = log[log.index("# GPU window summary"):]
    for part in ("## conv-layout-bf16", "## conv-layout-fp32", "conv2d:static |",
                 "## layout-ops: relative error against float64 on the CPU (torch ",
                 "fp32 max_pool1d compiled_cl |", "fp32 block eager |",
                 "## profile-pad-native", "## profile-pad-conv2d-static", "plain |"):
        assert part in page, page
    again = subprocess.run([sys.executable, "tests/benchmarks/window_summary.py",
                            str(tmp_path / "window.tgz")], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0 and again.stdout.strip() == page.strip(), again.stderr
    # each epoch's mean training loss, as it ends and in the fit's summary
    assert log.count("mean training loss ") >= 4 and '"epoch_loss": [' in log


def test_a_run_of_some_comparisons_keeps_the_others(tmp_path):
    """``bench.py --only NAME`` replaces that comparison and keeps the rest, each with its own
    stamp (here with ``--out FILE --merge``, which is what ``--only`` does to results.json)."""
    out = tmp_path / "results.json"
    quick_bench(out, "--only", "ddp_balance")
    first = json.loads(out.read_text())["ddp_balance"]
    quick_bench(out, "--only", "loader", "--merge")
    results = json.loads(out.read_text())
    assert results["ddp_balance"] == first  # kept as it was
    assert "loader" in results


def test_progress_bar_benchmark_runs(tmp_path):
    """``python3 tests/benchmarks/progress_bar.py --out FILE`` (README): both bars' fits finish
    and the file holds a median step for each round of each."""
    out = tmp_path / "bar.json"
    proc = subprocess.run([sys.executable, "tests/benchmarks/progress_bar.py", "--rounds", "1",
                           "--records", "64", "--out", str(out)], cwd=ROOT, env=xecg_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ms = json.loads(out.read_text())["median_step_cpu_ms"]
    assert set(ms) == {"tqdm_every_step", "steady"}
    assert all(len(v) == 1 and v[0] > 0 for v in ms.values())
