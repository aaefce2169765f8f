"""``CPSCDataModule``: batches of 12-lead windows from a prepared store and a split.

Length policies:

- ``pad``: every record zero-padded at the start to ``length`` (the paper: 72,000); a longer
  record keeps its first ``length`` samples.
- ``crop``: training takes one random ``length`` window per record and epoch; evaluation takes
  every non-overlapping window of the record (the last one aligned to its end) and the consumer
  averages the outputs per record with :func:`~xecg.data.windows.average_by_group`.
- ``bucket``: batches of records of similar length, padded at the end to the batch's longest
  length rounded up to ``bucket_multiple`` (``length`` is not used).

Records shorter than a window are zero-padded at the start (pad, crop). Every batch is a dict:
``index`` int64 ``B`` (store positions), ``x`` float32 ``W x 12 x T``, ``y`` float32 ``B x 9``,
``mask`` bool ``W x T`` (True on real samples), ``padded`` (a Python bool: whether any mask value
is False), and for crop evaluation ``group`` int64 ``W``
(the batch row of each window's record); otherwise W = B. Padding is 0 after normalisation.
With ``pad_on_device`` (the default on an accelerator) the loader sends only the records'
samples: ``x`` ``12 x N`` holds the windows' samples one window after another, ``spans`` int64
``W x 2`` where each window's samples go in its ``T`` (``length``) samples, and no ``mask``; the
DataModule's ``on_after_batch_transfer`` (:func:`~xecg.data.dataset.restore_batch`) rebuilds
``x`` and ``mask`` on the device, so the model sees the same batch either way. With
``half_transfer`` (the default under 16-bit mixed precision on an accelerator) ``x`` travels as
the 16-bit type that the network's first convolution casts it to anyway, and is float32 again on
the device: half the bytes through shared memory, pinning and the host-device copy, and the
same input to the network.

The pieces, in the order data flows: :mod:`xecg.data.windows` (where each window begins),
:mod:`xecg.data.batches` (which records each batch holds: the sampler), :mod:`xecg.data.dataset`
(a batch built from its plan) and this module, which joins them to a store and a split.

All randomness (order, crop positions, buckets) is drawn in the main process from
``(seed, epoch)``, so batches do not depend on the number or timing of workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from xecg.classes import NUM_LEADS
from xecg.data.batches import BUCKET_MULTIPLE, GPU_BUCKET_MULTIPLE, BatchPlanner
from xecg.data.dataset import WindowDataset, restore_batch
from xecg.data.filters import check_band, filtered_store
from xecg.data.loader import ThreadLoader
from xecg.data.splits import (
    SPLITS,
    check_fold,
    default_seed,
    load_split,
    make_split,
    missing_records,
    save_split,
    split_changes,
    split_digest,
)
from xecg.data.store import Store, is_store
from xecg.data.synthetic import (
    DEFAULT_DISCORDANT_ST,
    DEFAULT_LEAD_GAINS,
    DEFAULT_NUISANCE,
    DEFAULT_ST_VARIETY,
    Realism,
)
from xecg.data.windows import POLICIES, Policy
from xecg.errors import ConfigError

#: What builds batches when ``num_workers`` > 0: DataLoader worker processes, or threads of the
#: training process (:class:`~xecg.data.loader.ThreadLoader`).
WorkerKind = Literal["process", "thread"]
#: ``x``'s type in transit under each 16-bit precision (``half_transfer``): the type autocast
#: gives the first convolution's input, so rounding to it early changes nothing.
_TRANSFER_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}


@dataclass(frozen=True)
class SyntheticOptions:
    """How ``source: synthetic`` makes its store (:func:`xecg.data.synthetic.make_synthetic_store`):
    ``n`` records from generator ``seed``, durations drawn from ``durations`` seconds (None:
    CPSC-like), classes ``balanced`` or at CPSC's rates, with nuisance level ``nuisance``
    (``"v1"``: generator version 1, the default; ``"wide"``: version 3); ``st_variety`` varies
    normal ST/T (J-point elevation, T size and axis) and makes STE clearer (off by default);
    ``lead_gains`` ``"adult"`` gives normal adults' QRS amplitudes per lead (``"v1"``: version
    1's, the default); ``discordant_st`` adds the secondary ST shift of RBBB and PVC beats (off
    by default)."""

    n: int = 2000
    seed: int = 0
    durations: tuple[float, float] | None = None
    balanced: bool = False
    # Flat here so that configs say `data.synthetic.st_variety`; Realism holds the same fields.
    nuisance: str = DEFAULT_NUISANCE
    st_variety: bool = DEFAULT_ST_VARIETY
    lead_gains: str = DEFAULT_LEAD_GAINS
    discordant_st: bool = DEFAULT_DISCORDANT_ST

    @property
    def realism(self) -> Realism:
        """The realism options as the generator takes them (checked there)."""
        return Realism(**{f.name: getattr(self, f.name) for f in fields(Realism)})


class CPSCDataModule(L.LightningDataModule):
    """Batches from a prepared store (``xecg prepare``) and a split (``xecg split``).

    ``source``: a dataset root, or ``synthetic``, to prepare ``store`` from when it is missing or
    out of date (``synthetic`` holds the generator's options); None uses ``store`` as it is.
    ``split``: a split JSON; if None, ``protocol`` (with ``split_seed``, ``folds``, ``fold``) makes
    one and keeps it at ``STORE/splits/``. ``seed`` drives shuffling and crops (default: the seed
    given to ``lightning.seed_everything``, else 0). Normalisation statistics come from the
    training split only and travel in checkpoints through :meth:`state_dict`. ``bandpass``
    ``[low, high]`` Hz: train and evaluate on a zero-phase band-passed copy of the store
    (:mod:`xecg.data.filters`); the checkpoint keeps the band for new records.
    ``worker_kind``: with ``num_workers`` > 0, DataLoader worker processes (``process``) or as
    many threads of this process (``thread``: batches built straight into pinned memory,
    nothing received or copied again; :mod:`xecg.data.loader`). The batches are the same.

    Distributed (Lightning DDP, any ``use_distributed_sampler``): ``batch_size`` is per process;
    each process trains on its share of one global plan drawn from ``(seed, epoch)`` (padded with
    repeated batches to equal step counts) and evaluates a disjoint share of the records, so
    torchmetrics' cross-process reduction counts every record once (see
    :class:`~xecg.data.batches.BatchPlanner`).
    """

    def __init__(self, store: str, split: str | None = None,
                 protocol: Literal["paper", "kfold"] = "paper", split_seed: int | None = None,
                 folds: int = 10, fold: int = 0, policy: Policy = "crop", length: int = 2880,
                 batch_size: int = 32, eval_batch_size: int | None = None,
                 num_workers: int | None = None, pin_memory: bool | None = None,
                 bucket_multiple: int | None = None, normalize: bool = True,
                 seed: int | None = None,
                 source: str | None = None, synthetic: SyntheticOptions | None = None,
                 pad_on_device: bool | None = None, half_transfer: bool | None = None,
                 bandpass: tuple[float, float] | None = None, worker_kind: WorkerKind = "process"):
        super().__init__()
        if policy not in POLICIES:
            raise ValueError(f"unknown length policy {policy!r}; choose one of {POLICIES}")
        if worker_kind not in get_args(WorkerKind):
            raise ValueError(f"unknown worker_kind {worker_kind!r}; choose one of "
                             f"{get_args(WorkerKind)}")
        for name, value in (("length", length), ("batch_size", batch_size),
                            ("bucket_multiple", 1 if bucket_multiple is None else bucket_multiple),
                            ("eval_batch_size", eval_batch_size or 1)):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if split is None and protocol == "kfold":  # here, not at the first fit's setup
            check_fold(folds, fold)
        self.save_hyperparameters()
        self.store_path = Path(store)
        if source not in (None, "synthetic") and is_store(source):
            self.store_path = Path(source)  # already prepared: train on it as it is
        self.split = split
        self.protocol, self.split_seed, self.folds, self.fold = protocol, split_seed, folds, fold
        self.policy, self.length, self._bucket_multiple = policy, length, bucket_multiple
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.worker_kind = worker_kind
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.pad_on_device = pad_on_device
        self.half_transfer = half_transfer
        self.normalize = normalize
        self.seed = seed
        self.source = source
        self.synthetic = synthetic or SyntheticOptions()
        self.bandpass = check_band(bandpass)
        self.store: Store | None = None  # what batches are cut from (band-passed if asked)
        self.raw_store: Store | None = None  # the records as recorded, at the same positions
        self._filtered: Path | None = None  # the band-passed copy, once prepare_data made it
        self.indices: dict[str, np.ndarray] = {}
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self._restored_stats = False
        # The record ids of each split, as set up here and as a restored checkpoint trained on.
        self._split_ids: dict[str, list[str]] = {}
        self._ckpt_split: dict[str, list[str]] | None = None
        self._ckpt_split_path = ""

    # -- split and statistics ------------------------------------------------------------------

    @property
    def split_path(self) -> Path:
        """The split JSON in use: ``split`` or the one kept in the store's ``splits/`` folder."""
        if self.split is not None:
            return Path(self.split)
        seed = default_seed(self.protocol) if self.split_seed is None else self.split_seed
        name = (f"paper-{seed}" if self.protocol == "paper"
                else f"kfold-{seed}-fold{self.fold}of{self.folds}")
        return self.store_path / "splits" / f"{name}.json"

    def prepare_data(self) -> None:
        """Prepares the store from ``source`` (reused when current) and makes the split file if
        it is missing. Lightning runs this on one process only."""
        if self.source == "synthetic":
            from xecg.data.synthetic import make_synthetic_store

            opts = self.synthetic
            make_synthetic_store(self.store_path, n=opts.n, seed=opts.seed,
                                 durations=tuple(opts.durations) if opts.durations else None,
                                 balanced=opts.balanced, realism=opts.realism)
        elif self.source is not None:
            from xecg.data.prepare import load_or_prepare

            load_or_prepare(self.source, self.store_path)
        path = self.split_path
        if self.split is None and not path.exists():
            save_split(make_split(self.store_path, self.protocol, seed=self.split_seed,
                                  folds=self.folds, fold=self.fold), path)
        if self.bandpass is not None:
            self._filtered = filtered_store(self.store_path, self.bandpass)

    def setup(self, stage: str | None = None) -> None:
        """Opens the store, reads the split and computes the training split's lead statistics."""
        if self.trainer is not None:
            self._x_dtype()  # a bad half_transfer fails here, before a run has started anything
        if self.store is not None:
            return
        if not is_store(self.store_path) or not self.split_path.exists():
            self.prepare_data()  # used without a Trainer, which would have called it
        # The split names record ids, so it serves the band-passed copy as well (same ids).
        # prepare_data checked the copy in this process already (its full checksum); other
        # processes (DDP ranks beyond the first of a node) check it here.
        store = Store(self.store_path if self.bandpass is None
                      else self._filtered or filtered_store(self.store_path, self.bandpass))
        self.raw_store = store if self.bandpass is None else Store(self.store_path)
        split = load_split(self.split_path)
        known = set(store.ids)
        for name in SPLITS:
            missing = missing_records(self.split_path, name, split[name], known,
                                      f"store {self.store_path}")
            if missing:
                # xecg's own split file is remade by deleting it; a user's file is theirs.
                fix = ("delete the split file to make it again for this store" if self.split is None
                       else f"it was made for other data: make one for this store with `xecg "
                            f"split {self.store_path} --out FILE`, or leave out --data.split")
                raise ConfigError(f"{missing}; {fix}")
            self.indices[name] = store.indices(split[name])
        self._split_ids = {name: list(split[name]) for name in SPLITS}
        if not self._restored_stats:
            if self.normalize:
                self.mean, self.std = store.lead_stats(self.indices["train"])
            else:
                self.mean = np.zeros(NUM_LEADS, np.float32)
                self.std = np.ones(NUM_LEADS, np.float32)
        self.store = store
        self._check_split()

    def describe(self) -> dict[str, Any]:
        """The data protocol, to be reported beside every metric."""
        split = load_split(self.split_path)
        return {"store": str(self.store_path), "split": str(self.split_path),
                "split_digest": split_digest(split),
                **{k: split.get(k) for k in ("protocol", "seed", "folds", "fold", "counts")},
                "policy": self.policy, "length": None if self.policy == "bucket" else self.length,
                "normalisation": "per lead, training split" if self.normalize else "none",
                "bandpass_hz": None if self.bandpass is None else list(self.bandpass)}

    def state_dict(self) -> dict[str, Any]:
        if self.mean is None:
            return {}
        # The split's record ids travel too (tens of kB for CPSC's 6,877): a resume can tell
        # whether it still trains on the same records (`_check_split`).
        return {"mean": self.mean.tolist(), "std": self.std.tolist(),
                "split": str(self.split_path),
                **({"split_records": self._split_ids} if self._split_ids else {})}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the training statistics of a checkpoint (before or after :meth:`setup`) and
        checks its split against this one's (checkpoints since 2026-11-28 carry it)."""
        if "mean" in state_dict:
            self.mean = np.asarray(state_dict["mean"], dtype=np.float32)
            self.std = np.asarray(state_dict["std"], dtype=np.float32)
            self._restored_stats = True
        if "split_records" in state_dict:
            self._ckpt_split = {k: list(state_dict["split_records"].get(k, [])) for k in SPLITS}
            self._ckpt_split_path = state_dict.get("split", "?")
            self._check_split()

    def _check_split(self) -> None:
        """A restored checkpoint trained on other records than this split's: resuming its fit
        stops (a store prepared again from changed data remakes xecg's split, and records it
        trained on would be tested); evaluating it warns where those records are evaluated."""
        if self._ckpt_split is None or not self._split_ids:
            return
        changes = split_changes(self._ckpt_split, self._split_ids)
        if changes is None:
            return
        where = (f"the checkpoint was trained on another split than {self.split_path} holds "
                 f"now ({changes.text})")
        if self._ckpt_split_path != str(self.split_path):
            where += f"; its split file was {self._ckpt_split_path}"
        fitting = self.trainer is not None and self.trainer.state.fn == "fit"
        if fitting:
            raise ConfigError(f"{where}. Resume with the data and split it was trained on, or "
                              "start a new run (without --ckpt_path)")
        if changes.leaked:
            rank_zero_warn(f"{where}: numbers on those records are not held out")

    # -- loaders -------------------------------------------------------------------------------

    def _loader_seed(self) -> int:
        if self.seed is not None:
            return self.seed
        return int(os.environ.get("PL_GLOBAL_SEED", 0))  # set by lightning.seed_everything

    def _replica(self) -> tuple[int | None, int | None]:
        """(data-parallel processes, this one's rank): the trainer's when attached (it knows the
        data-parallel group of every strategy), else None (torch.distributed's)."""
        if self.trainer is None:
            return None, None
        kwargs = self.trainer.distributed_sampler_kwargs or {"num_replicas": 1, "rank": 0}
        return kwargs["num_replicas"], kwargs["rank"]

    def loader_settings(self) -> dict[str, Any]:
        """The loader as it runs: the values of ``num_workers``, ``pad_on_device``,
        ``half_transfer`` and ``bucket_multiple`` chosen for the machine where the config left
        them empty (README "Defaults that fit the hardware"); metrics.json keeps them under
        ``loader``."""
        return {"num_workers": self._workers(), "worker_kind": self.worker_kind,
                "pad_on_device": self._pack(),
                "half_transfer": self._x_dtype() != torch.float32,
                "bucket_multiple": self.bucket_multiple}

    @property
    def bucket_multiple(self) -> int:
        """``bucket_multiple``, or when None: :data:`GPU_BUCKET_MULTIPLE` on an accelerator,
        else :data:`BUCKET_MULTIPLE`. On a GPU every new batch shape costs a cold start
        (cuDNN's kernel choice, a compiled graph's size class): an eager bucketed Lightning
        step on an H100 took 38.7 ms with buckets of 9,720 (8 lengths over CPSC-like records)
        against 70 ms with 972 (74 lengths), so an epoch took 1.24 s against 2.24 s although it
        computes more padding. A CPU has no cold start to save and computes every padded
        sample: there the finer buckets are faster (README "Benchmarks")."""
        if self._bucket_multiple is not None:
            return self._bucket_multiple
        return GPU_BUCKET_MULTIPLE if self._on_accelerator() else BUCKET_MULTIPLE

    def _workers(self) -> int:
        """``num_workers``, or when None: 0 on a CPU (loader processes would compete with the
        training threads: README "Defaults that fit the hardware"), else up to 8 per process
        and no more than this process's share of the cores."""
        if self.num_workers is not None:
            return self.num_workers
        if not self._on_accelerator():
            return 0
        share = (os.cpu_count() or 1) // max(1, self.trainer.num_devices)
        return max(0, min(8, share - 1))

    def _pack(self) -> bool:
        """``pad_on_device``, or when None: on an accelerator. A batch padded to 72,000 samples is
        mostly zeros; building, copying and moving them made the loader the bottleneck of a
        padded epoch on an H100 (README "Benchmarks"); on a CPU there is no copy to save."""
        if self.pad_on_device is not None:
            return self.pad_on_device
        return self._on_accelerator()

    def _x_dtype(self) -> torch.dtype:
        """``x``'s type in transit: with ``half_transfer`` (when None: under a 16-bit mixed or
        true precision on an accelerator) the 16-bit type of the trainer's precision, which
        autocast rounds the first convolution's input to anyway (tests/test_models.py: outputs
        and gradients are the same); else float32. On the H100 of README "Benchmarks" the main
        process's copy of each batch into pinned memory was the likely bound of a padded
        epoch."""
        trainer = self.trainer
        precision = str(trainer.precision) if trainer is not None else "32-true"
        kind = precision.split("-")[0]
        half = self.half_transfer
        if half is None:
            half = kind in _TRANSFER_DTYPES and self._on_accelerator()
        if half and kind not in _TRANSFER_DTYPES:
            raise ConfigError(f"data.half_transfer needs a 16-bit precision (bf16-mixed, "
                              f"16-mixed, ...); trainer.precision is {precision!r}")
        return _TRANSFER_DTYPES[kind] if half else torch.float32

    def _on_accelerator(self) -> bool:
        """Whether an attached trainer runs on an accelerator (GPU, MPS, ...), not the CPU."""
        trainer = self.trainer
        return trainer is not None and trainer.accelerator.__class__.__name__ != "CPUAccelerator"

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Lightning calls this with each batch on the device: a packed batch's windows are
        rebuilt there (:func:`~xecg.data.dataset.restore_batch`)."""
        return restore_batch(batch)

    def _loader(self, split: str, train: bool) -> DataLoader | ThreadLoader:
        if self.store is None:
            self.setup()
        num_replicas, rank = self._replica()
        if (num_replicas or 1) > 1 and self.trainer._accelerator_connector.use_distributed_sampler:
            raise ConfigError("CPSCDataModule shards its own batches across processes: create the "
                              "Trainer with use_distributed_sampler=False (xecg's CLI does)")
        planner = BatchPlanner(self.indices[split], self.store.lengths, self.policy, self.length,
                               self.batch_size if train else self.eval_batch_size, train=train,
                               seed=self._loader_seed(), bucket_multiple=self.bucket_multiple,
                               num_replicas=num_replicas, rank=rank)
        workers = self._workers()
        threads = self.worker_kind == "thread" and workers > 0
        # Threads build each batch where it is consumed: in pinned memory for a GPU, so there is
        # nothing to receive or copy again (xecg/data/loader.py).
        dataset = WindowDataset(self.store, self.mean, self.std, pack=self._pack(),
                                x_dtype=self._x_dtype(), pin=threads and self.pin_memory)
        if threads:
            device = self.trainer.strategy.root_device if self.trainer is not None else None
            cuda = device is not None and device.type == "cuda" and self.pin_memory
            return ThreadLoader(dataset, planner, threads=workers,
                                cuda_device=device.index if cuda else None)
        # batch_size=None: the planner yields whole batches and each worker builds one at a time.
        return DataLoader(dataset, batch_size=None, sampler=planner, num_workers=workers,
                          pin_memory=self.pin_memory, persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader | ThreadLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | ThreadLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader | ThreadLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader | ThreadLoader:
        return self._loader("test", train=False)
