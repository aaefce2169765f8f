"""Fine-tuning: ``--model.init_from CKPT`` starts a run from another run's network weights (and
nothing else of it), training continues from them, and the new checkpoint loads on its own."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from xecg.cli import main
from xecg.models import XECGNet
from xecg.module import XECGModule


@pytest.fixture(scope="module")
def pretrained(tiny_config, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pretrain")
    config = tiny_config(folder, "pre", trainer={"limit_train_batches": 2},
                         experiment={"wandb": False}, model={"tune_thresholds": True})
    assert main(["fit", "--config", str(config)]) == 0
    return folder / "runs" / "pre" / "checkpoints" / "last.ckpt"


def net_state(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("net.")}


def test_init_from_loads_the_network_weights_only(pretrained):
    source = XECGModule.load_from_checkpoint(pretrained, map_location="cpu")
    module = XECGModule(XECGNet(width=0.125), init_from=str(pretrained))
    want = net_state(pretrained)
    got = module.state_dict()
    assert want and all(torch.equal(got[k], v) for k, v in want.items())
    # Nothing else: thresholds and lead statistics are the new run's own.
    assert torch.equal(module.thresholds, torch.full_like(module.thresholds, 0.5))
    assert not torch.equal(source.thresholds, module.thresholds)
    assert torch.equal(module.lead_mean, torch.zeros_like(module.lead_mean))
    assert "init_from" not in module.hparams
    fresh = XECGModule(XECGNet(width=0.125))
    assert not all(torch.equal(fresh.state_dict()[k], v) for k, v in want.items())


def test_init_from_refuses_another_architecture(pretrained):
    with pytest.raises(ValueError, match="does not fit"):
        XECGModule(XECGNet(width=0.25), init_from=str(pretrained))


def test_fine_tuning_continues_training_from_the_weights(pretrained, tiny_config, tmp_path):
    config = tiny_config(tmp_path, "ft", trainer={"limit_train_batches": 2},
                         experiment={"wandb": False}, model={"lr": 0.001})
    assert main(["fit", "--config", str(config), "--model.init_from", str(pretrained)]) == 0
    ckpt = tmp_path / "runs" / "ft" / "checkpoints" / "last.ckpt"
    before, after = net_state(pretrained), net_state(ckpt)
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed  # trained further
    # Small steps from the pretrained weights, not a fresh start: every conv weight is closer to
    # its pretrained value than to a fresh initialisation.
    fresh = XECGModule(XECGNet(width=0.125)).state_dict()
    for k in changed:
        if after[k].dim() >= 2:
            assert (after[k] - before[k]).norm() < (fresh[k] - before[k]).norm(), k
    # The fine-tuned checkpoint loads without the pretrained file.
    pretrained_copy = pretrained.with_suffix(".moved")
    pretrained.rename(pretrained_copy)
    try:
        module = XECGModule.load_from_checkpoint(ckpt, map_location="cpu")
    finally:
        pretrained_copy.rename(pretrained)
    assert all(torch.equal(module.state_dict()[k], v) for k, v in after.items())


def test_fine_tuning_on_another_band_than_the_pretraining_warns(pretrained, tiny_config,
                                                                 tiny_data, tmp_path):
    """The pretrained run saw unfiltered records; fine-tuning on band-passed ones is allowed
    (the user may mean it) but said, with both bands."""
    shutil.copytree(tiny_data.store, tmp_path / "store")
    config = tiny_config(tmp_path, "ft", trainer={"limit_train_batches": 1},
                         experiment={"wandb": False},
                         data={"store": str(tmp_path / "store"), "bandpass": [0.5, 40.0]})
    with pytest.warns(UserWarning, match=r"band-passed to None Hz, this run's data.bandpass "
                                         r"is \(0.5, 40.0\)"):
        assert main(["fit", "--config", str(config), "--model.init_from", str(pretrained)]) == 0
    saved = torch.load(tmp_path / "runs" / "ft" / "checkpoints" / "last.ckpt",
                       map_location="cpu", weights_only=True)
    assert saved["xecg_bandpass"] == [0.5, 40.0]
