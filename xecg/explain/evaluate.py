"""Score a model's maps on every record of a store that has evidence intervals.

:func:`score_store` gives one row per (record, model, method, label, metric);
:func:`evaluate_maps` the flat ``expl_*`` numbers that training writes into metrics.json;
:func:`evaluate_command` the files of ``xecg explain --evaluate``. The pairings:

- ``cam``, ``gradcam``, ``ig``: the map of class c against class c's evidence, for every true
  label with localisable evidence (label = the class);
- ``union``: a record-level map against the union of the true labels' evidence: A for
  ``attention``; for class-map methods the mean of the true labels' maps, each scaled to unit
  mass (the counterpart of xECGNet's reference map);
- ``coverage`` (records with two or more true labels with evidence): 1 if every true label's
  evidence gets more than its chance share of that record-level map's mass, else 0;
- ``aopc``: faithfulness for the predicted class (label = that class), ordered by A for
  ``attention`` and by the class's map otherwise.

Each is computed for the trained network and, unless switched off, for a freshly initialised
network of the same architecture (``model`` = ``randomised``), which must score near chance.
"""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from xecg.atomic import write_atomic, write_csv
from xecg.classes import CLASS_INDEX, CLASSES
from xecg.data.store import Store, has_store_files
from xecg.errors import ConfigError, NotFoundError, XECGError
from xecg.explain.maps import (
    OWN_MAPS,
    check_methods,
    explain,
    has_own_maps,
    randomised_copy,
)
from xecg.explain.scores import (
    MULTILABEL,
    SUMMARY_FIELDS,
    UNION,
    adjusted,
    aopc,
    covered,
    evidence_mask,
    flat_scores,
    format_summary,
    localisation,
    segments,
    summarise,
)
from xecg.records import at_rate

SCORE_FIELDS = ("record", "model", "method", "label", "metric", "value", "chance", "adjusted")


class NoEvidenceError(XECGError):
    """A store without evidence intervals, asked to score maps against them."""


def _store(store) -> Store:
    return store if isinstance(store, Store) else Store(store)


def require_evidence(store: Store) -> None:
    if not store.evidence:
        raise NoEvidenceError(
            f"{store.path}: no evidence intervals (evidence.csv has no rows), so there is "
            "nothing to score maps against; use a store made by `xecg prepare synthetic`")


def available_methods(net, methods: Sequence[str] | None) -> list[str]:
    """The methods asked for (checked), or by default every method the network supports
    except ``ig`` (the slow one): attention, cam and gradcam for xECGNet, gradcam otherwise."""
    if methods:
        return check_methods(net, methods)
    return ["attention", "cam", "gradcam"] if has_own_maps(net) else ["gradcam"]


def _row(record: str, model: str, method: str, label: str, metric: str, value: float,
         level: float, adj: float | None = None) -> dict:
    return {"record": record, "model": model, "method": method, "label": label,
            "metric": metric, "value": float(value), "chance": float(level),
            "adjusted": adjusted(value, level) if adj is None else float(adj)}


def _unit(values: np.ndarray) -> np.ndarray | None:
    a = np.maximum(values, 0.0)
    total = float(a.sum())
    return a / total if total > 0 else None


def score_record(net, x: torch.Tensor, fs: float, record_id: str, true: Sequence[int],
                 evidence: dict[int, list[tuple[int, int]]], methods: Sequence[str],
                 model: str = "trained", ig_steps: int = 16) -> list[dict]:
    """Rows for one record ``x`` (``1 x 12 x N``, normalised) with true classes ``true`` and
    per-class evidence intervals (samples at ``fs``)."""
    n = x.shape[-1]
    masks = {c: evidence_mask(evidence[c], n) for c in true if evidence.get(c)}
    localisable = [c for c, m in masks.items() if m.mean() < 1.0]
    union = np.logical_or.reduce(list(masks.values())) if masks else None
    net.eval()
    with torch.no_grad():
        top = int(net(x).probs[0].argmax())
    seed = zlib.crc32(record_id.encode())
    n_seg = len(segments(n))
    random_order = np.random.default_rng(seed).permutation(n_seg)

    def probability(batch):
        return net(batch).probs

    rows: list[dict] = []
    for method in methods:
        ex = explain(net, x, method, sorted({*true, top}), ig_steps=ig_steps)
        if method not in OWN_MAPS or method == "cam":
            for c in localisable:
                for metric, (value, level) in localisation(ex.classes[c], masks[c], fs).items():
                    rows.append(_row(record_id, model, method, CLASSES[c], metric, value, level))
        if ex.shared is not None:
            shared = ex.shared
        else:
            units = [u for u in (_unit(ex.classes[c]) for c in true) if u is not None]
            shared = np.mean(units, axis=0) if units else np.zeros(n, np.float32)
        if union is not None and union.mean() < 1.0:
            for metric, (value, level) in localisation(shared, union, fs).items():
                rows.append(_row(record_id, model, method, UNION, metric, value, level))
        if len(masks) >= 2:
            rows.append(_row(record_id, model, method, MULTILABEL, "coverage",
                             float(covered(shared, list(masks.values()))), float("nan"),
                             float("nan")))
        order_by = ex.shared if method == "attention" else ex.classes[top]
        value = aopc(probability, x, order_by, top)
        level = aopc(probability, x, order_by, top, order=random_order)
        rows.append(_row(record_id, model, method, CLASSES[top], "aopc", value, level,
                         value - level))
    return rows


