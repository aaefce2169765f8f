"""``xecg ablate``: a grid of variants x seeds through the real command (a process per run) on
the tiny store: run folders with metrics.json saying what they are, one W&B group with variant
and seed tags, re-runs that skip finished runs and resume unfinished ones, a failing variant that
does not stop the others, one-line errors for bad ablation files, and ``--dry-run``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
import yaml
from fixtures import ROOT, xecg_command, xecg_env
from test_training import offline_runs, wandb_records

from xecg import ablate
from xecg.errors import ConfigError

GOOD = ("abn", "cnn")
SEEDS = (0, 1)


def xecg(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``xecg ARGS`` in a fresh process, running this checkout's code."""
    return subprocess.run([*xecg_command(), *args], capture_output=True,
                          text=True, env=xecg_env(), cwd=ROOT, timeout=timeout)


def write_ablation(path: Path, **fields) -> Path:
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def grid_file(tiny_config, tmp_path_factory) -> Path:
    """An ablation of the tiny experiment (1 epoch of 2 batches): a variant whose override the
    training parser rejects, listed first, then abn and cnn; seeds 0 and 1."""
    folder = tmp_path_factory.mktemp("ablation")
    config = tiny_config(folder, "tiny", trainer={"limit_train_batches": 2,
                                                  "limit_val_batches": 2})
    return write_ablation(
        folder / "tiny-grid.yaml", name="tiny-grid", experiment=config.name,
        overrides={"early_stopping.patience": 3, "trainer.max_epochs": 1,
                   "explanations.max_records": 2},
        variants={"broken": {"model.loss.init_args.reference": "bogus"},
                  "abn": {"model.loss.gamma": 0.0},
                  "cnn": {"model.net.class_path": "xecg.models.CNNBaseline"}},
        seeds=list(SEEDS), reference="abn")


@pytest.fixture(scope="module")
def grid(grid_file) -> tuple[Path, subprocess.CompletedProcess]:
    """The grid's output folder (the default, ``runs/<stem>`` beside the file) and the run."""
    result = xecg("ablate", str(grid_file), "--no-compare")
    return grid_file.parent / "runs" / "tiny-grid", result


def test_the_grid_runs_every_run_and_reports_the_failing_variant(grid):
    out, result = grid
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    # One progress line per run, seed-major (every variant of a seed before the next seed),
    # the broken variant first within each seed: the others still ran after it.
    progress = [ln for ln in lines if ln.startswith("[")]
    assert len(progress) == 6
    for line, (variant, seed) in zip(progress, [(v, s) for s in SEEDS
                                                for v in ("broken", *GOOD)]):
        assert f" {variant} " in line and f"seed {seed} " in line, line
        assert ("FAILED" if variant == "broken" else "done") in line, line
        if variant != "broken":
            assert "test micro-F1 0." in line and "CPU" in line
    # The parser's reason is shown, and the failures are listed at the end with their logs.
    assert "Got value: bogus" in result.stdout
    assert "2 of 6 runs failed" in result.stderr
    for seed in SEEDS:
        assert f"broken-seed{seed}: exit 2" in result.stderr
        assert (out / "logs" / f"broken-seed{seed}.log").is_file()


