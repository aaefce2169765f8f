"""Train/validation/test splits of record ids: the authors' protocol and multilabel k-fold.

A split is a dict ``{"train": [ids], "val": [ids], "test": [ids], ...}`` plus fields that document
how it was made (protocol, seed, folds, source, per-split counts); :func:`save_split` writes it as
JSON, :func:`load_split` reads and checks it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from xecg.atomic import write_atomic
from xecg.classes import NUM_CLASSES
from xecg.errors import NotFoundError, SplitError

PROTOCOLS = ("paper", "kfold")
SPLITS = ("train", "val", "test")
#: The authors' ``random_state`` for both ``train_test_split`` calls.
PAPER_SEED = 1004
PAPER_TEST_SIZE = 0.2
PAPER_VAL_SIZE = 0.05


def default_seed(protocol: str) -> int:
    """Seed used when none is given: the authors' 1004 for ``paper``, 0 for ``kfold``."""
    return PAPER_SEED if protocol == "paper" else 0


def _source_labels(source: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Record ids and multi-hot labels ``R x 9`` of a store folder or a REFERENCE.csv."""
    from xecg.data.readers import read_reference
    from xecg.data.store import Store

    path = Path(source)
    if path.is_dir():
        store = Store(path)
        return list(store.ids), store.labels
    if path.is_file():
        reference = read_reference(path)
        labels = np.array([y for y, _ in reference.values()], dtype=np.float32)
        return list(reference), labels.reshape(-1, NUM_CLASSES)
    raise NotFoundError(f"{path}: no such store folder or REFERENCE.csv")


def _shuffle_split(n: int, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test positions exactly as sklearn's ``train_test_split(random_state=seed)``."""
    n_test = math.ceil(test_size * n)
    perm = np.random.RandomState(seed).permutation(n)
    return perm[n_test:], perm[:n_test]


def _parts(ids: np.ndarray, train: np.ndarray, val: np.ndarray, test: np.ndarray
           ) -> dict[str, list[str]]:
    return {k: sorted(ids[p].tolist()) for k, p in zip(SPLITS, (train, val, test))}


def paper_split(ids: Sequence[str], seed: int = PAPER_SEED) -> dict[str, list[str]]:
    """The authors' protocol: 20% test, then 5% of the rest for validation, on sorted ids."""
    ordered = np.array(sorted(ids))
    train_val, test = _shuffle_split(len(ordered), PAPER_TEST_SIZE, seed)
    # The second call splits the first call's training part in its (shuffled) order.
    train, val = _shuffle_split(len(train_val), PAPER_VAL_SIZE, seed)
    return _parts(ordered, train_val[train], train_val[val], test)


def check_fold(folds: int, fold: int) -> None:
    """``fold`` of ``folds`` names a fold (``ValueError`` otherwise): folds >= 2, 0 <= fold <
    folds."""
    if folds < 2 or not 0 <= fold < folds:
        raise ValueError(f"kfold needs folds >= 2 and 0 <= fold < folds, got fold {fold} of "
                         f"{folds}")


def kfold_split(ids: Sequence[str], labels: np.ndarray, folds: int = 10, fold: int = 0,
                seed: int = 0, val_size: float = 0.1) -> dict[str, list[str]]:
    """Fold ``fold`` of a multilabel-stratified k-fold split as test; validation from the rest.

    ``labels`` is ``R x 9`` multi-hot in the order of ``ids``. Stratification also balances the
    multilabel records (an extra column), so each fold gets its share of them.
    """
    from iterstrat.ml_stratifiers import (
        MultilabelStratifiedKFold,
        MultilabelStratifiedShuffleSplit,
    )

    check_fold(folds, fold)
    if not 0 < val_size < 1:
        raise ValueError(f"val_size must be in (0, 1), got {val_size}")
    if len(ids) < folds:
        raise ValueError(f"{len(ids)} records cannot make {folds} folds")
    order = np.argsort(np.asarray(ids))  # independent of the source's row order
    ordered = np.asarray(ids)[order]
    y = np.asarray(labels)[order] > 0.5
    strata = np.column_stack([y, y.sum(1) >= 2]).astype(np.int64)
    dummy = np.zeros(len(ordered))
    kf = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    train_val, test = list(kf.split(dummy, strata))[fold]
    ss = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=val_size, random_state=seed)
    train, val = next(ss.split(dummy[train_val], strata[train_val]))
    return _parts(ordered, train_val[train], train_val[val], test)


