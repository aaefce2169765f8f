"""CPSCDataModule: batch contract per length policy, masks, normalisation from the training split,
determinism, crop evaluation windows, checkpoint state and a Lightning run."""

from __future__ import annotations

import json
import math
import os

import lightning as L
import numpy as np
import pytest
import torch

from xecg.classes import CLASS_INDEX, CLASSES, NUM_CLASSES, NUM_LEADS
from xecg.data.batches import BUCKET_MULTIPLE, GPU_BUCKET_MULTIPLE, BatchPlanner
from xecg.data.datamodule import CPSCDataModule, SyntheticOptions
from xecg.data.dataset import WindowDataset, numpy_bits, restore_batch, round_to_16bit
from xecg.data.loader import ThreadLoader
from xecg.data.record import Record
from xecg.data.splits import load_split, make_split, save_split
from xecg.data.store import Store, StoreWriter
from xecg.data.windows import POLICIES, aggregate_by_group, average_by_group
from xecg.errors import ConfigError
from xecg.models import XECGNet
from xecg.module import XECGModule

N_RECORDS = 64
LENGTHS = (700, 1500, 2000, 2001, 2600, 4000, 6100)


def make_records(seed: int = 0) -> list[Record]:
    """Random records of varied lengths; leads with distinct offsets and scales; some multilabel."""
    rng = np.random.default_rng(seed)
    offset = np.arange(NUM_LEADS, dtype=np.float32)[:, None]
    scale = np.linspace(0.5, 3.0, NUM_LEADS, dtype=np.float32)[:, None]
    records = []
    for i in range(N_RECORDS):
        n = int(rng.choice(LENGTHS))
        labels = np.zeros(NUM_CLASSES, np.float32)
        labels[rng.choice(NUM_CLASSES, size=2 if i % 5 == 0 else 1, replace=False)] = 1.0
        signal = offset + scale * rng.standard_normal((NUM_LEADS, n), dtype=np.float32)
        records.append(Record(id=f"R{i:03d}", signal=signal, fs=500.0, labels=labels))
    return records


def write(path, records) -> str:
    with StoreWriter(path, fs=500.0) as w:
        for r in records:
            w.add(r)
    return str(path)


@pytest.fixture(scope="module")
def records() -> list[Record]:
    return make_records()


@pytest.fixture(scope="module")
def store(tmp_path_factory, records) -> str:
    return write(tmp_path_factory.mktemp("dm") / "store", records)


def normalised(dm: CPSCDataModule, record: Record) -> np.ndarray:
    return (record.signal - dm.mean[:, None]) / dm.std[:, None]


def batches(dm: CPSCDataModule, split: str = "train", epoch: int = 0) -> list[dict]:
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader,
              "test": dm.test_dataloader}[split]()
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_auto_split_is_the_protocol_split_and_is_kept(store):
    dm = CPSCDataModule(store, policy="pad", length=2000)
    dm.setup()
    path = dm.split_path
    assert path.parent == Store(store).path / "splits" and path.is_file()
    expected = make_split(store, "paper")
    assert {k: load_split(path)[k] for k in ("train", "val", "test")} == \
        {k: expected[k] for k in ("train", "val", "test")}
    assert sorted(dm.indices["test"].tolist()) == \
        sorted(Store(store).indices(expected["test"]).tolist())


@pytest.mark.parametrize("policy", ["pad", "crop", "bucket"])
def test_batch_contract(store, policy):
    dm = CPSCDataModule(store, policy=policy, length=2000, batch_size=8, eval_batch_size=5)
    dm.setup()
    labels = Store(store).labels
    for split in ("train", "val", "test"):
        seen = []
        for b in batches(dm, split):
            B = len(b["index"])
            W = len(b["group"]) if "group" in b else B
            assert ("group" in b) == (policy == "crop" and split != "train")
            assert b["index"].dtype == torch.int64 and b["x"].dtype == torch.float32
            assert b["y"].dtype == torch.float32 and b["mask"].dtype == torch.bool
            T = b["x"].shape[-1]
            assert b["x"].shape == (W, NUM_LEADS, T) and b["mask"].shape == (W, T)
            assert b["y"].shape == (B, NUM_CLASSES)
            assert b["padded"] is (not bool(b["mask"].all()))  # a host bool, never a tensor
            assert torch.equal(b["y"], torch.from_numpy(labels[b["index"].numpy()]))
            if policy != "bucket":
                assert T == 2000
            seen += b["index"].tolist()
        assert sorted(seen) == sorted(dm.indices[split].tolist())  # every record exactly once


