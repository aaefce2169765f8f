"""Every experiment file instantiates and fits one batch (``fast_dev_run``) on a tiny store, so
a config cannot rot. Files are found by globbing ``experiments/*.yaml``: a new experiment is
tested without editing this file. Data and length are overridden to fit a CPU test; the
network, loss, optimiser and callbacks are the file's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from xecg.cli import main
from xecg.lightning_cli import expand_configs

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))


def test_experiments_are_found():
    names = {p.stem for p in EXPERIMENTS}
    assert {"base", "smoke", "xecgnet", "abn", "cnn", "paper", "paper_authors_code"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_experiment_fits_one_batch(path, tiny_data, tmp_path):
    runs = tmp_path / "runs"
    args = ["fit", "--config", str(path), "--trainer.fast_dev_run", "1",
            "--trainer.accelerator", "cpu", "--trainer.devices", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--data.source", "null", "--data.store", str(tiny_data.store),
            "--data.split", str(tiny_data.split), "--data.length", "972",
            "--data.batch_size", "4", "--data.num_workers", "0",
            "--experiment.wandb", "false", "--experiment.runs_dir", str(runs),
            "--attention.num_records", "1", "--explanations.max_records", "2"]
    assert main(args) == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    assert (run / "metrics.json").is_file()


def test_extends_merges_deeply_and_refuses_loops(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nmodel: {lr: 0.1}\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    from xecg.errors import ConfigError

    with pytest.raises(ConfigError, match="loops back"):
        expand_configs(["--config", str(tmp_path / "a.yaml")])
    abn = Path(__file__).resolve().parents[1] / "experiments" / "abn.yaml"
    chain = expand_configs(["--config", str(abn), "--trainer.max_epochs", "3"])
    assert chain[0] == "--config" and chain[1].endswith("base.yaml")
    assert chain[-2:] == ["--trainer.max_epochs", "3"]
    assert chain.count("--config") == 3  # base, xecgnet, abn


def test_abn_and_cnn_differ_from_xecgnet_only_where_they_say(tmp_path):
    """The resolved configs of the baselines differ from xECGNet's in the loss's gamma or the
    network's class, and in their names."""
    import yaml

    from xecg.lightning_cli import XECGCLI

    def resolved(name: str) -> dict:
        path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.yaml"
        cli = XECGCLI(args=["--config", str(path), "--experiment.wandb", "false",
                            "--trainer.accelerator", "cpu"], run=False)
        return yaml.safe_load(cli.parser.dump(cli.config))

    xecgnet, abn, cnn = resolved("xecgnet"), resolved("abn"), resolved("cnn")
    assert abn["model"]["loss"]["init_args"]["gamma"] == 0.0
    assert xecgnet["model"]["loss"]["init_args"]["gamma"] == 0.01
    assert cnn["model"]["net"]["class_path"].endswith("CNNBaseline")
    for other in (abn, cnn):
        assert other["data"] == xecgnet["data"]
        assert other["trainer"].pop("default_root_dir").startswith("runs/")
    xecgnet["trainer"].pop("default_root_dir")
    assert abn["trainer"] == xecgnet["trainer"] == cnn["trainer"]
