"""``xecg --help`` and ``xecg COMMAND --help`` as a user types them: the ``xecg`` command in a
subprocess (README: "see `xecg train --help`"). Until 2026-11-27 ``xecg train --help`` showed
LightningCLI's options under the name ``xecg`` and none of train's own (``--data``)."""

from __future__ import annotations

import subprocess

import pytest
from fixtures import ROOT, xecg_command, xecg_env

from xecg.cli import build_parser

COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


def xecg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*xecg_command(), *args], cwd=ROOT, env=xecg_env(), capture_output=True,
                          text=True, timeout=120)


def test_the_top_level_help_lists_every_command():
    proc = xecg("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: xecg")
    for command in COMMANDS:
        assert f"\n    {command} " in proc.stdout, command
    assert "xecg train --config experiments/xecgnet.yaml --data" in proc.stdout


def test_no_command_is_an_error_that_names_the_commands():
    proc = xecg()
    assert proc.returncode == 2
    assert "COMMAND" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_its_own_help(command):
    proc = xecg(command, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    usage = proc.stdout.splitlines()[0]
    assert usage.startswith("usage: xecg") and command in usage.split(), usage
    if command == "train":  # its own options first, then every option of a fit
        assert "--data DATA" in proc.stdout and "--ckpt_path" in proc.stdout
        assert "usage: xecg train [-c CONFIG]" in proc.stdout
        assert "--model.loss" in proc.stdout and "--trainer.max_epochs" in proc.stdout


def test_a_trainer_starts_without_lightnings_cloud_logger_advert():
    """Lightning 2.6 prints a tip to install its cloud logger at every Trainer's start; xecg
    (which logs to W&B or CSV) leaves it out and keeps Lightning's other lines."""
    import logging

    import lightning as L

    import xecg.lightning_cli  # noqa: F401  (installs the filter)

    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    messages = [r.getMessage() for r in records]  # what passed the logger's filters
    assert any("GPU available" in m for m in messages), messages
    assert not any("litlogger" in m for m in messages), messages


@pytest.mark.parametrize(("command", "args", "expected"), [
    ("fit", ["--trainer.max_epocs", "1"],
     "unrecognized arguments: --trainer.max_epocs 1 (options: xecg fit --help)"),
    # a prefix of a key, which argparse's abbreviations took for it until 2026-11-28
    ("fit", ["--trainer.max_epoch", "1"],
     "unrecognized arguments: --trainer.max_epoch 1 (options: xecg fit --help)"),
    ("train", ["--trainer.max_epoch", "1"], "unrecognized arguments: --trainer.max_epoch 1"),
    ("train", ["--model.loss.gama", "0.1"],
     "model.loss: Option 'gama' is not accepted (options: xecg train --help)"),
    ("fit", ["--model.loss.gamma", "abc"], "model.loss.gamma: Expected a <class 'float'>"),
    ("test", ["--trainer.max_epochs", "abc"], "trainer.max_epochs: Expected a <class 'int'> "
                                              "(given: abc)"),
    ("validate", ["--config", "experiments/nope.yaml"], "config: File does not exist"),
])
def test_a_mistyped_training_option_is_one_line(command, args, expected):
    """jsonargparse printed LightningCLI's whole usage (about 110 lines) before the error, and
    its report of every Union alternative after it."""
    config = [] if "--config" in args else ["--config", "experiments/smoke.yaml"]
    proc = xecg(command, *config, *args, "--print_config")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"xecg: error: {expected}"), line


def test_xecg_train_draws_a_steady_progress_bar(tmp_path, tiny_config, monkeypatch):
    """Where Lightning would make its default tqdm bar (redrawn after every step), ``xecg
    train`` has :class:`SteadyProgressBar`: redrawn at most every 0.2 s and at each bar's end.
    With the bar off there is none (and no error); a bar the config names is kept."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    from xecg.callbacks import SteadyProgressBar
    from xecg.lightning_cli import XECGCLI

    config = str(tiny_config(tmp_path))
    cli = XECGCLI(args=["--config", config, "--trainer.enable_progress_bar", "true"], run=False)
    assert type(cli.trainer.progress_bar_callback) is SteadyProgressBar
    off = XECGCLI(args=["--config", config], run=False)  # the tiny config turns it off
    assert off.trainer.progress_bar_callback is None
    named = XECGCLI(args=["--config", config, "--trainer.enable_progress_bar", "true",
                          "--trainer.callbacks+=TQDMProgressBar"], run=False)
    assert type(named.trainer.progress_bar_callback) is TQDMProgressBar  # even at rate 1
    # Steps 1-9 of 10 come within 0.2 s: the first and the last are drawn.
    clock = iter([0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.5, 0.51])
    monkeypatch.setattr("xecg.callbacks.time.monotonic", lambda: next(clock))
    bar = SteadyProgressBar()
    drawn = [n for n in range(1, 11) if bar._should_update(n, 10)]
    assert drawn == [1, 10]
    assert bar._should_update(1, 10)  # 0.5 s later: drawn again
    assert not bar._should_update(2, 10)


def test_a_batch_limit_given_as_an_integer_stays_a_number_of_batches(tmp_path):
    """``--trainer.limit_val_batches 1`` is one batch: Lightning types the limits ``float | int``
    and jsonargparse made it 1.0, every batch. Whole numbers and fractions keep their types, on
    the command line and in a YAML."""
    extra = tmp_path / "limits.yaml"
    extra.write_text("trainer:\n  limit_test_batches: 2\n  limit_predict_batches: 0.5\n")
    proc = xecg("train", "--config", "experiments/smoke.yaml", "--config", str(extra),
                "--trainer.limit_val_batches", "1", "--trainer.limit_train_batches", "0.25",
                "--print_config")
    assert proc.returncode == 0, proc.stderr
    for line in ("limit_val_batches: 1\n", "limit_train_batches: 0.25\n",
                 "limit_test_batches: 2\n", "limit_predict_batches: 0.5\n"):
        assert f"  {line}" in proc.stdout, line