def test_pad_masks_and_values(store, records):
    dm = CPSCDataModule(store, policy="pad", length=2600, batch_size=16)
    dm.setup()
    for b in batches(dm, "train"):
        for row, i in enumerate(b["index"].tolist()):
            r, x, mask = records[i], b["x"][row].numpy(), b["mask"][row].numpy()
            n = min(r.length, 2600)
            assert mask.tolist() == [False] * (2600 - n) + [True] * n  # zeros at the start
            np.testing.assert_allclose(x[:, mask], normalised(dm, r)[:, :n], rtol=1e-5,
                                       atol=1e-5)
            assert np.all(x[:, ~mask] == 0.0)  # padding is 0 after normalisation


def test_crop_training_windows_are_record_slices(store, records):
    dm = CPSCDataModule(store, policy="crop", length=2000, batch_size=16, seed=3)
    dm.setup()
    starts = []
    for b in batches(dm, "train"):
        for row, i in enumerate(b["index"].tolist()):
            r, x, mask = records[i], b["x"][row].numpy(), b["mask"][row].numpy()
            ref = normalised(dm, r)
            if r.length < 2000:
                assert mask.tolist() == [False] * (2000 - r.length) + [True] * r.length
                assert np.all(x[:, ~mask] == 0.0)
                np.testing.assert_allclose(x[:, mask], ref, rtol=1e-5, atol=1e-5)
                continue
            assert mask.all()
            if r.length == 2000:
                continue
            s = int(np.argmin(np.abs(ref[0] - x[0, 0])))  # random samples: the start is unique
            np.testing.assert_allclose(x, ref[:, s:s + 2000], rtol=1e-5, atol=1e-5)
            starts.append(s / (r.length - 2000))
    assert 0.2 < np.mean(starts) < 0.8  # windows are spread over the records


def test_crop_evaluation_windows_cover_every_record(store, records):
    L_ = 2000
    dm = CPSCDataModule(store, policy="crop", length=L_, eval_batch_size=6)
    dm.setup()
    for b in batches(dm, "test"):
        group = b["group"].numpy()
        assert np.all(np.diff(group) >= 0)
        for row, i in enumerate(b["index"].tolist()):
            r = records[i]
            ref = normalised(dm, r)
            windows, masks = b["x"][group == row].numpy(), b["mask"][group == row].numpy()
            assert len(windows) == max(1, math.ceil(r.length / L_))
            if r.length < L_:
                np.testing.assert_allclose(windows[0][:, masks[0]], ref, rtol=1e-5, atol=1e-5)
                assert masks[0].sum() == r.length and not masks[0][0]
                continue
            covered = np.zeros(r.length, bool)
            for k, w in enumerate(windows):
                s = min(k * L_, r.length - L_)  # last window ends with the record
                np.testing.assert_allclose(w, ref[:, s:s + L_], rtol=1e-5, atol=1e-5)
                covered[s:s + L_] = True
            assert covered.all() and masks.all()


def test_average_by_group_by_hand():
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [0.0, 9.0]])
    group = torch.tensor([0, 0, 1, 2])
    expected = torch.tensor([[2.0, 3.0], [5.0, 6.0], [0.0, 9.0]])
    assert torch.equal(average_by_group(values, group, 3), expected)
    assert torch.equal(average_by_group(torch.tensor([1.0, 3.0, 7.0]), torch.tensor([1, 1, 0]), 2),
                       torch.tensor([7.0, 2.0]))


def test_bucket_batches_are_similar_lengths_padded_at_the_end(store, records):
    m = 243
    dm = CPSCDataModule(store, policy="bucket", batch_size=8, bucket_multiple=m, seed=1)
    dm.setup()
    for split in ("train", "test"):
        ranges = []
        for b in batches(dm, split):
            n = np.array([records[i].length for i in b["index"].tolist()])
            T = b["x"].shape[-1]
            assert T % m == 0 and T - m < n.max() <= T
            for row, k in enumerate(n):
                assert b["mask"][row].tolist() == [True] * k + [False] * (T - k)
                assert torch.all(b["x"][row, :, k:] == 0)
            ranges.append((n.min(), n.max()))
        # Both splits fit in one sorting chunk, so batches hold consecutive lengths.
        ranges.sort()
        assert all(hi <= lo for (_, hi), (lo, _) in zip(ranges, ranges[1:])), ranges
    shuffled = [b["index"].tolist() for b in batches(dm, "train", epoch=0)]
    assert shuffled != [b["index"].tolist() for b in batches(dm, "train", epoch=1)]


