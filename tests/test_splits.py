"""Splits: the authors' protocol (exact counts on the real REFERENCE.csv), multilabel k-fold
balance, store vs REFERENCE.csv equivalence, the JSON file and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures import write_reference_csv
from sklearn.model_selection import train_test_split

from xecg.classes import CPSC_CODES, NUM_CLASSES, NUM_LEADS, multi_hot
from xecg.cli import main as cli_main
from xecg.data.readers import read_reference
from xecg.data.record import Record
from xecg.data.splits import (
    kfold_split,
    load_split,
    make_split,
    paper_split,
    save_split,
)
from xecg.data.store import StoreWriter


def random_codes(n: int, seed: int = 0) -> list[list[int]]:
    """CPSC codes per record: mostly one label, about 1 in 8 with two or three distinct ones."""
    rng = np.random.default_rng(seed)
    return [sorted(rng.choice(9, size=rng.choice([1, 2, 3], p=[0.88, 0.1, 0.02]),
                              replace=False) + 1) for _ in range(n)]


def write_store(path, ids, codes, seed: int = 0) -> None:
    """A store with the given ids and labels (CPSC codes), short random signals."""
    rng = np.random.default_rng(seed)
    with StoreWriter(path, fs=500.0) as w:
        for rid, c in zip(ids, codes):
            w.add(Record(id=rid, signal=rng.standard_normal((NUM_LEADS, 50), dtype=np.float32),
                         fs=500.0, labels=multi_hot(CPSC_CODES[k] for k in c)))


def test_paper_split_on_official_reference(reference_csv):
    split = make_split(reference_csv, protocol="paper")
    multi = {r: y.sum() >= 2 for r, (y, _) in read_reference(reference_csv).items()}
    got = {k: (len(split[k]), sum(multi[r] for r in split[k])) for k in ("train", "val", "test")}
    assert got == {"train": (5225, 366), "val": (276, 19), "test": (1376, 91)}
    assert split["counts"]["test"] == {"records": 1376, "multilabel": 91}
    assert split["seed"] == 1004 and split["protocol"] == "paper"


def test_paper_split_equals_sklearn_train_test_split():
    rng = np.random.default_rng(3)
    ids = [f"A{i:04d}" for i in rng.permutation(np.arange(1, 538))]
    split = paper_split(ids, seed=1004)
    train_val, test = train_test_split(sorted(ids), test_size=0.2, random_state=1004)
    train, val = train_test_split(train_val, test_size=0.05, random_state=1004)
    assert split == {"train": sorted(train), "val": sorted(val), "test": sorted(test)}
    assert paper_split(ids, seed=7) != split


def test_store_and_reference_rows_give_the_same_split(tmp_path):
    ids = [f"A{i:04d}" for i in range(1, 241)]
    codes = random_codes(len(ids))
    write_reference_csv(tmp_path / "REFERENCE.csv", zip(ids, codes))
    # The store holds the same records in another order.
    order = np.random.default_rng(1).permutation(len(ids))
    write_store(tmp_path / "store", [ids[i] for i in order], [codes[i] for i in order])
    for kw in ({"protocol": "paper"}, {"protocol": "kfold", "folds": 4, "fold": 2, "seed": 5}):
        a = make_split(tmp_path / "REFERENCE.csv", **kw)
        b = make_split(tmp_path / "store", **kw)
        for k in ("train", "val", "test", "counts"):
            assert a[k] == b[k], (kw, k)


def kfold_labels(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    ids = [f"R{i:04d}" for i in range(n)]
    labels = np.zeros((n, NUM_CLASSES), np.float32)
    for row, c in zip(labels, random_codes(n, seed)):
        for k in c:
            row[NUM_CLASSES - k] = 1.0  # any fixed mapping of codes to columns will do
    return ids, labels


def test_kfold_folds_partition_and_balance():
    ids, labels = kfold_labels(450)
    folds = 5
    splits = [kfold_split(ids, labels, folds=folds, fold=i, seed=3) for i in range(folds)]
    tests = [set(s["test"]) for s in splits]
    assert set().union(*tests) == set(ids)
    assert sum(len(t) for t in tests) == len(ids)
    row = {r: i for i, r in enumerate(ids)}
    strata = np.column_stack([labels, labels.sum(1) >= 2])
    per_fold = np.array([strata[[row[r] for r in t]].sum(0) for t in tests])  # folds x 10
    mean = strata.sum(0) / folds
    assert np.all(np.abs(per_fold - mean) <= 2), per_fold
    assert strata[:, -1].sum() >= 30  # the multilabel column is really exercised
    for s, t in zip(splits, tests):
        train, val = set(s["train"]), set(s["val"])
        assert not (train & val) and not (train & t) and not (val & t)
        assert train | val | t == set(ids)
        assert abs(len(val) - 0.1 * (len(train) + len(val))) <= 3


def test_kfold_is_deterministic_per_seed():
    ids, labels = kfold_labels(200, seed=1)
    a = kfold_split(ids, labels, folds=4, fold=1, seed=0)
    assert a == kfold_split(ids, labels, folds=4, fold=1, seed=0)
    assert a["test"] != kfold_split(ids, labels, folds=4, fold=1, seed=1)["test"]
    with pytest.raises(ValueError, match="fold"):
        kfold_split(ids, labels, folds=4, fold=4)


def test_kfold_on_official_reference(reference_csv):
    split = make_split(reference_csv, protocol="kfold", folds=10, fold=0)
    counts = split["counts"]
    assert sum(c["records"] for c in counts.values()) == 6877
    assert abs(counts["test"]["records"] - 688) <= 2
    assert abs(counts["test"]["multilabel"] - 47.6) <= 2


def test_json_round_trip_and_validation(tmp_path):
    ids = [f"A{i:04d}" for i in range(1, 101)]
    write_reference_csv(tmp_path / "REFERENCE.csv", zip(ids, random_codes(100)))
    split = make_split(tmp_path / "REFERENCE.csv", protocol="kfold", folds=5, fold=1)
    out = tmp_path / "out" / "split.json"
    save_split(split, out)
    assert load_split(out) == split
    assert [p.name for p in out.parent.iterdir()] == ["split.json"]  # no temporary left behind
    assert {"protocol", "seed", "folds", "fold", "source", "counts"} <= set(split)
    broken = dict(split, val=split["val"] + split["test"][:1])
    save_split(broken, out)
    with pytest.raises(ValueError, match=r"split\.json.*more than once"):
        load_split(out)
    out.write_text(json.dumps({"train": [], "val": []}))
    with pytest.raises(ValueError, match="'test'"):
        load_split(out)


def test_cli_split_writes_the_file(tmp_path, capsys):
    ids = [f"A{i:04d}" for i in range(1, 61)]
    write_reference_csv(tmp_path / "REFERENCE.csv", zip(ids, random_codes(60)))
    out = tmp_path / "paper.json"
    assert cli_main(["split", str(tmp_path / "REFERENCE.csv"), "--out", str(out)]) == 0
    assert load_split(out)["train"] == paper_split(ids)["train"]
    assert "test 12" in capsys.readouterr().out
    with pytest.raises(ValueError, match="protocol"):
        make_split(tmp_path / "REFERENCE.csv", protocol="random")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        make_split(tmp_path / "nowhere")
    # the command: one line that names the path, no traceback
    assert cli_main(["split", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere: no such store folder" in err, err
    # a fold that does not exist (fold counts from 0): one line too
    assert cli_main(["split", str(tmp_path / "REFERENCE.csv"), "--protocol", "kfold",
                     "--folds", "10", "--fold", "10", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "REFERENCE.csv: kfold needs" in err and "fold 10 of 10" in err


def test_split_of_a_reference_saved_with_a_bom(tmp_path):
    # `xecg split REFERENCE.csv` reads it as the readers do: a byte-order mark (Excel's "CSV
    # UTF-8") lost the first record, whose id began with it.
    ids = [f"A{i:04d}" for i in range(1, 41)]
    rows = "".join(f"{r},{','.join(map(str, c))}\r\n" for r, c in zip(ids, random_codes(40)))
    plain, bom = tmp_path / "plain.csv", tmp_path / "REFERENCE.csv"
    plain.write_text(rows)
    bom.write_bytes(rows.encode("utf-8-sig"))
    out = tmp_path / "split.json"
    assert cli_main(["split", str(bom), "--out", str(out)]) == 0
    split = load_split(out)
    assert sorted(split["train"] + split["val"] + split["test"]) == ids
    assert split["test"] == make_split(plain)["test"]


def _damaged_split(good: dict, how: str) -> str:
    """The text of split ``good`` damaged ``how``."""
    split = dict(good)
    if how == "cut short":
        return json.dumps(split, indent=1)[:200]
    if how == "a split that is no list":
        split["train"] = 5
    elif how == "numbers for ids":
        split["val"] = [1, 2]
    elif how == "records in two splits":
        split["test"] = split["test"] + split["train"][:3]
    return json.dumps(split)


@pytest.mark.parametrize("how", ["cut short", "a split that is no list", "numbers for ids",
                                 "records in two splits", "missing"])
def test_a_damaged_split_file_is_one_line(tiny_config, tiny_data, tmp_path, capsys, how):
    """`--data.split FILE` that is damaged or hand-edited wrongly: each was a traceback (a
    ValueError with the right words at its end) before the run could start."""
    bad = tmp_path / "split.json"
    if how != "missing":
        bad.write_text(_damaged_split(load_split(tiny_data.split), how))
    config = tiny_config(tmp_path)
    assert cli_main(["fit", "--config", str(config), "--data.split", str(bad),
                     "--experiment.wandb", "false"]) == 2
    (line,) = [t for t in capsys.readouterr().err.splitlines() if t.startswith("xecg: error:")]
    problem = {"cut short": "not a JSON split file (",
               "a split that is no list": "'train' must be a list of record ids",
               "numbers for ids": "'val' must be a list of record ids",
               "records in two splits": "record ids appear more than once across splits",
               "missing": "no such split file"}[how]
    assert line.startswith(f"xecg: error: {bad}: {problem}")