def test_each_run_folder_says_what_it_is(grid, tiny_data):
    out, _ = grid
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/seed*")) == [
        f"{v}/seed{s}" for v in GOOD for s in SEEDS]
    for variant in GOOD:
        for seed in SEEDS:
            run = out / variant / f"seed{seed}"
            report = json.loads((run / "metrics.json").read_text())
            assert (report["variant"], report["seed"], report["ablation"]) == (
                variant, seed, "tiny-grid")
            assert 0 <= report["test"]["micro_f1"] <= 1 and "auroc" in report["test"]
            assert report["protocol"]["split"] == str(tiny_data.split)
            ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu",
                              weights_only=False)
            hp = ckpt["hyper_parameters"]
            assert hp["net"]["class_path"].endswith(
                "CNNBaseline" if variant == "cnn" else "XECGNet")
            assert hp["loss"]["init_args"]["gamma"] == (0.0 if variant == "abn" else 0.01)
            saved = yaml.safe_load((run / "config.yaml").read_text())
            assert saved["seed_everything"] == seed
            assert saved["early_stopping"]["patience"] == 3
    # Same variant, other seed: other weights.
    a, b = (torch.load(out / "abn" / f"seed{s}" / "checkpoints" / "last.ckpt",
                       map_location="cpu", weights_only=False)["state_dict"] for s in SEEDS)
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_wandb_runs_share_the_group_and_carry_variant_and_seed_tags(grid):
    out, _ = grid
    seen = set()
    for variant in GOOD:
        for seed in SEEDS:
            (run,) = offline_runs(out / variant / f"seed{seed}")
            (log,) = run.glob("run-*.wandb")
            (info,) = [r.run for r in wandb_records(log) if r.WhichOneof("record_type") == "run"]
            assert info.run_group == "tiny-grid" and info.job_type == "ablation"
            assert list(info.tags) == [variant, f"seed{seed}"]
            assert info.display_name == f"{variant}-seed{seed}"
            seen.add(info.run_id)
    assert len(seen) == 4


def _snapshot(out: Path) -> dict[str, float]:
    """The runs' own files and their times. Links are left out: W&B links each run's
    ``logs/debug-core.log`` to its service's shared log, which any later run may append to."""
    return {str(p): p.lstat().st_mtime_ns for v in GOOD for p in (out / v).rglob("*")
            if p.is_file() and not p.is_symlink()}


def test_a_rerun_skips_finished_runs(grid, grid_file, capsys):
    out, _ = grid
    before = _snapshot(out)
    start = time.monotonic()
    result = xecg("ablate", str(grid_file), "--variants", *GOOD, "--no-compare")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 60  # no training started
    progress = [ln for ln in result.stdout.splitlines() if ln.startswith("[")]
    assert len(progress) == 4 and all("skipped" in ln and "micro-F1 0." in ln for ln in progress)
    assert _snapshot(out) == before  # nothing written, no new checkpoint
    assert "trained with other" not in result.stdout

    # The same folders under a changed variant definition and changed common overrides (which
    # went unnoticed before 2026-11-28): still skipped, with a note naming what changed.
    changed = yaml.safe_load(grid_file.read_text())
    changed["variants"]["abn"] = {"model.loss.gamma": 0.0, "model.lr": 0.001}
    changed["overrides"]["trainer.max_epochs"] = 2
    changed["out"] = str(out)
    other = write_ablation(grid_file.with_name("changed.yaml"), **changed)
    capsys.readouterr()
    assert ablate.main([str(other), "--variants", "abn", "--no-compare"]) == 0
    assert _snapshot(out) == before
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
    assert len(lines) == 2 and all(
        ln.endswith("(trained with other overrides: model.lr unset -> 0.001, "
                    "trainer.max_epochs 1 -> 2; delete the folder to re-run)") for ln in lines)


def test_an_unfinished_run_resumes_from_last(grid, grid_file):
    out, _ = grid
    run = out / "abn" / "seed1"
    report = json.loads((run / "metrics.json").read_text())
    del report["test"]  # as if it stopped before testing
    (run / "metrics.json").write_text(json.dumps(report))
    run_id = (run / "wandb_id").read_text()
    others = {k: v for k, v in _snapshot(out).items() if not k.startswith(str(run))}

    result = xecg("ablate", str(grid_file), "--variants", *GOOD, "--no-compare")
    assert result.returncode == 0, result.stderr
    progress = [ln for ln in result.stdout.splitlines() if ln.startswith("[")]
    # Seed-major order: abn seed 0, other seed 0, abn seed 1, other seed 1.
    assert ["resumed" in ln for ln in progress] == [False, False, True, False]  # abn seed 1
    assert sum("skipped" in ln for ln in progress) == 3
    log = (out / "logs" / "abn-seed1.log").read_text()
    assert "resume:" in log and "--ckpt_path last" in log
    # Resumed in place: no archived copy of the folder (a fresh run would move it aside), the
    # same W&B run continued, and the test metrics are back.
    assert not list(run.parent.glob("seed1.*"))
    assert (run / "wandb_id").read_text() == run_id
    runs = offline_runs(run)
    assert len(runs) == 2 and all(r.name.endswith("-" + run_id.strip()) for r in runs)
    assert ablate.test_metrics(run) is not None
    assert json.loads((run / "metrics.json").read_text())["variant"] == "abn"
    assert {k: v for k, v in _snapshot(out).items() if not k.startswith(str(run))} == others


