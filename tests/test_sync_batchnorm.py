"""Masked BatchNorm under ``Trainer(sync_batchnorm=True)``: conversion keeps the masked layers
(and Lightning's revert leaves them), two gloo processes holding half a batch each reproduce
the one-process statistics, outputs and gradients of the whole batch, and a Lightning DDP fit
of a small XECGNet trains with synchronised masked statistics (and without them when off).

Gradient convention: each process's loss is a *sum* over its samples, so the one-process loss
of the whole batch is the sum of the two. Input gradients of a process equal the one-process
gradient's rows of its samples; parameter gradients *summed* over processes equal the
one-process parameter gradients (DDP averages instead: with equal per-process batches and
per-process mean losses, that is the one-process gradient of the whole batch's mean loss).
"""

from __future__ import annotations

import json
import os

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from xecg.classes import NUM_CLASSES, NUM_LEADS
from xecg.models import XECGNet
from xecg.models.backbone import MaskedBatchNorm1d, MaskedSyncBatchNorm1d
from xecg.module import XECGModule

C_IN, C, T = 3, 5, 40


class _Tiny(nn.Module):
    """Conv1d -> MaskedBatchNorm1d: ``B x 3 x T`` (and ``B x T`` mask) -> ``B x 5 x T``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(C_IN, C, 3, padding=1)
        self.norm = MaskedBatchNorm1d(C)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 2.0)
            self.norm.bias.normal_()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.norm(self.conv(x), mask)


def _batch(case: str = "masks") -> tuple[Tensor, Tensor, Tensor]:
    """4 records ``x`` (B x 3 x T, mean far from 0), their mask (B x T) and loss weights ``r``
    (B x 5 x T). Case ``masks``: rows 0-2 padded at the end by different amounts, row 3
    unpadded; ``rank1_none``: rows 2-3 (process 1's) unpadded."""
    gen = torch.Generator().manual_seed(3)
    x = 3.0 + 2.0 * torch.randn(4, C_IN, T, generator=gen)
    lengths = torch.tensor([T - 11, T - 2, T - 25, T] if case == "masks" else [T - 11, T - 2, T, T])
    mask = torch.arange(T) < lengths[:, None]
    x = x * mask[:, None]
    return x, mask, torch.randn(4, C, T, generator=gen)


def _step(model: _Tiny, x: Tensor, mask: Tensor | None, r: Tensor) -> dict[str, Tensor]:
    """One training step (summed loss over all positions, padded ones included, so gradients
    through the outputs at padding are tested too): outputs, input and parameter gradients and
    the running statistics."""
    x = x.clone().requires_grad_(True)
    y = model.train()(x, mask)
    (y * r).sum().backward()
    out = {"y": y.detach(), "x_grad": x.grad}
    out.update({f"grad.{k}": p.grad for k, p in model.named_parameters()})
    out.update({k: v.clone() for k, v in model.norm.state_dict().items()})
    return out


def _rank_rows(rank: int) -> slice:
    return slice(2 * rank, 2 * rank + 2)


def _worker(rank: int, folder: str) -> None:
    """Process ``rank`` of 2: the half batch of rows 2*rank, 2*rank+1 through the converted
    model, for two cases: both halves with masks, and rank 1 unpadded with ``mask=None``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                            world_size=2)
    try:
        rows = _rank_rows(rank)
        results = {}
        for case in ("masks", "rank1_none"):
            x, mask, r = _batch(case)
            torch.manual_seed(0)
            model = nn.SyncBatchNorm.convert_sync_batchnorm(_Tiny())
            assert type(model.norm) is MaskedSyncBatchNorm1d
            local_mask = None if case == "rank1_none" and rank == 1 else mask[rows]
            results[case] = _step(model, x[rows], local_mask, r[rows])
        torch.save(results, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one_process(tmp_path):
    # spawn, not fork: with a CUDA build of torch, a fork after this process ran autograd
    # (an earlier test in the same pytest worker) cannot run autograd in the child
    mp.start_processes(_worker, args=(str(tmp_path),), nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for case in ("masks", "rank1_none"):
        torch.manual_seed(0)
        ref = _step(_Tiny(), *_batch(case))
        for rank, got in enumerate(ranks):
            got = got[case]
            rows = _rank_rows(rank)
            # (a) statistics of the whole batch's valid positions, the same on both processes
            for key in ("running_mean", "running_var"):
                assert torch.allclose(got[key], ref[key], rtol=1e-5, atol=1e-6), (case, key)
            assert got["num_batches_tracked"] == ref["num_batches_tracked"] == 1
            assert torch.allclose(got["y"], ref["y"][rows], rtol=1e-5, atol=1e-5), case
            # (b) input gradients: this process's rows of the one-process gradient
            assert torch.allclose(got["x_grad"], ref["x_grad"][rows], rtol=1e-4, atol=1e-5), case
        # (b) parameter gradients: summed over processes, the one-process gradients
        for key in [k for k in ref if k.startswith("grad.")]:
            total = ranks[0][case][key] + ranks[1][case][key]
            assert torch.allclose(total, ref[key], rtol=1e-4, atol=1e-4), (case, key)
        assert torch.equal(ranks[0][case]["running_var"], ranks[1][case]["running_var"])


def test_conversion_keeps_masked_layers():
    """Lightning's plugin (``convert_sync_batchnorm``): masked layers become
    MaskedSyncBatchNorm1d sharing their tensors, plain BatchNorm a plain SyncBatchNorm; revert
    turns only the plain one back; the state dict never changes."""
    model = nn.ModuleDict({"net": XECGNet(width=0.125), "plain": nn.BatchNorm1d(4),
                           "listed": nn.ModuleList([MaskedBatchNorm1d(4)])})
    names = [n for n, m in model.named_modules() if isinstance(m, MaskedBatchNorm1d)]
    assert len(names) > 10
    tensors = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    plugin = TorchSyncBatchNorm()
    synced = plugin.apply(model)
    modules = dict(synced.named_modules())
    assert all(type(modules[n]) is MaskedSyncBatchNorm1d for n in names)
    assert type(modules["plain"]) is nn.SyncBatchNorm
    assert all(v is tensors[k] for k, v in synced.state_dict(keep_vars=True).items())
    reverted = dict(plugin.revert(synced).named_modules())
    assert all(type(reverted[n]) is MaskedSyncBatchNorm1d for n in names)
    assert not isinstance(reverted["plain"], (MaskedBatchNorm1d, nn.SyncBatchNorm))
    assert all(v is tensors[k]
               for k, v in reverted[""].state_dict(keep_vars=True).items())


def test_unsynchronised_masked_sync_layer_is_the_masked_layer():
    """Without a process group (one process) a converted layer computes exactly what the
    masked layer does, with and without a mask, in training and eval mode."""
    x, mask, r = _batch()
    for m in (mask, None):
        torch.manual_seed(0)
        plain = _Tiny()
        expected = _step(plain, x, m, r)
        torch.manual_seed(0)
        synced = nn.SyncBatchNorm.convert_sync_batchnorm(_Tiny())
        assert type(synced.norm) is MaskedSyncBatchNorm1d
        got = _step(synced, x, m, r)
        assert all(torch.equal(got[k], expected[k]) for k in expected)
        with torch.no_grad():
            assert torch.equal(synced.eval()(x, mask), plain.eval()(x, mask))


class _Records(Dataset):
    """8 random records ``x`` 12 x 729 with end padding of varied lengths (``mask`` 729)."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(i)
        length = 729 - 60 * i
        mask = torch.arange(729) < length
        x = (torch.randn(NUM_LEADS, 729, generator=gen) + i) * mask
        y = torch.zeros(NUM_CLASSES)
        y[i % NUM_CLASSES] = 1.0
        return {"x": x, "y": y, "mask": mask}


class _NormRecorder(L.Callback):
    """Writes, per rank, the norm layer types seen in training and after fit, and the first
    norm's running mean, to ``folder/rank{R}.json``."""

    def __init__(self, folder: str):
        self.folder = folder
        self.types: dict[str, list[str]] = {}

    @staticmethod
    def _types(module: nn.Module) -> list[str]:
        return sorted({type(m).__name__ for m in module.modules()
                       if isinstance(m, nn.modules.batchnorm._BatchNorm)})

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        assert not bool(batch["mask"].all())  # every batch holds padding
        self.types["train"] = self._types(pl_module)

    def on_fit_end(self, trainer, pl_module):  # after the strategy's teardown (its revert)
        self.types["after_fit"] = self._types(pl_module)
        norm = pl_module.net.features.blocks[0][0].norm
        out = {"types": self.types, "running_mean": norm.running_mean.tolist()}
        with open(os.path.join(self.folder, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump(out, f)


@pytest.mark.parametrize("sync", [True, False])
def test_lightning_ddp_fit_with_masked_sync_batchnorm(tmp_path, sync):
    torch.manual_seed(0)
    model = XECGModule(XECGNet(width=0.125))
    before = model.net.features.blocks[0][0].norm.running_mean.clone()
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=2,
                        sync_batchnorm=sync, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[_NormRecorder(str(tmp_path))], default_root_dir=tmp_path)
    trainer.fit(model, DataLoader(_Records(), batch_size=2))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    norm_type = "MaskedSyncBatchNorm1d" if sync else "MaskedBatchNorm1d"
    for got in ranks:  # only masked layers, synchronised ones with sync_batchnorm=True
        assert got["types"] == {"train": [norm_type], "after_fit": [norm_type]}
    # Synchronised statistics are the same on both processes; local ones differ.
    assert (ranks[0]["running_mean"] == ranks[1]["running_mean"]) is sync
    # The main process's model got rank 0's weights back and keeps its masked layers.
    norm = model.net.features.blocks[0][0].norm
    assert type(norm) is MaskedBatchNorm1d and not torch.equal(norm.running_mean, before)
    assert norm.running_mean.tolist() == ranks[0]["running_mean"]
