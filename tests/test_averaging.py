"""``ema.decay`` (xecg.averaging.WeightEMA): the average of the weights is what is validated,
checkpointed, tuned and tested, the module's own buffers are copied not averaged, and a resumed
run continues the same average."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from test_ddp_cli import XECG, run_xecg

from xecg.averaging import WeightEMA, ema_update
from xecg.cli import main
from xecg.explain.callback import ExplanationScores
from xecg.lightning_cli import XECGCLI

#: The module's own buffers: state set by the run, not weights.
OWN = ("thresholds", "lead_mean", "lead_std", "sample_rate")


def test_the_ema_warms_up_then_keeps_its_decay():
    average, current = [torch.zeros(3)], [torch.ones(3)]
    update = ema_update(0.9)
    update(average, current, torch.tensor(1))  # warm-up: decay (1 + 1) / (10 + 1)
    assert torch.allclose(average[0], torch.full((3,), 9 / 11))
    update(average, [torch.full((3,), 2.0)], torch.tensor(100))  # decay 0.9 from here on
    assert torch.allclose(average[0], torch.full((3,), 0.9 * 9 / 11 + 0.1 * 2))
    counts = [torch.tensor(3)]
    update(counts, [torch.tensor(7)], torch.tensor(5))  # integer buffers are copied
    assert counts[0].item() == 7
    average = [torch.zeros(3)]
    ema_update(0.9, warmup=False)(average, current, torch.tensor(1))
    assert torch.allclose(average[0], torch.full((3,), 0.1))


def test_with_the_warm_up_a_short_run_averages_its_last_tenth():
    """The docstring's claim: under the cap, step k of n weighs about k ** 8 (mean 0.9 n)."""
    n, update = 1000, ema_update(0.999)
    average = [torch.zeros(1)]
    for k in range(n):
        if k == 0:
            average[0].copy_(torch.tensor([0.0]))  # AveragedModel copies the first update
        else:
            update(average, [torch.tensor([float(k)])], torch.tensor(k))
    assert average[0].item() / n == pytest.approx(0.9, abs=0.01)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_a_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ValueError, match="ema.decay must be in"):
        WeightEMA(decay)


def test_the_average_is_swapped_out_after_the_explanation_scores(tiny_config, tmp_path):
    cli = XECGCLI(args=["--config", str(tiny_config(tmp_path)), "--ema.decay", "0.9"], run=False)
    order = [type(c) for c in cli.trainer.callbacks]
    assert order.index(ExplanationScores) < order.index(WeightEMA)


@pytest.fixture(scope="module")
def ema_run(tiny_config, tmp_path_factory):
    """``xecg train`` with ``ema.decay 0.9``: 2 epochs of 4 steps, thresholds tuned."""
    folder = tmp_path_factory.mktemp("ema")
    config = tiny_config(folder, "ema", trainer={"max_epochs": 2, "limit_train_batches": 4},
                         model={"tune_thresholds": True})
    assert main(["train", "--config", str(config), "--ema.decay", "0.9",
                 "--experiment.wandb", "false"]) == 0
    return folder / "runs" / "ema"


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_checkpoints_hold_the_average_and_the_current_weights(ema_run):
    ckpt = _load(ema_run / "checkpoints" / "last.ckpt")
    average, current = ckpt["state_dict"], ckpt["current_model_state"]
    assert average.keys() == current.keys()
    weights = [k for k in average if k.startswith("net.") and average[k].is_floating_point()]
    assert weights and any(not torch.equal(average[k], current[k]) for k in weights)
    for name in OWN:  # copied, not averaged: the average's own thresholds and statistics
        assert torch.equal(average[name], current[name]), name
    assert not torch.equal(average["lead_std"], torch.ones(12))  # the training split's, set
    assert ckpt["averaging_state"]["n_averaged"].item() == 8  # one update per step