def test_statistics_come_from_the_training_split_only(tmp_path, store, records):
    dm = CPSCDataModule(store, policy="crop", length=2000)
    dm.setup()
    train = np.concatenate([records[i].signal for i in dm.indices["train"]], axis=1)
    np.testing.assert_allclose(dm.mean, train.mean(1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dm.std, train.std(1), rtol=1e-4)
    split = tmp_path / "split.json"
    save_split(load_split(dm.split_path), split)

    def stats_after_changing(i: int) -> tuple[np.ndarray, np.ndarray]:
        changed = list(records)
        changed[i] = Record(id=records[i].id, signal=records[i].signal * 5 + 40, fs=500.0,
                            labels=records[i].labels)
        other = CPSCDataModule(write(tmp_path / f"s{i}", changed), split=str(split))
        other.setup()
        return other.mean, other.std

    for i in dm.indices["test"][:1].tolist() + dm.indices["val"][:1].tolist():
        mean, std = stats_after_changing(i)
        assert np.array_equal(mean, dm.mean) and np.array_equal(std, dm.std)
    mean, _ = stats_after_changing(int(dm.indices["train"][0]))
    assert not np.allclose(mean, dm.mean)


def test_same_seed_same_batches_other_seed_other_crops(store, monkeypatch):
    def train_x(seed, epoch=0, **kw):
        dm = CPSCDataModule(store, policy="crop", length=1500, batch_size=16, seed=seed, **kw)
        dm.setup()
        return [(b["index"], b["x"]) for b in batches(dm, "train", epoch)]

    def same(a, b):
        return all(torch.equal(i, j) and torch.equal(x, y) for (i, x), (j, y) in zip(a, b))

    a = train_x(0)
    assert same(a, train_x(0))
    assert not same(a, train_x(1))
    assert not same(a, train_x(0, epoch=1))
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")  # restored after the test
    L.seed_everything(7)
    assert same(train_x(None), train_x(7))  # seed_everything's seed by default


@pytest.mark.parametrize("policy", POLICIES)
def test_workers_do_not_change_batches(store, policy):
    """Worker processes build batches in fresh shared memory and skip writing its zeros (the
    padding); threads (``worker_kind: thread``) build them concurrently in this process. Each
    gives the main process's batches, in its order, epoch after epoch, in training and
    evaluation."""
    def run(workers, kind="process"):
        dm = CPSCDataModule(store, policy=policy, length=1500, batch_size=24, seed=2,
                            num_workers=workers, bucket_multiple=243, worker_kind=kind)
        dm.setup()
        assert isinstance(dm.train_dataloader(), ThreadLoader) == (kind == "thread")
        return [b for split, epoch in (("train", 1), ("train", 2), ("val", 0))
                for b in batches(dm, split, epoch)]

    serial = run(0)
    for other in (run(2), run(2, "thread"), run(3, "thread")):
        assert len(serial) == len(other)
        for a, b in zip(serial, other):
            assert a.keys() == b.keys()
            for k in a:
                assert (torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor)
                        else a[k] == b[k]), k


def test_thread_loader_raises_a_batchs_error_and_leaves_no_thread_behind(store):
    """An error while building a batch reaches the consumer at that batch (after the batches
    before it); an epoch left early or failed stops the loader's threads."""
    import threading

    dm = CPSCDataModule(store, policy="crop", length=1500, batch_size=4, num_workers=2,
                        worker_kind="thread")
    dm.setup()
    loader = dm.train_dataloader()
    build = loader.dataset.__getitem__
    plans = list(loader.sampler)

    def faulty(plan):
        if plan is plans[3]:
            raise OSError("record A0042.mat: truncated signal")
        return build(plan)

    loader.sampler = plans  # the same plans, listed, so the faulty one can be recognised
    loader.dataset.__getitem__ = faulty
    before = {t for t in threading.enumerate() if t.name.startswith("xecg-loader")}
    got = []
    with pytest.raises(OSError, match="A0042.mat: truncated"):
        for batch in loader:
            got.append(batch)
    assert len(got) == 3
    for _batch in loader:  # left after one batch
        break
    del _batch
    import gc

    gc.collect()  # the abandoned generator closes, and with it its pool
    after = {t for t in threading.enumerate() if t.name.startswith("xecg-loader")}
    assert after <= before
    with pytest.raises(ValueError, match="worker_kind"):
        CPSCDataModule(store, worker_kind="fibers")


def test_state_dict_carries_training_statistics(tmp_path, store, records):
    dm = CPSCDataModule(store)
    dm.setup()
    state = dm.state_dict()
    other_store = write(tmp_path / "other", [
        Record(id=r.id, signal=r.signal * 2 - 1, fs=500.0, labels=r.labels) for r in records])
    for restore_first in (True, False):
        other = CPSCDataModule(other_store, split=str(dm.split_path))
        if restore_first:
            other.load_state_dict(state)
        other.setup()
        other.load_state_dict(state)
        assert np.array_equal(other.mean, dm.mean) and np.array_equal(other.std, dm.std)


def test_attention_examples_prefer_multilabel(store, records):
    from xecg.callbacks import pick_examples

    dm = CPSCDataModule(store)
    dm.setup()
    train = dm.indices["train"]
    picked = train[pick_examples(dm.store.labels[train], 6)]
    assert len(set(picked.tolist())) == 6 and set(picked) <= set(train)
    multi = [records[i].labels.sum() >= 2 for i in picked]
    n_multi = sum(records[i].labels.sum() >= 2 for i in train)
    assert all(multi[:min(6, n_multi)])