def make_split(source: str | os.PathLike, protocol: str = "paper", seed: int | None = None,
               folds: int = 10, fold: int = 0, val_size: float = 0.1) -> dict:
    """Split the records of a store or REFERENCE.csv; returns the JSON-ready split dict.

    ``folds``, ``fold`` and ``val_size`` apply to ``kfold`` only: the paper's sizes are fixed.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown split protocol {protocol!r}; choose one of {PROTOCOLS}")
    seed = default_seed(protocol) if seed is None else int(seed)
    ids, labels = _source_labels(source)
    if protocol == "paper":
        parts = paper_split(ids, seed)
        info = {"folds": None, "fold": None, "test_size": PAPER_TEST_SIZE,
                "val_size": PAPER_VAL_SIZE}
    else:
        parts = kfold_split(ids, labels, folds, fold, seed, val_size)
        info = {"folds": folds, "fold": fold, "test_size": 1 / folds, "val_size": val_size}
    row = {rid: i for i, rid in enumerate(ids)}
    multilabel = labels.sum(1) >= 2
    counts = {k: {"records": len(v), "multilabel": int(sum(multilabel[row[r]] for r in v))}
              for k, v in parts.items()}
    return {"protocol": protocol, "seed": seed, **info, "source": str(source), "counts": counts,
            **parts}


def save_split(split: dict, out: str | os.PathLike) -> None:
    """Write a split as JSON atomically (temporary file, then rename)."""
    write_atomic(out, json.dumps(split, indent=1) + "\n")


def load_split(path: str | os.PathLike) -> dict:
    """Read a split JSON; raises :class:`xecg.errors.SplitError` (one line, naming the file)
    if it is missing, not JSON, or lacks or overlaps the splits."""
    path = Path(path)
    try:
        split = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such split file") from None
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise SplitError(f"{path}: not a JSON split file ({e})") from None
    for k in SPLITS:
        ids = split.get(k) if isinstance(split, dict) else None
        if not isinstance(ids, list) or not all(isinstance(r, str) for r in ids):
            raise SplitError(f"{path}: '{k}' must be a list of record ids")
    uses = Counter(r for k in SPLITS for r in split[k])
    repeated = sorted(r for r, n in uses.items() if n > 1)
    if repeated:
        raise SplitError(f"{path}: record ids appear more than once across splits: "
                         f"{repeated[:5]}")
    return split


def split_digest(split: dict) -> str:
    """A short fingerprint of which records a split puts where (16 hex digits of a SHA-256),
    independent of the file's other keys and of the order of its lists: two runs whose digests
    agree trained, validated and tested on the same records."""
    parts = {k: sorted(split[k]) for k in SPLITS}
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


class SplitChange(NamedTuple):
    """How the records of two splits differ: ``text`` as ``train/val/test 660/74/182 records,
    now 624/70/172; 31 of the test and 5 of the validation records were training records
    (first: A0020, ...)``, and ``leaked``, how many of the new val and test records the old
    split trained on."""

    text: str
    leaked: int


def split_changes(old: dict, new: dict) -> SplitChange | None:
    """What differs between the records of split ``old`` (a checkpoint's) and ``new``; None
    when they agree."""
    if all(sorted(old[k]) == sorted(new[k]) for k in SPLITS):
        return None
    sizes = "/".join(str(len(old[k])) for k in SPLITS)
    now = "/".join(str(len(new[k])) for k in SPLITS)
    trained = set(old["train"])
    leaked = {k: [r for r in new[k] if r in trained] for k in ("test", "val")}
    text = f"train/val/test {sizes} records, now {now}"
    if leaked["test"] or leaked["val"]:
        first = (leaked["test"] + leaked["val"])[:5]
        text += (f"; {len(leaked['test'])} of the test and {len(leaked['val'])} of the "
                 f"validation records were training records (first: {', '.join(first)})")
    return SplitChange(text, len(leaked["test"]) + len(leaked["val"]))


def missing_records(split_path: str | os.PathLike, subset: str, wanted: Sequence[str],
                    present: set[str], where: str) -> str | None:
    """``SPLIT: 2 of its 1,376 test records are not in WHERE (first: A0101, A0102)``, or None
    when ``present`` holds every record of ``wanted`` (the ``subset`` of the split file)."""
    missing = [r for r in wanted if r not in present]
    if not missing:
        return None
    return (f"{split_path}: {len(missing):,} of its {len(wanted):,} {subset} records are not in "
            f"{where} (first: {', '.join(missing[:5])})")