def test_dry_run_prints_the_grid_and_checks_the_arguments(grid_file, tmp_path, capsys):
    out = tmp_path / "dry"
    assert ablate.main([str(grid_file), "--out", str(out), "--variants", *GOOD,
                        "--seed-list", "3", "4", "5", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "2 variants x 3 seeds = 6 runs" in text
    for v in GOOD:
        for s in (3, 4, 5):
            assert f"{out / v / f'seed{s}'}" in text
    assert "model.loss.gamma=0.0  [reference]" in text
    assert "first command:" in text and "--seed_everything=3" in text
    assert "ERROR" not in text
    assert not out.exists()  # nothing trained, nothing written

    # The training parser's objection to a variant shows before anything trains.
    assert ablate.main([str(grid_file), "--out", str(out), "--dry-run"]) == 1
    captured = capsys.readouterr()
    assert "ERROR:" in captured.out and "bogus" in captured.out
    assert "1 variant(s)" in captured.err


def test_a_bad_ablation_file_is_one_line_naming_file_and_key(tmp_path):
    path = write_ablation(tmp_path / "bad.yaml", experiment="missing.yaml",
                          variants={"abn": {"model.loss.gamma": 0.0}})
    result = xecg("ablate", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert str(path) in result.stderr and "experiment" in result.stderr
    assert "missing.yaml" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("fields", "key"), [
    ({"variants": {"abn": {}}}, "experiment"),
    ({"experiment": "x.yaml", "variants": {"abn": {}}, "colour": 1}, "colour"),
    ({"experiment": "x.yaml"}, "variants"),
    ({"experiment": "x.yaml", "variants": ["abn"]}, "variants"),
    ({"experiment": "x.yaml", "variants": {"a/b": {}}}, "variants"),
    ({"experiment": "x.yaml", "variants": {"logs": {}}}, "variants"),
    ({"experiment": "x.yaml", "variants": {"abn": {"model loss": 1}}}, "variants.abn"),
    ({"experiment": "x.yaml", "variants": {"abn": {"seed_everything": 1}}},
     "variants.abn.seed_everything"),
    ({"experiment": "x.yaml", "variants": {"abn": 0.1}}, "variants.abn"),
    ({"experiment": "x.yaml", "variants": {"abn": {}}, "overrides": [1]}, "overrides"),
    ({"experiment": "x.yaml", "variants": {"abn": {}}, "seeds": 0}, "seeds"),
    ({"experiment": "x.yaml", "variants": {"abn": {}}, "seeds": [1, 1]}, "seeds"),
    ({"experiment": "x.yaml", "variants": {"abn": {}}, "seeds": [0.5]}, "seeds"),
    ({"experiment": "x.yaml", "variants": {"abn": {}}, "reference": "cnn"}, "reference"),
    ({"experiment": "x.yaml", "variants": {"abn": {}}, "name": "a b"}, "name"),
])
def test_ablation_file_errors_name_the_key(tmp_path, capsys, fields, key):
    (tmp_path / "x.yaml").write_text("seed_everything: 0\n")
    path = write_ablation(tmp_path / "abl.yaml", **fields)
    with pytest.raises(ConfigError) as err:
        ablate.load_ablation(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and key in message and "\n" not in message
    assert ablate.main([str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"xecg: error: {message}"


def test_file_defaults_and_command_line_options(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "x.yaml").write_text("seed_everything: 0\n")
    path = write_ablation(tmp_path / "study.yaml", experiment="exp/x.yaml",
                          variants={"abn": None, "g1": {"model.loss.gamma": 1}})
    a = ablate.load_ablation(path)
    assert (a.name, a.seeds, a.reference) == ("study", [0, 1, 2], "abn")
    assert a.out == tmp_path / "runs" / "study" and a.configs == [tmp_path / "exp" / "x.yaml"]
    assert a.variants == {"abn": {}, "g1": {"model.loss.gamma": 1}}
    args = ablate.parse_args([str(path), "--seeds", "2", "--variants", "g1", "--out", "o"])
    a, runs = ablate.plan(args)
    assert [(r.variant, r.seed, r.folder) for r in runs] == [
        ("g1", 0, Path("o/g1/seed0")), ("g1", 1, Path("o/g1/seed1"))]
    with pytest.raises(ConfigError, match="--variants: 'nope'"):
        ablate.plan(ablate.parse_args([str(path), "--variants", "nope"]))
    with pytest.raises(ConfigError, match="--seed-list"):
        ablate.plan(ablate.parse_args([str(path), "--seed-list", "1", "1"]))
    assert ablate.cli_value(0.0) == "0.0" and ablate.cli_value(True) == "true"
    assert ablate.cli_value("none") == "none" and ablate.cli_value([1, 2]) == "[1, 2]"


def test_compare_is_called_when_present_else_a_note(tmp_path, monkeypatch, capsys):
    runs = [ablate.Run("abn", 0, tmp_path / "abn" / "seed0", tmp_path / "l")]
    runs[0].state = "finished"
    calls = []
    fake = types.SimpleNamespace(main=lambda argv: calls.append(argv) or 0)
    monkeypatch.setitem(sys.modules, "xecg.compare", fake)
    assert ablate.run_compare(tmp_path, "abn", runs) == 0
    assert calls == [[str(tmp_path), "--reference", "abn"]]
    assert ablate.run_compare(tmp_path, "cnn", runs) == 0  # no finished reference: compare picks
    assert calls[-1] == [str(tmp_path)]

    def broken(argv):
        raise RuntimeError("boom")

    monkeypatch.setitem(sys.modules, "xecg.compare", types.SimpleNamespace(main=broken))
    assert ablate.run_compare(tmp_path, "abn", runs) == 1
    assert "xecg compare failed: RuntimeError: boom" in capsys.readouterr().err

    monkeypatch.setitem(sys.modules, "xecg.compare", None)  # import raises ImportError
    assert ablate.run_compare(tmp_path, "abn", runs) == 0
    assert f"xecg compare {tmp_path}" in capsys.readouterr().out


def test_error_summary_keeps_the_reason():
    log = "noise\nTraceback (most recent call last):\n  File x\nValueError: gamma must be >= 0\n"
    assert ablate.error_summary(log) == "ValueError: gamma must be >= 0"
    parser = "usage: ...\nerror: Parser key \"model.loss\":\n  Expected a Literal. Got value: x\n"
    assert ablate.error_summary(parser) == ('error: Parser key "model.loss": Expected a Literal. '
                                            "Got value: x")
    assert ablate.error_summary("a\nlast line\n") == "last line"
    assert len(ablate.error_summary("error: " + "x" * 1000)) == 400


def test_a_killed_run_is_named_by_its_signal():
    """A run killed by the out-of-memory killer or ``kill -9`` exits -9: it is said so, not
    ``exit -9`` beside its log's last warning, which is no error of the run."""
    assert ablate.exit_reason(-9) == "killed by SIGKILL"
    assert ablate.exit_reason(-15) == "killed by SIGTERM"
    assert ablate.exit_reason(2) == "exit 2"