def test_bad_arguments_and_unknown_records(tmp_path, store):
    with pytest.raises(ValueError, match="policy"):
        CPSCDataModule(store, policy="stretch")
    with pytest.raises(ValueError, match="length"):
        CPSCDataModule(store, length=0)
    # a fold that does not exist is refused when the module is made (the CLI's one line:
    # "invalid configuration"), not at the first fit's setup
    with pytest.raises(ValueError, match="fold 10 of 10"):
        CPSCDataModule(store, protocol="kfold", folds=10, fold=10)
    split = tmp_path / "split.json"
    save_split({"train": ["R000", "X999"], "val": [], "test": ["R001"]}, split)
    with pytest.raises(ConfigError) as err:
        CPSCDataModule(store, split=str(split)).setup()
    assert str(err.value) == (
        f"{split}: 1 of its 2 train records are not in store {store} (first: X999); it was made "
        f"for other data: make one for this store with `xecg split {store} --out FILE`, or leave "
        "out --data.split")


class _Mean(L.LightningModule):
    """A linear model on per-lead means, recording which records each epoch saw."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(NUM_LEADS, NUM_CLASSES)
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.seen.append(batch["index"].tolist())
        logits = self.linear(batch["x"].mean(-1))
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["y"])

    def predict_step(self, batch, batch_idx):
        out = self.linear(batch["x"].mean(-1))
        return average_by_group(out, batch["group"], len(batch["index"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_lightning_fit_and_predict(tmp_path, store, kind):
    dm = CPSCDataModule(store, policy="crop", length=1500, batch_size=8, seed=0,
                        num_workers=0 if kind == "process" else 2, worker_kind=kind)
    model = _Mean()
    trainer = L.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    assert len(model.seen) == 2 and model.seen[0] != model.seen[1]  # set_epoch reached us
    preds = trainer.predict(model, datamodule=dm)
    assert sum(len(p) for p in preds) == len(dm.indices["test"])
    assert preds[0].shape[1] == NUM_CLASSES


def test_source_prepares_the_store_and_describe_reports_the_protocol(tmp_path, monkeypatch,
                                                                      records):
    calls = []

    def fake_generator(out, **options):
        calls.append(options)
        return write(out, records)

    monkeypatch.setattr("xecg.data.synthetic.make_synthetic_store", fake_generator)
    dm = CPSCDataModule(str(tmp_path / "syn"), source="synthetic", policy="bucket",
                        synthetic=SyntheticOptions(n=64, durations=(6.0, 12.0), balanced=True))
    dm.setup()
    from xecg.data.synthetic import Realism

    assert calls == [{"n": 64, "seed": 0, "balanced": True, "durations": (6.0, 12.0),
                      "realism": Realism()}]
    assert sum(len(v) for v in dm.indices.values()) == N_RECORDS
    info = dm.describe()
    assert info["protocol"] == "paper" and info["seed"] == 1004 and info["length"] is None
    assert info["counts"]["test"]["records"] == len(dm.indices["test"])


# -- distributed ---------------------------------------------------------------------------------


def planners(store: str, train: bool, world: int = 2, **kw) -> list[BatchPlanner]:
    """One planner per rank over all the store's records (``world`` = 1: the global plan)."""
    s = Store(store)
    options = {"policy": "crop", "length": 1500, "batch_size": 6, "seed": 4, **kw}
    return [BatchPlanner(np.arange(len(s)), s.lengths, train=train, num_replicas=world, rank=r,
                         **options) for r in range(world)]


def plans(planner: BatchPlanner, epoch: int = 0) -> list[tuple]:
    planner.set_epoch(epoch)
    return [(p.records.tolist(), p.rows.tolist(), p.starts.tolist()) for p in planner]


@pytest.mark.parametrize("policy", ["crop", "bucket"])
def test_training_shards_are_the_global_plan_dealt_out(store, policy):
    # 64 records in batches of 6: 11 global batches, so one is repeated as padding (crop:
    # batch 0 on rank 1; bucket: the least work).
    (whole,) = planners(store, True, world=1, policy=policy)
    ranks = planners(store, True, policy=policy)
    for epoch in (0, 1):
        global_plan = plans(whole, epoch)
        shards = [plans(p, epoch) for p in ranks]
        assert len(global_plan) == 11
        assert [len(s) for s in shards] == [len(p) for p in ranks] == [6, 6]
        # the padding batch is marked (trained on, not counted), and no other
        marks = [[p.repeat for p in planner] for planner in ranks]
        assert not any(p.repeat for p in whole)
        if policy == "crop":
            assert shards[0] == global_plan[0::2]
            assert shards[1] == global_plan[1::2] + global_plan[:1]
            assert marks == [[False] * 6, [False] * 5 + [True]]
        else:  # the same batches, dealt so that each step's two are of similar length
            extra = shards[0] + shards[1]
            for batch in global_plan:
                extra.remove(batch)
            assert len(extra) == 1 and extra[0] in global_plan  # one repeated, as padding
            assert sum(marks, []).count(True) == 1
            (marked,) = [s[i] for s, m in zip(shards, marks) for i in range(6) if m[i]]
            assert marked == extra[0]
        seen = [i for shard in shards for records, _, _ in shard for i in records]
        assert sorted(set(seen)) == list(range(N_RECORDS))
    for p in ranks:  # a new epoch: new order and crops on every rank
        assert plans(p, 0) != plans(p, 1)
        assert {tuple(r) for r, _, _ in plans(p, 0)} != {tuple(r) for r, _, _ in plans(p, 1)}