def score_store(module, store, indices: Sequence[int] | None = None,
                methods: Sequence[str] | None = None, randomised: bool = True,
                ig_steps: int = 16, seed: int = 0, progress: bool = False) -> list[dict]:
    """Score rows for the records ``indices`` of ``store`` (default: all) that have evidence.

    ``module``: an :class:`xecg.module.XECGModule` (its network, lead statistics and sample
    rate); records at another rate are resampled to it, evidence scaled alike. ``randomised``:
    also score a freshly initialised copy of the network (weights from ``seed``)."""
    store = _store(store)
    require_evidence(store)
    net = module.net
    methods = available_methods(net, methods)
    nets = [("trained", net)]
    if randomised:
        nets.append(("randomised", randomised_copy(net, seed)))
    fs = float(module.sample_rate)
    idx = np.arange(len(store)) if indices is None else np.asarray(indices, dtype=np.int64)
    ev = store.evidence
    chosen = [int(i) for i in idx if ev.get(store.ids[int(i)])]
    rows: list[dict] = []
    was_training = module.training
    module.eval()
    try:
        for i in tqdm(chosen, desc="explain", unit="rec", disable=not progress):
            rec = at_rate(store.record(i), fs)
            evidence: dict[int, list[tuple[int, int]]] = {}
            for label, a, b in rec.evidence:
                evidence.setdefault(CLASS_INDEX[label], []).append((int(a), int(b)))
            true = [CLASS_INDEX[c] for c in rec.label_names]
            x = module.model_input(rec.signal)
            for name, model in nets:
                rows += score_record(model, x, fs, rec.id, true, evidence, methods, name,
                                     ig_steps)
    finally:
        module.train(was_training)
    return rows


def evaluate_maps(module, store, indices: Sequence[int] | None = None,
                  methods: Sequence[str] | None = None, randomised: bool = False,
                  ig_steps: int = 16, resamples: int = 1000) -> dict[str, float]:
    """The flat explanation scores (``expl_rma_attention``, ``expl_coverage``, ...; see
    :func:`xecg.explain.scores.flat_scores`) of ``module`` on ``store``'s records
    ``indices``. Empty if none of them has evidence."""
    rows = score_store(module, store, indices, methods, randomised, ig_steps)
    return flat_scores(summarise(rows, resamples)) if rows else {}


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.6g}"
    return str(v)


def evaluate_command(ckpt: str | os.PathLike, store: str | os.PathLike, out: str | os.PathLike,
                     methods: Sequence[str] | None = None, randomised: bool = True,
                     limit: int | None = None, ig_steps: int = 16, resamples: int = 1000,
                     device: str = "cpu") -> Path:
    """``xecg explain --evaluate``: writes ``scores.csv``, ``summary.csv`` and ``summary.md``
    under ``out`` and logs them to W&B if a run is active. Returns ``out``."""
    from xecg.guards import load_module
    from xecg.records import check_device

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: must be at least 1 (records to score)")
    st = store if isinstance(store, Store) else _open_store(Path(store))
    require_evidence(st)  # before loading anything: a store without evidence is refused fast
    # weights_only: tensors and plain data; the device checked first, not blamed on the file
    module = load_module(ckpt, map_location=check_device(device))
    indices = [i for i in range(len(st)) if st.evidence.get(st.ids[i])]
    if limit is not None:
        indices = indices[:limit]
    rows = score_store(module, st, indices, methods, randomised, ig_steps, progress=True)
    summary = summarise(rows, resamples)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "scores.csv", SCORE_FIELDS,
              [[_fmt(r[k]) for k in SCORE_FIELDS] for r in rows])
    write_csv(out / "summary.csv", SUMMARY_FIELDS,
              [[_fmt(r[k]) for k in SUMMARY_FIELDS] for r in summary])
    title = (f"Explanation scores: {Path(ckpt).name} on {st.path.name} "
             f"({len(indices)} records with evidence)")
    write_atomic(out / "summary.md", format_summary(summary, title) + "\n")
    _log_wandb(summary)
    print(format_summary([r for r in summary if r["label"] in ("all", UNION, MULTILABEL)],
                         title))
    print(f"-> {out / 'scores.csv'}, {out / 'summary.csv'}, {out / 'summary.md'}")
    return out


def _open_store(path: Path) -> Store:
    """The store at ``path``; for a folder that is no store (a dataset's own files, say) an
    error that says how to make one, and never to delete that folder. A store left
    half-written (its files without a valid meta.json) gets the store's own message."""
    if not path.exists():
        raise NotFoundError(f"{path}: no such folder (--evaluate takes a store made by "
                            "`xecg prepare synthetic --out STORE`)")
    if not has_store_files(path):
        kind = ("a dataset folder, not an xecg store" if path.is_dir() and _has_records(path)
                else "not an xecg store")
        raise NotAStoreError(
            f"{path}: {kind}; --evaluate scores maps against evidence intervals, which only "
            "synthetic stores hold: make one with `xecg prepare synthetic --out STORE` (for "
            "pages of these records give the folder as PATH: `xecg explain --ckpt CKPT "
            f"{path} --out DIR`)")
    return Store(path)


def _has_records(path: Path) -> bool:
    """True if ``path`` holds record files of a layout xecg reads (a raw dataset)."""
    from xecg.data.readers import record_suffixes

    suffixes = record_suffixes()
    return any(f.suffix.lower() in suffixes for f in path.rglob("*") if f.is_file())


class NotAStoreError(XECGError):
    """``--evaluate`` given a folder that is no xecg store (a raw dataset, say)."""


def _log_wandb(summary: Sequence[dict]) -> None:
    wandb = sys.modules.get("wandb")
    if wandb is None or getattr(wandb, "run", None) is None:
        return
    wandb.log({"explain/summary": wandb.Table(
        columns=list(SUMMARY_FIELDS), data=[[r[k] for k in SUMMARY_FIELDS] for r in summary]),
        **{f"explain/{k}": v for k, v in flat_scores(summary).items()}})
