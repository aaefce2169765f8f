"""``bench.py --quick`` runs its comparisons and writes results a reader can use (speed itself is
measured by running the script, never by tests)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

ROOT = Path(bench.__file__).resolve().parents[2]


def _run_script(name: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python tests/benchmarks/NAME ARGS`` as typed, with this checkout's xecg importable;
    fails the test on a non-zero exit."""
    proc = subprocess.run([sys.executable, str(Path(bench.__file__).with_name(name)), *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_quick_run_writes_the_comparisons_as_json(tmp_path):
    out = tmp_path / "results.json"
    code = bench.main(["--quick", "--in-process", "--no-validation", "--only",
                       "lightning_vs_plain", "bucket_vs_pad", "loader_transfer", "ddp_balance",
                       "--out",
                       str(out), "--wfdb", str(tmp_path / "absent")])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["quick"] is True and results["machine"]["cpus"] >= 1
    lvp = results["lightning_vs_plain"]
    assert lvp["config"]["width"] == 0.25 and lvp["config"]["length"] == 2880
    for name in ("lightning", "plain"):
        assert lvp[name]["steps_per_s"] > 0 and lvp[name]["peak_rss_mb"] > 0
    assert math.isclose(lvp["ratio"], lvp["lightning"]["steps_per_s"] / lvp["plain"]["steps_per_s"])
    bvp = results["bucket_vs_pad"]
    assert "divided by 10" in bvp["scaled"] and bvp["config"]["bucket_multiple"] == 97
    for name in ("pad", "bucket"):
        assert bvp[name]["epoch_s"] > 0 and bvp[name]["first_epoch_s"] > 0
    # Bucketing computes far fewer samples than padding every record to 7,200.
    assert bvp["real_fraction"]["bucket"] > 3 * bvp["real_fraction"]["pad"]
    transfer = results["loader_transfer"]  # float32 x against bf16 x, copied as pinning does
    assert transfer["config"]["length"] == bench.PAPER_LENGTH // 10
    for name in ("float32", "bf16", "bf16_threads"):
        assert transfer[name]["windows_per_s"] > 0 and transfer[name]["main_ms_per_window"] > 0
    assert transfer["threads_speedup"] == pytest.approx(
        transfer["bf16_threads"]["windows_per_s"] / transfer["bf16"]["windows_per_s"])
    assert "worker threads" in bench.table(results)
    # DDP under bucket: each step's batches are of similar work, unlike the shuffled deal
    for world in (2, 4, 8):
        balance = results["ddp_balance"][f"processes_{world}"]
        assert 0 < balance["shuffled"] < balance["planner"] <= 1
    assert "8 processes" in bench.table(results)
    assert "loader" not in results and "prepare" not in results
    assert "lightning_vs_plain" in bench.table(results)


def test_the_bucket_multiple_scales_with_the_lengths():
    """A scaled run divides the GPU plan's multiple (972; 9,720 compiled) like every length,
    so its buckets pad as much as full scale's do; --bucket-multiple overrides it."""
    from argparse import Namespace

    assert bench.bucket_multiple(Namespace(scale=1, bucket_multiple=None)) == 972
    assert bench.bucket_multiple(Namespace(scale=1, bucket_multiple=None), compile_=True) == 9720
    assert bench.bucket_multiple(Namespace(scale=10, bucket_multiple=None)) == 97
    assert bench.bucket_multiple(Namespace(scale=5, bucket_multiple=None)) == 194
    assert bench.bucket_multiple(Namespace(scale=10, bucket_multiple=243)) == 243
    lengths = bench.cpsc_lengths(1600, seed=2, scale=10)
    real = lengths.sum()
    full = bench.cpsc_lengths(1600, seed=2)
    at_full = full.sum() / bench._bucketed_samples(full, 32, 972)
    # the scaled multiple computes about the real share full scale does; 243 computed far less
    assert abs(real / bench._bucketed_samples(lengths, 32, 97) - at_full) < 0.03
    assert real / bench._bucketed_samples(lengths, 32, 243) < at_full - 0.08


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
    assert {c["pad_on_device"] for c in seen
            if c["case"] == "loader" and c.get("policy") == "pad"} == {False, True}
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


def test_a_failed_contender_keeps_the_other_ones_numbers(tmp_path, monkeypatch):
    """On a lent GPU the compiled bucket case ran past its time: the compiled pad case that had
    finished must still be reported, and the run must say it failed."""
    def fake(self, c):
        if c["policy"] == "bucket" and c.get("mask_padding", True):
            raise RuntimeError(f"case ran past 1 s: policy={c['policy']}\nmore lines")
        return {"epoch_s": [9.0, 5.0], "epoch_cpu_s": [9.5, 5.5], "steps_per_s": 3.0,
                "peak_rss_mb": 100.0, "compiled_graphs": 1}

    monkeypatch.setattr(bench.Runner, "__call__", fake)
    out = tmp_path / "r.json"
    code = bench.main(["--quick", "--records", "40", "--only", "bucket_vs_pad_compiled",
                       "--bucket-rounds", "2", "--out", str(out)])
    assert code == 1
    r = json.loads(out.read_text())["bucket_vs_pad_compiled"]
    assert r["pad"]["epoch_s"] == 5.0 and r["pad"]["first_epoch_s"] == 9.0
    assert r["pad"]["compiled_graphs"] == 1 and r["pad"]["epoch_s_runs"] == [5.0, 5.0]
    assert "bucket" not in r and "speedup" not in r
    assert r["failed"] == {"bucket": "case ran past 1 s: policy=bucket"}
    assert r["bucket_unmasked"]["epoch_s"] == 5.0 and r["speedup_unmasked"] == 1.0
    text = bench.table(json.loads(out.read_text()))
    assert "5.00 s/epoch" in text and "bucket FAILED case ran past 1 s" in text


def test_a_stopped_case_leaves_what_it_printed_in_the_log(tmp_path):
    log = tmp_path / "results.log"
    runner = bench.Runner(in_process=False, threads=1, log=log, timeout=0.5)
    with pytest.raises(RuntimeError, match="ran past 0.5 s"):
        runner({"case": "step", "device": "cpu", "width": 0.0625, "batch": 2, "length": 972,
                "precision": "32-true", "warmup": 1, "steps": 10**6, "mask": False})
    assert "(stopped after 0.5 s)" in log.read_text()


@pytest.mark.slow
def test_compile_lengths_runs_as_typed():
    """README: ``python3 tests/benchmarks/compile_lengths.py --device cuda``; here its CPU path
    with the smallest network (compiling takes about a minute on this CPU)."""

    proc = _run_script("compile_lengths.py", "--device", "cpu", "--width", "0.0625",
                       "--batches", "2", "--lengths", "972", "1944", "--steps", "1")
    rows = re.findall(r"length +(\d+) batch +(\d+): .* graphs so far (\d+)", proc.stdout)
    assert [(int(t), int(b)) for t, b, _ in rows] == [(972, 2), (1944, 2)]
    assert 1 <= int(rows[-1][2]) <= 2  # one graph for every length (two on a CPU: README)


def test_masked_step_runs_as_typed():
    """README: ``python tests/benchmarks/masked_step.py``, small. The megabytes and ops it
    prints are exact: a masked step writes more than an unmasked one (the masked statistics),
    and less than the 3.36x of the version before 2026-11-27's masked norm; it runs more ops,
    fewer than the 4.10x of the version before commit 86d3687 (each is a kernel launch on a GPU),
    and dispatches more ops still (views cost host time but launch nothing)."""

    proc = _run_script("masked_step.py", "--width", "0.0625", "--batch", "4", "--length", "1944",
                       "--repeats", "1", timeout=300)
    assert re.search(r"\d+ CPU-ms per step without a mask, \d+ with one", proc.stdout)
    ratio = float(re.search(r"MB with one \(([\d.]+)x\)", proc.stdout).group(1))
    assert 1.2 < ratio < 3.0, proc.stdout
    ops = float(re.search(r"ops that write.* with one \(([\d.]+)x\)", proc.stdout).group(1))
    assert 2.0 < ops < 3.6, proc.stdout
    # Every dispatch, views included, costs the host time on a GPU: more than the writes; under
    # bf16 autocast (--bf16, as the GPU trains) the casts add to both.
    bf16 = _run_script("masked_step.py", "--width", "0.0625", "--batch", "4", "--length", "1944",
                       "--repeats", "1", "--bf16", timeout=300).stdout
    assert "bf16 autocast" in bf16

    def counts(out: str, what: str) -> list[int]:
        found = re.search(what + r".*: ([\d,]+) without a mask, ([\d,]+) with one", out)
        return [int(n.replace(",", "")) for n in found.groups()]

    for out in (proc.stdout, bf16):
        for dispatched, wrote in zip(counts(out, "ops dispatched"), counts(out, "ops that write")):
            assert dispatched > wrote, out
    for fp32, half in zip(counts(proc.stdout, "ops dispatched"), counts(bf16, "ops dispatched")):
        assert half > fp32, (proc.stdout, bf16)


@pytest.mark.slow
def test_profile_fit_runs_as_typed(tmp_path):
    """benchmarks/README: ``profile_fit.py --device cuda --compile --out $OUT``; here its CPU
    path, uncompiled: each contender's summary, op tables, op counts and trace."""
    _run_script("profile_fit.py", "--records", "96", "--start", "2", "--steps", "2",
                "--out", str(tmp_path))
    counts: dict[str, float] = {}
    for mode in ("lightning", "plain"):
        summary = json.loads((tmp_path / mode / "summary.json").read_text())
        assert summary["steps"] == 2 and summary["wall_ms_per_step"] > 0
        assert 0 < summary["main_thread_cpu_ms_per_step"] <= 1.5 * summary["wall_ms_per_step"]
        assert "convolution" in (tmp_path / mode / "ops.txt").read_text()
        ops = json.loads((tmp_path / mode / "op_counts.json").read_text())
        assert ops["aten::convolution"]["calls"] > 0  # per step: same network, same count
        assert ops["aten::convolution"]["calls"] == counts.setdefault("conv", ops[
            "aten::convolution"]["calls"])
        assert (tmp_path / mode / "trace.json.gz").stat().st_size > 1000


def test_sync_sites_names_where_the_host_waits(recwarn):
    """profile_fit.py --sync-sites: each synchronising op's warning is counted at its site, by
    the innermost frame and by the innermost of xecg's or the benchmarks' own (torch's CUDA sync
    debug mode raises them on a GPU; here warnings of the same text stand in for it), other
    warnings pass through, and closing restores the warning filters."""
    import warnings

    filters = list(warnings.filters)

    def waits() -> None:
        warnings.warn(f"x.item() {bench.SYNC_WARNING}", stacklevel=1)

    syncs = bench.SyncSites("cpu")
    syncs.open()
    for _ in range(3):
        waits()  # "always": every one counted, not once per line
    warnings.warn("something else", stacklevel=1)
    syncs.close()
    waits()  # closed: not counted
    report = syncs.report(steps=2)
    assert report["syncs_per_step"] == 1.5
    [site] = report["sync_sites"]
    assert site["count"] == 3 and site["site"].startswith("benchmarks/test_bench.py:")
    assert site["site"].endswith(" waits")
    assert [str(w.message) for w in recwarn] == ["something else", f"x.item() {bench.SYNC_WARNING}"]
    assert warnings.filters == filters


def test_idle_gaps_say_where_the_device_waited_and_why():
    """profile_fit.py's summaries on a GPU: from the profile's Chrome trace, the device's idle
    time per step and, for its largest gaps, the host op that launched the work ending each and
    any blocking call running as it began (here a trace written by hand: two steps, a gap after
    a sync before a batch's copy, one before a compiled graph's launch, one too short to count,
    and two kernels that overlap)."""
    def x(cat, name, ts, dur, tid=1, **args):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "tid": tid,
                "pid": 1, "args": args}

    events = [
        x("kernel", "k1", 0, 100, tid=7, correlation=1),
        x("kernel", "k2", 100, 100, tid=7, correlation=2),
        x("cuda_runtime", "cudaStreamSynchronize", 150, 55),
        x("cpu_op", "aten::to", 460, 35), x("cpu_op", "aten::copy_", 470, 20),
        x("cuda_runtime", "cudaMemcpyAsync", 480, 5, correlation=3),
        x("gpu_memcpy", "Memcpy HtoD (Pinned -> Device)", 500, 100, tid=7, correlation=3),
        x("kernel", "k4", 610, 90, tid=7, correlation=4),  # 10 us after: too short to count
        x("cpu_op", "## Call CompiledFxGraph abc", 950, 250),
        x("cuda_driver", "cuLaunchKernel", 990, 5, correlation=5),
        x("kernel", "triton_poi_fused_0", 1000, 100, tid=7, correlation=5),
        x("kernel", "k6", 1050, 100, tid=7, correlation=6),  # overlaps the one before
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "main"}},
    ]
    report = bench.idle_gaps(events, steps=2)
    # span 0-1150 us, busy 200 + 100 + 90 + 150 = 540: 610 us idle over two steps
    assert report["device_idle_ms_per_step"] == pytest.approx(0.305)
    assert report["idle_gaps_counted"] == 2
    assert report["idle_gaps"] == [
        {"gap": "Memcpy HtoD (Pinned -> Device) launched by aten::copy_",
         "waited": "cudaStreamSynchronize", "count": 1, "ms_per_step": pytest.approx(0.15)},
        {"gap": "triton_poi_fused_0 launched by ## Call CompiledFxGraph abc", "waited": "-",
         "count": 1, "ms_per_step": pytest.approx(0.15)}]
    # a CPU's profile has no device events
    assert bench.idle_gaps([x("cpu_op", "aten::mm", 0, 10)], steps=1) == {
        "device_idle_ms_per_step": None, "idle_gaps": []}