@pytest.mark.parametrize("policy", ["crop", "bucket"])
def test_evaluation_gives_each_record_to_one_rank(store, policy):
    (whole,) = planners(store, False, world=1, policy=policy)
    ranks = planners(store, False, world=3, policy=policy)
    shards = [plans(p) for p in ranks]
    records = [[i for r, _, _ in shard for i in r] for shard in shards]
    assert sorted(sum(records, [])) == list(range(N_RECORDS))  # each record exactly once
    assert [len(r) for r in records] == [22, 21, 21]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [len(s) for s in shards] == [len(p) for p in ranks]
    # A record's windows do not depend on the rank that evaluates it.
    assert window_starts([plans(whole)]) == window_starts(shards)


def window_starts(shards: list[list[tuple]]) -> dict[int, list[int]]:
    """Record -> its windows' starts, over all batches of all shards."""
    out: dict[int, list[int]] = {}
    for shard in shards:
        for records, rows, starts in shard:
            for row, start in zip(rows, starts):
                out.setdefault(records[row], []).append(start)
    return out


def test_evaluation_with_fewer_records_than_ranks_repeats_them(store):
    """Every process needs a batch; the copies are marked, so that they are not counted."""
    s = Store(store)
    ranks = [BatchPlanner(np.array([5, 7]), s.lengths, "pad", 1500, 4, train=False,
                          num_replicas=3, rank=r) for r in range(3)]
    assert [[p.records.tolist() for p in planner] for planner in ranks] == [[[5]], [[7]], [[5]]]
    assert [[p.repeat for p in planner] for planner in ranks] == [[False], [False], [True]]
    ds = WindowDataset(s, np.zeros(NUM_LEADS), np.ones(NUM_LEADS))
    assert [[ds[p].get("repeat", False) for p in planner] for planner in ranks] == [
        [False], [False], [True]]
    # as many records as processes: no copies
    full = [BatchPlanner(np.array([5, 7]), s.lengths, "bucket", 1500, 4, train=False,
                         num_replicas=2, rank=r) for r in range(2)]
    assert not any(p.repeat for planner in full for p in planner)
    with pytest.raises(ValueError, match="rank 2"):
        BatchPlanner(np.array([5]), s.lengths, "pad", 1500, 4, train=False, num_replicas=2, rank=2)


