"""Guards of a training run and of checkpoint saving and loading.

- :class:`AtomicCheckpointIO` (set on every ``xecg train|fit`` trainer) writes each checkpoint
  to a temporary file in its own folder, flushes it to disk and renames it over the old one, so
  ``last.ckpt`` is whole whenever the process dies, and a full disk leaves the previous one.
- :class:`NonFiniteLossGuard` (a default callback of every ``xecg train|fit`` run) stops training
  at the first batch whose loss is NaN or infinite, with no step taken from it, with
  :class:`NonFiniteLossError`: one line naming the epoch, the step and the batch's record ids.
  Nothing is checkpointed after it, so ``last.ckpt`` stays the last good state.
- :func:`load_module` loads a checkpoint for inference with ``torch.load(weights_only=True)``:
  tensors and plain data only, so a checkpoint cannot run code when it is opened. xecg's own
  checkpoints hold nothing else (the network and loss are saved as ``class_path`` and
  arguments); :data:`SAFE_GLOBALS` lists the few other types a hand-made run may put in its
  hyperparameters (numpy scalars, paths, :class:`SyntheticOptions`), allowed for every
  ``weights_only`` load in this process, Lightning's resume included.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import io
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from xecg.errors import WriteError, XECGError

#: Record ids named in a message, at most.
MAX_IDS = 32


class NonFiniteLossError(XECGError):
    """Training produced a NaN or infinite loss; the message names where and which records."""


class DistributedError(XECGError):
    """Another process of a distributed (DDP) run stopped, so this one cannot go on."""


#: What torch.distributed says when the other end of a collective has gone.
_PEER_GONE = re.compile(r"Connection (reset|closed) by peer|Broken pipe|NCCL communicator was "
                        r"aborted|ProcessGroup\w* .*(timed out|Timeout)", re.IGNORECASE)


def distributed_error(err: BaseException) -> DistributedError | None:
    """A one-line :class:`DistributedError` for a collective that failed because another DDP
    process died, or None for other errors."""
    dist_error = getattr(getattr(torch, "distributed", None), "DistError", ())
    if not isinstance(err, RuntimeError):
        return None
    first = (str(err).strip().splitlines() or [""])[0]
    if not (isinstance(err, dist_error) or _PEER_GONE.search(first)):
        return None
    detail = re.sub(r"^\[[^\]]*\]\s*", "", first)[:200]  # no source location
    return DistributedError(
        f"another process of this distributed run stopped ({detail}); every process stopped "
        "with it: last.ckpt holds the last complete epoch, and the same command with "
        "--ckpt_path last resumes the run")


class CheckpointError(XECGError):
    """A checkpoint that cannot or must not be loaded (missing, incomplete, unsafe, foreign)."""


class NonFiniteLossGuard(L.Callback):
    """Stops training at the first non-finite loss, with no step taken from it.

    Raises :class:`NonFiniteLossError` naming the epoch, the global step (optimiser steps done
    before this batch), the batch within the epoch and the record ids of the batch (its
    ``index`` entries are store positions; the DataModule's store names them). Under DDP every
    process learns of a non-finite loss on any of them and all stop together.

    With a fused optimiser (``XECGModule``'s Adam) nothing waits for the device at each step:
    the batch's verdict goes to the optimiser as ``found_inf``, so a non-finite step changes no
    weight and no optimiser state, decided on the device (as torch's GradScaler skips a step),
    and the verdicts are read back every ``every`` backwards, before validation, before any
    checkpoint is written and at the end of training. The run then stops at the first bad step
    of those; the finite steps after it have trained on, and nothing was saved in between. Any
    other optimiser: the loss is read before each backward (a host-device sync per step).
    Lightning writes no checkpoint when a fit stops with an exception, so ``last.ckpt`` keeps
    the last good state.
    """

    def __init__(self, every: int = 50):
        self.every = every
        self._batch = None
        self._batch_idx = -1
        # Not yet read back: each backward's (loss, own verdict, epoch, global step, batch of
        # the epoch, the batch's index), and each optimiser step's (any process's verdict, the
        # step's last backward); verdicts are 0/1 float tensors on the device.
        self._backwards: list[tuple] = []
        self._steps: list[tuple] = []
        self._window: torch.Tensor | None = None  # the verdict of the backwards since the last step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch, self._batch_idx = batch, batch_idx

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        loss = loss.detach()
        own = (~torch.isfinite(loss).all()).float()
        index = self._batch.get("index") if isinstance(self._batch, dict) else None
        entry = (loss, own, trainer.current_epoch, trainer.global_step, self._batch_idx, index)
        if trainer.optimizers and all(_fused(o) for o in trainer.optimizers):
            self._window = own if self._window is None else torch.maximum(self._window, own)
            self._backwards.append(entry)
        elif not trainer.strategy.reduce_boolean_decision(not bool(own), all=True):
            self._stop(trainer, entry, deferred=False)  # read now: a sync per step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._window is None:
            return
        anywhere, self._window = self._window.clone(), None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # queued on the device like the gradients' all-reduce: every process skips the step
            # or none does, so the replicas stay equal
            torch.distributed.all_reduce(anywhere, op=torch.distributed.ReduceOp.MAX)
        optimizer.found_inf = anywhere  # fused Adam makes no update where it is 1
        self._steps.append((anywhere, self._backwards[-1]))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if len(self._backwards) >= self.every:
            self.check(trainer)

    def on_validation_start(self, trainer, pl_module) -> None:
        self.check(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.check(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.check(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.check(trainer)  # raising here writes nothing

    def check(self, trainer) -> None:
        """Read the verdicts not yet read back (one wait for the device) and raise at the first
        non-finite loss, this process's or, failing that, another's."""
        # this process's verdict of each backward, then every process's of each step
        entries = self._backwards + [e for _, e in self._steps]
        verdicts = [e[1] for e in self._backwards] + [a for a, _ in self._steps]
        self._backwards, self._steps = [], []
        if verdicts:
            flags = torch.stack(verdicts).cpu()
            if flags.any():
                self._stop(trainer, entries[int(flags.argmax())], deferred=True)

    def _stop(self, trainer, entry: tuple, deferred: bool) -> None:
        loss, own, epoch, step, batch_idx, index = entry
        where = f"epoch {epoch}, step {step} (batch {batch_idx} of the epoch)"
        if not bool(own):
            what = f"another process's training loss was not finite at {where}"
        else:
            shown = "nan" if torch.isnan(loss).any() else "inf"
            what = (f"non-finite training loss ({shown}) at {where}; records in the batch: "
                    f"{_record_ids(trainer, index)}")
        how = ("the optimiser took no step from it" if deferred else
               "training stopped before this step changed the weights")
        raise NonFiniteLossError(f"{what}; {how}; {_last_checkpoint(trainer)}")


def _fused(optimizer) -> bool:
    """Whether ``optimizer`` takes ``found_inf`` (a fused torch optimiser), so a step can be
    skipped on the device."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False)) and all(
        g.get("fused") for g in optimizer.param_groups)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, with local checkpoints written whole or not at all.

    Lightning's own writer stages a local checkpoint in the system's temporary folder and moves
    it into place: where that folder is another file system (a tmpfs ``/tmp``) the move is a
    copy that a killed process leaves half done under the final name, and a full ``/tmp`` fails
    the save although the run's disk has room. Here the checkpoint goes to a hidden temporary
    file beside its final name, is flushed to disk and renamed over the old file; a failed
    write removes the temporary file and raises :class:`xecg.errors.WriteError`, leaving the
    previous checkpoint as it was. Remote paths (``s3://...``) use Lightning's writer."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        text = str(path)
        if storage_options is not None or ("://" in text and not text.startswith("file://")):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(text.removeprefix("file://"))
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            # Serialised in memory first (as Lightning does): torch.save reports a failed write
            # to a file as a RuntimeError about zip positions, a plain write as the OSError.
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            with os.fdopen(fd, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())  # a full disk or quota can show only here
            os.chmod(tmp, 0o644)  # mkstemp makes it private
            os.replace(tmp, path)
        except BaseException as err:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if isinstance(err, OSError) and not isinstance(err, WriteError):
                raise WriteError.of(path, err, "the previous checkpoint there is unchanged") \
                    from err
            raise


def use_atomic_checkpoints(trainer) -> None:
    """Give ``trainer`` :class:`AtomicCheckpointIO` unless it was given its own CheckpointIO."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


def _record_ids(trainer, index) -> str:
    """The store ids of a batch's ``index`` (store positions), at most MAX_IDS of them."""
    if index is None:
        return "unknown (the batch has no 'index')"
    positions = [int(i) for i in torch.as_tensor(index).reshape(-1).tolist()]
    store = getattr(getattr(trainer, "datamodule", None), "store", None)
    ids = [store.ids[i] for i in positions] if store is not None else [f"#{i}" for i in positions]
    more = f", ... ({len(ids)} in all)" if len(ids) > MAX_IDS else ""
    return ", ".join(ids[:MAX_IDS]) + more


def _last_checkpoint(trainer) -> str:
    paths = []
    for cb in trainer.checkpoint_callbacks:
        for p in (getattr(cb, "last_model_path", ""), getattr(cb, "best_model_path", "")):
            if p and os.path.isfile(p):
                paths.append(p)
    if not paths:
        return "no checkpoint had been written yet"
    last = max(paths, key=os.path.getmtime)
    return f"the last good checkpoint is {last} (resume from it with a lower learning rate)"


# ---------------------------------------------------------------------------------- loading

def _safe_globals() -> list:
    """Types besides tensors and plain data that a checkpoint of an xecg run may hold."""
    import pathlib

    from xecg.data.datamodule import SyntheticOptions

    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    types = [SyntheticOptions, np.dtype, core.multiarray.scalar, pathlib.PosixPath,
             pathlib.WindowsPath, pathlib.PurePosixPath, pathlib.PureWindowsPath]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:  # the dtype classes pickled with np.dtype (numpy >= 1.25)
        types += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return types


SAFE_GLOBALS = _safe_globals()
if hasattr(torch.serialization, "add_safe_globals"):  # torch >= 2.4
    torch.serialization.add_safe_globals(SAFE_GLOBALS)


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def weights_only_kwargs(fn) -> dict:
    """``{"weights_only": True}`` if ``fn`` (a Lightning loader or Trainer method) takes it."""
    return {"weights_only": True} if _accepts(fn, "weights_only") else {}


def checkpoint_error(path: str | os.PathLike, err: BaseException) -> CheckpointError | None:
    """The one-line :class:`CheckpointError` for an error that ``torch.load`` raised on
    ``path`` (an unsafe or an incomplete file), or None for other errors."""
    if isinstance(err, pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None and not zipfile.is_zipfile(path):  # a text file, a plain pickle
            return CheckpointError(f"{path}: not a checkpoint (torch.save writes a zip "
                                   "archive; this file is not one)")
        what = f"the global {found.group(1)}" if found else "Python objects"
        return CheckpointError(
            f"{path}: refused to load: it holds {what}, not only tensors and plain data "
            "(xecg loads checkpoints with weights_only=True so that opening one cannot run "
            "code)")
    text = str(err)
    if isinstance(err, (zipfile.BadZipFile, EOFError)) or (
            isinstance(err, RuntimeError) and ("PytorchStreamReader" in text
                                               or "zip archive" in text)) or (
            # a zip directory that points before the start of a cut file: seek fails
            isinstance(err, OSError) and err.errno == errno.EINVAL):
        return CheckpointError(f"{path}: not a complete checkpoint (truncated, or not written "
                               "by torch.save)")
    if isinstance(err, RuntimeError) and text.startswith("Error(s) in loading state_dict"):
        # A resume or test whose settings build another network (a width, a model given on the
        # command line): name the first difference, in shapes a reader knows.
        details = [line.strip() for line in text.splitlines()[1:] if line.strip()]
        first = re.sub(r"torch\.Size\((\[[^\]]*\])\)", r"\1",
                       details[0] if details else "").rstrip(".")
        first = first if len(first) <= 240 else first[:237] + "..."
        more = f"; {len(details) - 1} more" if len(details) > 1 else ""
        return CheckpointError(f"{path}: its network does not fit this run's ({first}{more}): "
                               "use the settings it was trained with (its run folder's "
                               "config.yaml)")
    return None


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The contents of checkpoint ``path`` (``torch.load`` with ``weights_only=True``; tensors
    memory-mapped, so only what is used is read), or a one-line :class:`CheckpointError`:
    missing, not a checkpoint, truncated, unsafe, or damaged inside (a changed byte in its
    pickle makes torch's unpickler raise whatever it meets: UnicodeDecodeError, IndexError,
    TypeError, ...)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True,
                                mmap=zipfile.is_zipfile(path))  # mmap needs the zip format
    except Exception as err:
        known = checkpoint_error(path, err)
        if known is not None:
            raise known from None
        if isinstance(err, OSError):
            raise CheckpointError(f"{path}: cannot be read ({err.strerror or err})") from None
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path}: damaged: torch cannot read what it holds "
                              f"({type(err).__name__}: {first})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not a checkpoint: it holds a {type(checkpoint).__name__}"
                              ", where a checkpoint holds a dict")
    return checkpoint


def checkpoint_failure(path: str | os.PathLike, err: BaseException) -> CheckpointError | None:
    """The one line for ``err``, raised while loading checkpoint ``path``: a known failure of
    ``torch.load`` (:func:`checkpoint_error`), else what :func:`read_checkpoint` finds wrong
    with the file (damaged inside, not a dict), or None when the file reads: the error was not
    the file's. Only failures pay for the second read."""
    known = checkpoint_error(path, err)
    if known is not None or "://" in str(path) or not Path(path).is_file():
        return known
    try:
        read_checkpoint(path)
    except CheckpointError as problem:
        return problem
    return None


def load_module(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """:class:`xecg.module.XECGModule` from a checkpoint, loaded with ``weights_only=True``.

    Raises :class:`CheckpointError` (one line) for a missing, truncated, damaged or foreign
    checkpoint, and for one that holds Python objects beyond tensors, plain data and
    :data:`SAFE_GLOBALS` (loading such a file could run code: only a checkpoint you trust
    should be loaded another way, e.g. ``XECGModule.load_from_checkpoint(path,
    weights_only=False)``)."""
    from xecg.module import XECGModule

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    load = XECGModule.load_from_checkpoint
    try:
        return load(path, map_location=map_location, **weights_only_kwargs(load))
    except Exception as err:
        problem = checkpoint_failure(path, err)
        if problem is not None:
            raise problem from None
        if isinstance(err, KeyError):
            raise CheckpointError(f"{path}: not a checkpoint of an xecg run (no {err})") from None
        if isinstance(err, OSError):
            raise CheckpointError(f"{path}: cannot be read ({err.strerror or err})") from None
        if isinstance(err, (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError)):
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise CheckpointError(f"{path}: does not fit this xecg's model ({first})") from None
        raise