def test_smoke_and_partial_runs_keep_the_measured_numbers():
    """README's `bench.py --quick` and `bench.py --only lightning_vs_plain` each wrote
    benchmarks/results.json anew, losing the full run's other comparisons."""
    bench_dir = bench.ROOT / "benchmarks"
    assert bench.results_file(None, False, True, False, False) == (
        bench_dir / "results-quick.json", False)
    assert bench.results_file(None, False, False, True, False) == (
        bench_dir / "results.json", True)
    assert bench.results_file(None, True, False, True, False) == (
        bench_dir / "results-gpu.json", True)
    assert bench.results_file(None, False, False, False, False) == (
        bench_dir / "results.json", False)  # the whole set: written anew
    mine = Path("mine.json")
    assert bench.results_file(mine, False, False, True, False) == (mine, False)
    assert "/benchmarks/results-quick.json" in (bench.ROOT / ".gitignore").read_text()


def test_conv_layout_refuses_a_bad_variant_before_compiling():
    """``conv_layout.py --variants FORM:BATCH[:nocudnn]``: a misspelt variant stops the run at
    once, naming it, not after the variants before it have compiled for minutes."""
    proc = subprocess.run([sys.executable, str(Path(bench.__file__).with_name("conv_layout.py")),
                           "--variants", "conv1d:static", "conv2d:static:cudnn"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert "--variants conv2d:static:cudnn: expected FORM:BATCH[:nocudnn]" in proc.stderr
    assert "compile_s" not in proc.stdout


def test_window_summary_names_the_libraries_and_the_forms_without_cudnn(tmp_path):
    """The window's page: each check's heading names torch and cuDNN, a form run without cuDNN
    is marked so with its last loss against the first form's, and layout_ops' rows are errors
    against float64 on the CPU, a wrong one marked."""
    import window_summary

    form = {"batch": "static", "grad_err_compiled_median": 1e-6, "grad_err_compiled_first": 2e-6,
            "losses": [1.1, 1.0], "ms_per_step": 30.0, "transpose_ms_per_step": 0.0}
    (tmp_path / "conv-layout-bf16.json").write_text(json.dumps({
        "torch": "2.11.0+cu130", "cudnn": 91002,
        "results": [{**form, "form": "conv2d", "cudnn": True},
                    {**form, "form": "conv2d", "cudnn": False, "losses": [1.1, 0.9]}]}))
    (tmp_path / "layout-ops.json").write_text(json.dumps({
        "torch": "2.11.0+cu130", "cudnn": 91002,
        "results": [{"precision": "bf16", "op": "conv2d_h1", "way": "eager_cl_nocudnn",
                     "out": 0.003, "grad_x": 0.9, "grad_w": 0.003, "grad_b": 0.003},
                    {"precision": "bf16", "op": "conv2d_h1", "way": "eager",
                     "out": 0.003, "grad_x": 0.003, "grad_w": 0.003, "grad_b": 0.003}]}))
    page = window_summary.summarise(tmp_path).splitlines()
    assert "## conv-layout-bf16 (torch 2.11.0+cu130, cuDNN 91002)" in page
    # each form's last fixed-batch loss against the first form's
    assert "conv2d:static | 1e-06 / 2e-06 | 1.10000 -> 1.00000 | +0.00% | 30.0 | 0.00" in page
    assert ("conv2d:static:nocudnn | 1e-06 / 2e-06 | 1.10000 -> 0.90000 | -10.00% | 30.0 | 0.00"
            in page)
    assert ("## layout-ops: relative error against float64 on the CPU "
            "(torch 2.11.0+cu130, cuDNN 91002)") in page
    assert ("bf16 conv2d_h1 eager_cl_nocudnn | 3.0e-03 | 9.0e-01 | 3.0e-03 | 3.0e-03 <- WRONG"
            in page)
    assert "bf16 conv2d_h1 eager | 3.0e-03 | 3.0e-03 | 3.0e-03 | 3.0e-03" in page


def test_window_summary_names_the_ops_a_lightning_step_adds(tmp_path):
    """Under each profiled fit, the page lists the ops a Lightning step calls more often than
    the plain loop's (from each contender's op_counts.json), most first, none that it calls as
    often; without both contenders' counts, no list."""
    import window_summary

    fit = tmp_path / "profile-pad-native"
    counts = {"lightning": {"aten::copy_": {"calls": 12.0, "self_cpu_us": 90.0},
                            "cudaStreamSynchronize": {"calls": 1.0, "self_cpu_us": 400.0},
                            "aten::mul": {"calls": 150.0, "self_cpu_us": 800.0},
                            "Optimizer.step#Adam.step": {"calls": 5.0, "self_cpu_us": 9.0}},
              "plain": {"aten::copy_": {"calls": 4.0, "self_cpu_us": 30.0},
                        "aten::mul": {"calls": 150.0, "self_cpu_us": 790.0}}}
    for mode, ops in counts.items():
        (fit / mode).mkdir(parents=True)
        (fit / mode / "op_counts.json").write_text(json.dumps(ops))
    (fit / "fits.json").write_text(json.dumps({"lightning": {}, "plain": {}}))
    page = window_summary.summarise(tmp_path).splitlines()
    start = page.index("  ops a Lightning step calls more often than the plain loop's:")
    assert page[start + 1:] == [
        "  aten::copy_: 12.0 vs 4.0 calls/step, 90 vs 30 host us",
        "  cudaStreamSynchronize: 1.0 vs 0.0 calls/step, 400 vs 0 host us"]
    (fit / "plain" / "op_counts.json").unlink()
    assert not any("more often" in line for line in window_summary.summarise(tmp_path).splitlines())