class _RankRecorder(L.Callback):
    """Writes, per rank, the record indices of every training and validation batch by epoch, the
    tuned thresholds and the gathered row counts, to ``folder/rank{R}.json``."""

    def __init__(self, folder: str):
        self.folder = folder
        self.seen: dict[str, list[list[int]]] = {}

    def _add(self, trainer, stage: str, batch) -> None:
        if not trainer.sanity_checking:
            key = f"{stage}{trainer.current_epoch}"
            self.seen[key] = self.seen.get(key, []) + [batch["index"].tolist()]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._add(trainer, "train", batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._add(trainer, "val", batch)

    def on_fit_end(self, trainer, pl_module):
        out = {"seen": self.seen, "world": trainer.world_size,
               "thresholds": pl_module.thresholds.tolist(), "gathered": pl_module.gathered}
        path = os.path.join(self.folder, f"rank{trainer.global_rank}.json")
        with open(path, "w") as f:
            json.dump(out, f)


class _GatherCounter(XECGModule):
    """Counts the validation rows gathered for threshold tuning."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.gathered: list[int] = []

    def _gather_rows(self, rows):
        out = super()._gather_rows(rows)
        self.gathered.append(len(out))
        return out


def test_lightning_ddp_shards_records_and_advances_epochs(tmp_path, tiny_data):
    """Two CPU processes (gloo), use_distributed_sampler=False as the CLI sets it: each rank
    runs exactly its planner shard (Lightning did not re-wrap it, set_epoch reached it), ranks
    see disjoint records, and thresholds are tuned on every validation record although the
    ranks hold different numbers of them. Batches come from loader threads (``worker_kind``),
    each rank its own (the CLI's DDP tests load in the main process)."""
    split = load_split(tiny_data.split)
    split["val"] = split["val"][:-1]  # 40 and 39 records per rank: 4 and 3 batches of 13
    save_split(split, tmp_path / "split.json")
    dm = CPSCDataModule(str(tiny_data.store), split=str(tmp_path / "split.json"), policy="crop",
                        length=972, batch_size=16, eval_batch_size=13, seed=5, num_workers=2,
                        worker_kind="thread")
    model = _GatherCounter(net=XECGNet(width=0.125), tune_thresholds=True)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=2,
                        use_distributed_sampler=False,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[_RankRecorder(str(tmp_path))], default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    dm.setup()
    lengths = Store(tiny_data.store).lengths
    for epoch in (0, 1):
        for stage, train in (("train", True), ("val", False)):
            seen = [sum(r["seen"][f"{stage}{epoch}"], []) for r in ranks]
            assert not set(seen[0]) & set(seen[1])
            assert sorted(seen[0] + seen[1]) == sorted(dm.indices[stage].tolist())
            for rank, r in enumerate(ranks):
                expected = BatchPlanner(dm.indices[stage], lengths, "crop", 972,
                                        16 if train else 13, train=train, seed=5, num_replicas=2,
                                        rank=rank)
                expected.set_epoch(epoch)
                assert r["seen"][f"{stage}{epoch}"] == [p.records.tolist() for p in expected]
    assert [len(r["seen"]["val0"]) for r in ranks] == [4, 3]
    for r in ranks:
        assert r["seen"]["train0"] != r["seen"]["train1"]
    assert ranks[0]["thresholds"] == ranks[1]["thresholds"]
    # per validation one gather of every process's rows, serving metrics and thresholds (the
    # loss sums are added by an all_reduce, no gather)
    assert [r["gathered"] for r in ranks] == [[len(split["val"])] * 2] * 2


class _EvalReport(L.Callback):
    """Writes rank 0's evaluation results (logged metrics, thresholds, the test intervals' record
    count) after each of ``trainer.validate`` and ``trainer.test`` to ``folder/STAGE.json``."""

    def __init__(self, folder: str):
        self.folder = folder

    def _write(self, trainer, module, stage: str) -> None:
        if trainer.global_rank == 0:
            out = {"metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
                   "thresholds": module.thresholds.tolist(),
                   "records": module.last_intervals.get("test", {}).get("records")}
            with open(os.path.join(self.folder, f"{stage}.json"), "w") as f:
                json.dump(out, f)

    def on_validation_end(self, trainer, pl_module):
        self._write(trainer, pl_module, "val")

    def on_test_end(self, trainer, pl_module):
        self._write(trainer, pl_module, "test")


def test_evaluation_with_fewer_records_than_processes_counts_each_record_once(tmp_path,
                                                                               tiny_data):
    """Two validation and two test records on three CPU processes (gloo): the third process
    runs a copy of a record (every process must take part in the epoch's collectives) and
    nothing hangs; its copy is not counted, so the metrics, the mean losses, the thresholds
    tuned on validation and the test intervals are those of one process on the same records."""
    split = load_split(tiny_data.split)
    split["val"], split["test"] = split["val"][:2], split["test"][:2]
    save_split(split, tmp_path / "split.json")
    reports = {}
    for devices in (1, 3):
        folder = tmp_path / f"devices{devices}"
        folder.mkdir()
        dm = CPSCDataModule(str(tiny_data.store), split=str(tmp_path / "split.json"),
                            policy="crop", length=972, batch_size=16, eval_batch_size=13, seed=5,
                            num_workers=0)
        def model() -> XECGModule:  # the same weights each time, thresholds at 0.5
            torch.manual_seed(0)
            return XECGModule(net=XECGNet(width=0.125), tune_thresholds=True)

        trainer = L.Trainer(accelerator="cpu", devices=devices,
                            strategy="ddp_spawn" if devices > 1 else "auto",
                            use_distributed_sampler=False, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[_EvalReport(str(folder))],
                            default_root_dir=tmp_path)
        trainer.validate(model(), datamodule=dm)
        # a new copy: processes started by ddp_spawn hand no tuned thresholds back
        trainer.test(model(), datamodule=dm)
        reports[devices] = {stage: json.loads((folder / f"{stage}.json").read_text())
                            for stage in ("val", "test")}
    one, three = reports[1], reports[3]
    for stage in ("val", "test"):
        assert one[stage]["metrics"].keys() == three[stage]["metrics"].keys()
        assert f"{stage}/loss" in one[stage]["metrics"]
        for key, value in one[stage]["metrics"].items():
            assert three[stage]["metrics"][key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    assert three["val"]["thresholds"] == pytest.approx(one["val"]["thresholds"], abs=1e-6)
    assert one["val"]["thresholds"] != [0.5] * NUM_CLASSES  # tuned on the two records
    assert one["test"]["records"] == three["test"]["records"] == 2


@pytest.mark.parametrize("policy", ["pad", "crop", "bucket"])
def test_pad_on_device_restores_the_same_batches(store, policy):
    """With ``pad_on_device`` the loader sends only the records' samples (less to build, copy
    and move); the DataModule's ``on_after_batch_transfer`` rebuilds the windows, so the model
    sees exactly the batches of the plain loader."""
    kw = dict(policy=policy, length=max(LENGTHS) + 100, batch_size=8, eval_batch_size=5)
    plain, trim = (CPSCDataModule(store, pad_on_device=flag, **kw) for flag in (False, True))
    plain.setup(), trim.setup()
    shrunk = 0
    for split in ("train", "val", "test"):
        for a, b in zip(batches(plain, split), batches(trim, split), strict=True):
            # the records' samples and nothing else travel
            assert "mask" not in b and b["x"].shape == (NUM_LEADS, int(a["mask"].sum()))
            shrunk += b["x"].numel() < a["x"].numel()
            b = trim.on_after_batch_transfer(b, 0)
            assert a.keys() == b.keys() and a["padded"] == b["padded"]
            for k in a:
                if isinstance(a[k], torch.Tensor):
                    assert torch.equal(a[k], b[k]), (split, k)
    # pad: every window starts with zeros; bucket: ends with them unless the longest fills it.
    assert shrunk > 0 or policy == "crop"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (gpu_window.sh)")
@pytest.mark.parametrize("policy", ["pad", "crop", "bucket"])
def test_packed_batches_unpack_on_a_gpu_as_on_the_cpu(store, policy):
    """What ``pad_on_device`` sends is rebuilt on the GPU (repeat_interleave, index_put) into
    the very windows the CPU rebuilds, and bfloat16 ``x`` into the same float32 values."""
    dm = CPSCDataModule(store, pad_on_device=True, half_transfer=True, policy=policy,
                        length=max(LENGTHS) + 100, batch_size=8)
    dm.trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False)
    dm.setup()
    for b in batches(dm, "train") + batches(dm, "val"):
        cpu = restore_batch(dict(b))
        gpu = restore_batch({k: v.cuda() if isinstance(v, torch.Tensor) else v
                             for k, v in b.items()})
        assert torch.equal(cpu["x"], gpu["x"].cpu()) and torch.equal(cpu["mask"],
                                                                     gpu["mask"].cpu())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (gpu_window.sh)")
@pytest.mark.parametrize("pack", [False, True])
def test_thread_batches_are_pinned_whole_on_a_gpu_as_on_the_cpu(store, pack):
    """Loader threads feeding a GPU build every tensor of a batch in pinned memory (a copy
    from pageable memory, even of ``y``, may make the host wait for the GPU's queue), and the
    batches are the CPU's."""
    kwargs = dict(pad_on_device=pack, policy="bucket", batch_size=8, num_workers=2)
    dm = CPSCDataModule(store, worker_kind="thread", pin_memory=True, **kwargs)
    dm.trainer = L.Trainer(accelerator="gpu", devices=1, logger=False)
    dm.setup()
    ref = CPSCDataModule(store, **{**kwargs, "num_workers": 0})  # the main process's batches
    ref.trainer = dm.trainer
    ref.setup()
    got, want = list(dm.train_dataloader()), list(ref.train_dataloader())
    assert len(got) == len(want)
    for b, r in zip(got, want):
        tensors = {k: v for k, v in b.items() if isinstance(v, torch.Tensor)}
        assert {"x", "y", "index"} <= set(tensors)
        assert all(v.is_pinned() for v in tensors.values()), \
            {k: v.is_pinned() for k, v in tensors.items()}
        assert all(torch.equal(v, r[k]) for k, v in tensors.items())


def test_aggregate_by_group_takes_each_records_mean_or_strongest_window():
    values = torch.tensor([[0.1, 0.9], [0.5, 0.2], [0.3, 0.4], [0.8, 0.1]])
    group = torch.tensor([0, 0, 1, 0])
    mean = aggregate_by_group(values, group, 2)
    assert torch.allclose(mean, torch.tensor([[1.4 / 3, 1.2 / 3], [0.3, 0.4]]))
    assert torch.equal(aggregate_by_group(values, group, 2, "max"),
                       torch.tensor([[0.8, 0.9], [0.3, 0.4]]))
    with pytest.raises(ValueError, match="must be one of"):
        aggregate_by_group(values, group, 2, "median")
    with pytest.raises(ValueError, match="class values"):
        aggregate_by_group(values, group, 2, "episodic")
    # episodic: the strongest window for PAC and PVC, the mean for every other class.
    probs = torch.rand(4, NUM_CLASSES)
    got = aggregate_by_group(probs, group, 2, "episodic")
    mean, peak = aggregate_by_group(probs, group, 2), aggregate_by_group(probs, group, 2, "max")
    for c in CLASSES:
        k = CLASS_INDEX[c]
        assert torch.equal(got[:, k], (peak if c in ("PAC", "PVC") else mean)[:, k]), c


@pytest.mark.parametrize("workers, kind", [(0, "process"), (1, "process"), (2, "thread")])
@pytest.mark.parametrize("policy", ["pad", "bucket"])
def test_half_transfer_gives_x_rounded_to_the_autocast_type(store, policy, workers, kind):
    """``half_transfer``: ``x`` travels as bf16 (under bf16-mixed) and is float32 again after
    the transfer, equal to the plain batch rounded to bf16, which is what autocast gives the
    first convolution (tests/test_models.py); everything else is the plain batch. Threads each
    round through a float32 buffer of their own."""
    kw = dict(policy=policy, length=max(LENGTHS) + 100, batch_size=8, num_workers=workers,
              pad_on_device=True, worker_kind=kind)
    plain, half = (CPSCDataModule(store, half_transfer=flag, **kw) for flag in (False, True))
    for dm in (plain, half):
        dm.setup()
        dm.trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False)
    for a, b in zip(batches(plain, "train"), batches(half, "train"), strict=True):
        assert a["x"].dtype == torch.float32 and b["x"].dtype == torch.bfloat16
        a, b = plain.on_after_batch_transfer(a, 0), half.on_after_batch_transfer(b, 0)
        assert b["x"].dtype == torch.float32 and a.keys() == b.keys()
        assert torch.equal(b["x"], a["x"].to(torch.bfloat16).float())
        for k in a.keys() - {"x"}:
            assert (torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor)
                    else a[k] == b[k]), k