def _val_auroc(run):
    """(val AUROC by epoch during the fit, val AUROC of the validation after it)."""
    with (run / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/auroc")]
    return {int(r["epoch"]): float(r["val/auroc"]) for r in rows[:-1]}, float(rows[-1]["val/auroc"])


def test_the_validated_average_is_the_checkpointed_one(ema_run):
    """Validating the best checkpoint after the fit (metrics.json) gives the AUROC logged for its
    epoch while training (metrics.csv). Lightning's own callback would reload the raw weights
    from ``current_model_state`` there, and report the raw model."""
    (best,) = (ema_run / "checkpoints").glob("best-epoch*.ckpt")
    ckpt = _load(best)
    epoch = ckpt["epoch"]
    during_fit, after_fit = _val_auroc(ema_run)
    assert len(set(during_fit.values())) == len(during_fit)  # epochs tell apart
    report = json.loads((ema_run / "metrics.json").read_text())
    assert report["val"]["auroc"] == pytest.approx(during_fit[epoch], abs=1e-6)
    assert after_fit == pytest.approx(during_fit[epoch], abs=1e-6)
    # The thresholds it holds were tuned on the average: tuned again on it, they are the same.
    assert report["thresholds"] == pytest.approx(ckpt["state_dict"]["thresholds"].tolist(),
                                                 abs=1e-4)


def test_a_resumed_run_continues_the_same_average(tiny_config, tmp_path):
    sections = {"trainer": {"limit_train_batches": 3, "limit_val_batches": 1},
                "attention": {"num_records": 0}}
    args = ["--ema.decay", "0.8", "--experiment.wandb", "false"]
    (tmp_path / "ref").mkdir()
    reference = tiny_config(tmp_path / "ref", "run",
                            **{**sections, "trainer": {**sections["trainer"], "max_epochs": 2}})
    assert main(["fit", "--config", str(reference), *args]) == 0
    config = tiny_config(tmp_path, "run", **sections)  # 1 epoch, then on to 2
    assert main(["fit", "--config", str(config), *args]) == 0
    assert main(["fit", "--config", str(config), *args, "--trainer.max_epochs", "2",
                 "--ckpt_path", "last"]) == 0
    ref = _load(tmp_path / "ref" / "runs" / "run" / "checkpoints" / "last.ckpt")
    got = _load(tmp_path / "runs" / "run" / "checkpoints" / "last.ckpt")
    assert got["averaging_state"]["n_averaged"].item() == 6
    for key in ("state_dict", "current_model_state"):
        for name, value in ref[key].items():
            assert torch.allclose(got[key][name].float(), value.float(), atol=1e-6), (key, name)


def test_without_a_decay_nothing_is_averaged(tiny_config, tmp_path):
    config = tiny_config(tmp_path, "plain", trainer={"limit_train_batches": 2,
                                                     "limit_val_batches": 1})
    assert main(["fit", "--config", str(config), "--experiment.wandb", "false"]) == 0
    ckpt = _load(tmp_path / "runs" / "plain" / "checkpoints" / "last.ckpt")
    assert "current_model_state" not in ckpt and "averaging_state" not in ckpt


@pytest.mark.skipif(not XECG.is_file(), reason=f"the xecg script is not installed at {XECG}")
def test_two_ddp_processes_average_alike(tiny_config, tmp_path):
    """``xecg train --ema.decay`` on two gloo processes, as a user types it: the average is
    updated once per step, and the best checkpoint validated after the fit gives the AUROC
    logged (reduced over both ranks) for its epoch."""
    config = tiny_config(tmp_path, "ddp-ema", trainer={"limit_train_batches": 4,
                                                       "max_epochs": 2})
    result = run_xecg(["train", "--config", str(config), "--trainer.devices", "2",
                       "--trainer.strategy", "ddp", "--ema.decay", "0.9",
                       "--experiment.wandb", "false"], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "runs" / "ddp-ema"
    (best,) = (run / "checkpoints").glob("best-epoch*.ckpt")
    during_fit, after_fit = _val_auroc(run)
    assert after_fit == pytest.approx(during_fit[_load(best)["epoch"]], abs=1e-6)
    last = _load(run / "checkpoints" / "last.ckpt")
    assert last["averaging_state"]["n_averaged"].item() == last["global_step"] > 0  # per step