def test_half_transfer_default_and_checks(store):
    dm = CPSCDataModule(store)
    dm.setup()
    assert dm._x_dtype() == torch.float32  # no trainer: float32
    for precision, expected in (("bf16-mixed", torch.float32), ("32-true", torch.float32)):
        dm.trainer = L.Trainer(accelerator="cpu", precision=precision, logger=False)
        assert dm._x_dtype() == expected  # off by default on a CPU: no transfer to save
    dm.half_transfer = True
    dm.trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False)
    assert dm._x_dtype() == torch.bfloat16
    dm.trainer = L.Trainer(accelerator="cpu", precision="32-true", logger=False)
    with pytest.raises(ConfigError, match="half_transfer needs a 16-bit precision"):
        dm.setup()  # a Trainer calls setup first: the run stops before it starts anything


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_round_to_16bit_rounds_as_torch(dtype):
    """The loader rounds x to 16 bits in NumPy (no torch op in a loader thread): bit for bit
    what torch's ``.to(dtype)`` gives, ties to even, signed zeros, subnormals and infinities."""
    rng = np.random.default_rng(0)
    n = 50_000
    scale = 10.0 ** rng.uniform(-6 if dtype == torch.float16 else -40, 4, n)
    values = (rng.standard_normal(n) * scale).astype(np.float32)
    ties = ((rng.integers(0, 2**31, n, dtype=np.uint32) & 0x7F7F0000) | 0x8000).view(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, 1.0, -1.0, 1e-45, 3.0e38], np.float32)
    x = np.concatenate([values, ties, -ties, special])
    if dtype == torch.float16:
        x = x[np.abs(x) < 65504]  # (larger ones overflow in both; NumPy warns)
    expected = torch.from_numpy(x).to(dtype)
    out = torch.empty(len(x), dtype=dtype)
    round_to_16bit(x.copy(), numpy_bits(out))  # (the copy: a bfloat16 rounding overwrites x)
    assert torch.equal(out.view(torch.int16), expected.view(torch.int16))


def test_bucket_multiple_default_fits_the_hardware(store, monkeypatch):
    """Left empty: 972 on a CPU (and with no trainer), 9,720 on an accelerator, where every new
    batch shape costs a cold start; the bucketed batches' lengths follow it, and metrics.json's
    ``loader`` says which was used. A value given is kept on both."""
    dm = CPSCDataModule(store, policy="bucket", batch_size=4, num_workers=0)
    dm.setup()
    assert dm.bucket_multiple == BUCKET_MULTIPLE == 972  # no trainer
    dm.trainer = L.Trainer(accelerator="cpu", logger=False)
    assert dm.bucket_multiple == 972 and dm.loader_settings()["bucket_multiple"] == 972
    assert {b["x"].shape[-1] % 972 for b in batches(dm, "train")} == {0}
    monkeypatch.setattr(CPSCDataModule, "_on_accelerator", lambda self: True)
    assert dm.bucket_multiple == GPU_BUCKET_MULTIPLE == 9720
    lengths = {dm.on_after_batch_transfer(b, 0)["x"].shape[-1] for b in batches(dm, "train")}
    assert lengths == {9720}  # every record is shorter
    given = CPSCDataModule(store, policy="bucket", bucket_multiple=243)
    assert given.bucket_multiple == 243
    with pytest.raises(ValueError, match="bucket_multiple must be a positive integer"):
        CPSCDataModule(store, bucket_multiple=0)
