"""The training commands (``xecg train|fit|validate|test``) on Lightning's ``LightningCLI``.

Everything a run needs is a Lightning argument that a YAML or the command line can set:

- ``trainer.*``: Lightning's Trainer; ``trainer.default_root_dir`` is the run folder (default
  ``experiment.runs_dir/experiment.name``), ``trainer.precision`` is chosen for the hardware
  when left empty (:func:`default_precision`), ``trainer.logger`` replaces the default logger.
- ``checkpoint.*`` (the best checkpoint by validation micro-F1), ``early_stopping.*``,
  ``attention.*`` (attention figures), ``explanations.*`` (map scores against synthetic
  evidence), ``report.*`` (metrics.json) and ``ema.*`` (an average of the weights, off by
  default: :mod:`xecg.averaging`): callbacks added with
  ``add_lightning_class_args``, so their options show in ``--help`` and in the saved config.
- ``experiment.*``: the run's name and its W&B project, group and tags.

Experiment YAMLs are small deltas: each starts with ``extends: base.yaml`` (a path relative to
the file), and :func:`expand_configs` turns ``--config FILE`` into the chain of files it extends,
base first, each merged over the one before (see ``experiments/base.yaml``). jsonargparse's own
nested ``config:`` key is not used: it replaces whole top-level sections instead of merging.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    ProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from xecg.averaging import WeightEMA
from xecg.callbacks import AttentionImages, MetricsReport, SteadyProgressBar
from xecg.data.datamodule import CPSCDataModule
from xecg.errors import ConfigError, NotFoundError, WriteError
from xecg.explain.callback import ExplanationScores
from xecg.guards import (
    NonFiniteLossGuard,
    checkpoint_failure,
    distributed_error,
    read_checkpoint,
    use_atomic_checkpoints,
    weights_only_kwargs,
)
from xecg.module import XECGModule
from xecg.redact import redact, redact_namespace


class _NoCloudLoggerTip(logging.Filter):
    """Drops the line Lightning prints at every Trainer's start to suggest installing its cloud
    logger (``litlogger``): xecg logs to W&B or CSV, and a first ``make train`` should show
    what the run does, not an advert. Lightning's other messages pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoCloudLoggerTip())


def expand_configs(args: list[str]) -> list[str]:
    """``args`` with every ``--config FILE`` replaced by the files it ``extends`` (recursively,
    base first) and the file itself without its ``extends`` key (as inline JSON, which
    LightningCLI's ``--config`` accepts like a file)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config", "-c") and i + 1 < len(args):
            out += _config_chain(Path(args[i + 1]), ())
            i += 2
        elif arg.startswith("--config="):
            out += _config_chain(Path(arg.split("=", 1)[1]), ())
            i += 1
        else:
            out.append(arg)
            i += 1
    return out


def _config_chain(path: Path, seen: tuple[Path, ...]) -> list[str]:
    if not path.is_file():
        return ["--config", str(path)]  # inline JSON/YAML, or a missing file jsonargparse names
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        # One line: YAML errors span several (the problem, then where it is).
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict) or "extends" not in data:
        return ["--config", str(path)]
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' loops back to a file that extends it")
    parents = data.pop("extends")
    chain: list[str] = []
    for parent in [parents] if isinstance(parents, str) else list(parents or []):
        chain += _config_chain(path.parent / parent, (*seen, path.resolve()))
    return [*chain, "--config", json.dumps(data)] if data else chain


@dataclass
class Experiment:
    """Who a run is (the ``experiment:`` block): its name, run folder and W&B grouping.

    The run folder is ``trainer.default_root_dir``, by default ``runs_dir/name``: checkpoints,
    config.yaml, metrics.json, attention images and the W&B run. Re-running with
    ``--ckpt_path last`` resumes from it; a fresh run moves an earlier one aside.
    """

    name: str = "xecg"
    project: str = "xecg"
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    runs_dir: str = "runs"
    wandb: bool = True
    job_type: str | None = None


def wandb_mode() -> str:
    """``offline`` unless the user asked for online (``WANDB_MODE``) or has logged in."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


def default_precision(accelerator: str | None) -> str:
    """bf16 autocast where the accelerator computes bf16 natively (CUDA GPUs that support it),
    32-bit elsewhere: on a CPU without bf16 units autocast made an epoch about 10x slower
    (README "Defaults that fit the hardware")."""
    gpu = str(accelerator or "auto") in ("auto", "gpu", "cuda")
    if gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


class OneLineErrorParser(LightningArgumentParser):
    """LightningCLI's parser with one-line errors, as every xecg command has: ``xecg: error:
    unrecognized arguments: --trainer.max_epocs 1 (options: xecg fit --help)``. jsonargparse
    printed the whole usage first (about 110 lines) and, for a nested value, its report of
    every alternative of a Union. Where it raises instead of exiting (``exit_on_error`` off, a
    parse inside LightningCLI), it still does."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"xecg: error: {parse_error_line(message)} (options: {prog} --help)\n")
        self.exit(2)


def parse_error_line(message: str) -> str:
    """jsonargparse's error as one line: ``KEY: REASON (given: VALUE)`` out of its ``Parser
    key "KEY":`` report, keeping the reasons of the alternatives other than ``None``."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    head = re.match(r'Parser key "([^"]+)":\s*(.*)', lines[0]) if lines else None
    if head is None:
        return " ".join(lines)
    key, rest = head.groups()
    given = next((line.split(":", 1)[1].strip() for line in lines
                  if line.startswith("Given value:")), "")
    if "Errors:" in lines:
        start = lines.index("Errors:") + 1
        reasons = [line.removeprefix("- ") for line in lines[start:]
                   if not line.startswith(("Given value", "Subtypes"))
                   and "NoneType" not in line]
        # "Problem with given class_path 'X':" heads the reason it nests: keep the reason.
        reasons = [r for r in reasons if not r.startswith("Problem with given class_path")] or \
            reasons
        inner = re.fullmatch(r'Parser key "([^"]+)":', reasons[0]) if reasons else None
        if inner and len(reasons) > 1:  # a value inside a class: model.loss + gamma
            key, reasons = f"{key}.{inner.group(1)}", reasons[1:]
        rest = "; ".join(reasons)
    rest = rest or " ".join(lines[1:])
    shown = f" (given: {given})" if given and not given.startswith("NestedArg(") else ""
    return f"{key}: {rest}{shown}"


class Trainer(L.Trainer):
    """Lightning's Trainer with its ``limit_*_batches`` typed ``int | float``, int first.
    Lightning types them ``float | int``, and jsonargparse takes the first type that parses, so
    ``--trainer.limit_val_batches 1`` (or ``1`` in a YAML) became 1.0: every batch instead of
    one (larger whole numbers Lightning turns back into counts). An int is a number of batches,
    a float a fraction, as Lightning documents them."""

    def __init__(self, *args, limit_train_batches: int | float | None = None,
                 limit_val_batches: int | float | None = None,
                 limit_test_batches: int | float | None = None,
                 limit_predict_batches: int | float | None = None, **kwargs) -> None:
        super().__init__(*args, limit_train_batches=limit_train_batches,
                         limit_val_batches=limit_val_batches,
                         limit_test_batches=limit_test_batches,
                         limit_predict_batches=limit_predict_batches, **kwargs)


class XECGCLI(LightningCLI):
    """LightningCLI for :class:`XECGModule` and :class:`CPSCDataModule` with xecg's run folder,
    callbacks and logger as configurable defaults (nothing the user sets is overwritten)."""

    #: True when resuming (``--ckpt_path``): keep the run folder and continue its W&B run.
    resume: bool = False
    #: ``xecg train``'s ``--ckpt_path`` (it reaches ``trainer.fit``, not the parser).
    ckpt_path: str | None = None

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        # config.yaml without passwords and tokens (xecg.redact).
        kwargs.setdefault("save_config_callback", RedactedConfigSave)
        # The DataModule's batch planner shards batches across processes itself; the learning
        # rate is logged, and a non-finite loss stops the run (xecg.guards), beside whatever
        # callbacks the experiment names.
        kwargs.setdefault("trainer_defaults", {"use_distributed_sampler": False,
                                               "callbacks": [LearningRateMonitor(),
                                                             NonFiniteLossGuard()]})
        kwargs.setdefault("parser_class", OneLineErrorParser)
        kwargs.setdefault("trainer_class", Trainer)  # limit_*_batches parsed as Lightning means
        super().__init__(XECGModule, CPSCDataModule, *args, **kwargs)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        # No abbreviations: argparse took `--trainer.max_epoch 5` for max_epochs, and a sweep's
        # or ablation's misspelt key with it, where a misspelt key must stop the run.
        kwargs.setdefault("allow_abbrev", False)
        return super().init_parser(**kwargs)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the hyperparameters of --ckpt_path (weights_only=True) first.
        try:
            super()._parse_ckpt_path()
        except Exception as err:
            _reraise_checkpoint_error(self.config[self.config.subcommand].get("ckpt_path"), err)
            raise
        sub = self.config.get("subcommand")
        if sub:
            self._take_the_checkpoint_seed(self.config[sub], self.config[sub].get("ckpt_path"))
        else:  # xecg train: the path goes to trainer.fit, not through the parser
            self._take_the_checkpoint_seed(self.config, self.ckpt_path)

    def _take_the_checkpoint_seed(self, cfg, ckpt: str | None) -> None:
        """Before anything is made: a ``--ckpt_path`` file that does not exist is one line (it
        was a traceback after the data were prepared), and a resume seeds as the checkpoint's
        run did (``--ckpt_path last`` after ``--seed_everything 1`` used to seed 0 and record
        the run as seed 0)."""
        if not ckpt or ckpt in ("best", "hpc", "registry") or str(ckpt).startswith("registry:"):
            return  # Lightning's own names (a file best-epoch003.ckpt is a path)
        if "://" in str(ckpt):
            return  # a remote checkpoint (s3://, gs://): Lightning opens it through fsspec
        if ckpt == "last":  # Lightning finds it in the run's checkpoint folder; so do we
            path = _checkpoint_dir(cfg) / "last.ckpt"
            if not path.is_file():
                return  # Lightning warns and starts afresh: a requeued job may always pass it
        else:
            path = Path(ckpt)
            if not path.is_file():
                raise NotFoundError(f"--ckpt_path {ckpt}: no such checkpoint file")
        seed, said = _checkpoint_seed(path), cfg.get("seed_everything")
        # `is False`, not `in (..., False)`: 0 == False, and seed 0 is a seed.
        if seed is not None and said is not False and said != seed:
            if rank_zero_only.rank == 0:  # every DDP rank parses the command line
                print(f"--ckpt_path {ckpt}: seed_everything {seed}, as when it was trained "
                      f"(the command said {said})")
            cfg["seed_everything"] = seed

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except Exception as err:
            # the file Lightning resolved (`last` names the run's last.ckpt), else as given
            ckpt = getattr(self.trainer, "ckpt_path", None) or self.config[subcommand].get(
                "ckpt_path")
            _reraise_checkpoint_error(ckpt, err)
            if isinstance(err, OSError):
                _reraise_write_error(err, self.trainer.default_root_dir)
            raise

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(Experiment, "experiment")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/micro_f1", "checkpoint.mode": "max",
            "checkpoint.filename": "best-epoch{epoch:03d}",
            "checkpoint.auto_insert_metric_name": False,
        })
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        # Patience 0 disables it (no experiment wants to stop after one flat epoch).
        parser.set_defaults({"early_stopping.monitor": "val/micro_f1",
                             "early_stopping.mode": "max", "early_stopping.patience": 0})
        parser.add_lightning_class_args(AttentionImages, "attention")
        # Explanation scores against the evidence of synthetic stores (no-op on real data),
        # written into metrics.json's "val" section.
        parser.add_lightning_class_args(ExplanationScores, "explanations")
        parser.add_lightning_class_args(MetricsReport, "report")
        # An average of the weights validated, checkpointed and tested (ema.decay; off: null).
        # Added after the explanation scores, which run on the average before it is swapped out.
        parser.add_lightning_class_args(WeightEMA, "ema")

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        # sys.argv is left whole on purpose: Lightning's DDP launcher starts the other ranks by
        # running sys.argv again, so each rank gets the user's exact command line.
        self.config = parser.parse_args(expand_configs(sys.argv[1:] if args is None else args))

    def instantiate_classes(self) -> None:
        # A value the parser accepted but a constructor refused (a gamma of -1, an unknown
        # choice) is a configuration error: one line naming it, not a traceback.
        try:
            super().instantiate_classes()
        except ValueError as err:
            raise ConfigError(f"invalid configuration: {_reason(err)}") from err

    def before_instantiate_classes(self) -> None:
        cfg = self.config.get(str(self.subcommand)) if self.subcommand else self.config
        exp = cfg.experiment
        trainer = cfg.trainer
        if not trainer.default_root_dir:
            trainer.default_root_dir = str(_run_dir(cfg))
        if not trainer.precision:
            trainer.precision = default_precision(trainer.accelerator)
        if not cfg.checkpoint.dirpath:
            cfg.checkpoint.dirpath = str(_checkpoint_dir(cfg))
        if not cfg.early_stopping.patience:
            # EarlyStopping is a required callback here; patience 0 means "never stop early",
            # and then a run without validation must not fail for want of its metric.
            cfg.early_stopping.patience = 10**9
            cfg.early_stopping.strict = False
        if not cfg.report.protocol:
            cfg.report.protocol = {"experiment": exp.name}
        if "weights_only" in cfg and cfg.weights_only is None:
            # Resuming or testing a checkpoint loads tensors and plain data only (xecg.guards).
            cfg.weights_only = True

    def instantiate_trainer(self, **kwargs):
        cfg = self.config.get(str(self.subcommand)) if self.subcommand else self.config
        exp: Experiment = self._get(self.config_init, "experiment")
        run_dir = Path(cfg.trainer.default_root_dir)
        resume = self.resume or bool(cfg.get("ckpt_path"))
        # Under DDP's subprocess launcher every rank runs this; only rank 0 owns the folder.
        try:
            if self.subcommand in (None, "fit") and not resume and rank_zero_only.rank == 0:
                _archive_previous_run(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WriteError.of(run_dir, err, "the run folder cannot be made") from err
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        if trainer_cfg.get("logger") in (None, True):  # the user named no logger: xecg's default
            kwargs["logger"] = _default_logger(exp, run_dir, resume, cfg)
        trainer = super().instantiate_trainer(**kwargs)
        if not any(isinstance(c, ProgressBar) for c in trainer_cfg.get("callbacks") or []):
            use_steady_progress_bar(trainer)  # the config names no bar of its own
        use_atomic_checkpoints(trainer)  # last.ckpt is whole whenever the process dies
        # last.ckpt after every epoch, for resuming. A second callback because with a monitor,
        # `save_last=True` writes last.ckpt only when a new best was saved
        # (ModelCheckpoint.on_validation_end: `_last_global_step_saved == trainer.global_step`).
        # Appended after the best one, which stays `trainer.checkpoint_callback`.
        trainer.callbacks.append(ModelCheckpoint(
            dirpath=self._get(self.config_init, "checkpoint").dirpath, filename="last",
            enable_version_counter=False))
        return trainer


def use_steady_progress_bar(trainer) -> None:
    """Where the Trainer made Lightning's default tqdm bar (the progress bar on and no bar in
    the config), put :class:`~xecg.callbacks.SteadyProgressBar` in its place. Rich's bar (which
    Lightning chooses where ``rich`` is installed, and which redraws on its own clock) and no
    bar are left as they are."""
    bar = trainer.progress_bar_callback
    if type(bar) is TQDMProgressBar:
        trainer.callbacks[trainer.callbacks.index(bar)] = SteadyProgressBar()


def _reason(err: Exception) -> str:
    """The constructor's own message out of jsonargparse's report of a failed Union (``- ...``
    lines, without the ``NoneType`` alternative), else the message on one line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reasons = [line[2:] for line in lines if line.startswith("- ") and "NoneType" not in line]
    return reasons[0] if reasons else " ".join(lines)


def _default_logger(exp: Experiment, run_dir: Path, resume: bool, cfg):
    if not exp.wandb:
        return CSVLogger(str(run_dir), name="", version="")
    logger = WandbLogger(save_dir=str(run_dir), project=exp.project, name=exp.name,
                         group=exp.group, tags=list(exp.tags), job_type=exp.job_type,
                         id=_wandb_id(run_dir, resume),
                         resume="allow", mode=wandb_mode(), config=redact(_plain(cfg)))
    # Lightning passes wandb.init `anonymous=None`, which wandb 0.31 answers on every run with
    # "WARNING The anonymous setting has no effect": the key is left out instead.
    getattr(logger, "_wandb_init", {}).pop("anonymous", None)
    return logger


def _plain(cfg) -> dict:
    try:
        return cfg.as_dict()
    except AttributeError:
        return dict(cfg)


class RedactedConfigSave(SaveConfigCallback):
    """Lightning's config.yaml writer, given the config with passwords in URLs and the values of
    secret-looking keys masked (:func:`xecg.redact.redact`)."""

    def __init__(self, parser, config, *args, **kwargs):
        super().__init__(parser, redact_namespace(config), *args, **kwargs)


def _reraise_write_error(err: OSError, run_dir) -> None:
    """Raise a failed write during a run (a full disk when saving a checkpoint, a read-only run
    folder) as a one-line :class:`WriteError`; other OSErrors stay as they are."""
    import errno

    if isinstance(err, WriteError) or err.errno not in (
            errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
            errno.ENOTDIR, errno.EEXIST):
        raise err
    raise WriteError.of(err.filename or f"a file in {run_dir}", err,
                        "the run stopped; the files written before are complete") from err


def _run_dir(cfg) -> Path:
    """The run folder: ``trainer.default_root_dir``, else ``experiment.runs_dir/name``."""
    return Path(cfg.trainer.default_root_dir or Path(cfg.experiment.runs_dir) / cfg.experiment.name)


def _checkpoint_dir(cfg) -> Path:
    """The checkpoint folder: ``checkpoint.dirpath``, else ``RUN/checkpoints``."""
    return Path(cfg.checkpoint.dirpath or _run_dir(cfg) / "checkpoints")


def _checkpoint_seed(path: Path) -> int | None:
    """The seed of the run that wrote checkpoint ``path`` (None for one written before
    2026-11-27 or without seed_everything); memory-mapped, the weights are not read."""
    return read_checkpoint(path).get("xecg_seed")


def _reraise_checkpoint_error(ckpt_path, err: Exception) -> None:
    """Raise an unsafe, incomplete or damaged ``--ckpt_path`` as a one-line CheckpointError, and a
    collective that failed because another DDP process died as a DistributedError."""
    known = checkpoint_failure(ckpt_path, err) if ckpt_path else None
    known = known or distributed_error(err)
    if known is not None:
        raise known from err


def _archive_previous_run(run_dir: Path) -> None:
    """A fresh run must not mix its checkpoints with an earlier run's, nor delete them: the
    earlier run folder is renamed ``NAME.YYYYmmdd-HHMMSS`` (its last-modified time)."""
    if not (run_dir / "checkpoints").is_dir():
        return
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(run_dir.stat().st_mtime))
    target = run_dir.with_name(f"{run_dir.name}.{stamp}")
    n = 1
    while target.exists():
        target, n = run_dir.with_name(f"{run_dir.name}.{stamp}-{n}"), n + 1
    os.replace(run_dir, target)
    print(f"previous run in {run_dir} kept as {target}")


def _wandb_id(run_dir: Path, resume: bool) -> str:
    """The W&B run id kept in the run folder, so a resumed training continues the same W&B run."""
    path = run_dir / "wandb_id"
    if resume and path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:8]
    if rank_zero_only.rank == 0:  # other DDP ranks log nothing to W&B
        path.write_text(run_id + "\n")
    return run_id


def finish_wandb(trainer) -> None:
    """Close the run's W&B run: this writes its summary, and a later run in the same process
    (a sweep, a test) would otherwise log into it, since WandbLogger attaches to an active run."""
    for logger in trainer.loggers:
        # Only a run that started: `logger.experiment` would start one (in the run folder) for
        # a command that failed before it logged anything, a missing dataset, say.
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger._experiment.finish()


def fit_and_test(args: list[str], callbacks: list | None = None,
                 ckpt_path: str | None = None, prog: str | None = None) -> Path:
    """``xecg train``: fit, then validate and test the best checkpoint (by validation
    micro-F1, whose thresholds were tuned on validation when it was saved).

    ``args``: LightningCLI arguments (``--config FILE``, ``--model.loss.gamma 0.1``, ...);
    ``callbacks``: extra callback objects (a sweep's pruning callback); ``ckpt_path``: resume
    from ``last`` or a checkpoint; ``prog``: the command its ``--help`` names. Returns the run
    folder, which holds ``metrics.json``.
    """
    cli_class = type("XECGCLIRun", (XECGCLI,), {"resume": ckpt_path is not None,
                                                 "ckpt_path": ckpt_path})
    cli = cli_class(args=args, run=False, parser_kwargs={"prog": prog} if prog else None)
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    trainer.callbacks.extend(callbacks or [])
    for callback in trainer.callbacks:
        if isinstance(callback, ExplanationScores):
            callback.score_at_fit_end = False  # the validation below scores the best model
    safe = weights_only_kwargs(trainer.fit)  # checkpoints: tensors and plain data only
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, **safe)
        best = trainer.checkpoint_callback.best_model_path or None
        trainer.validate(model, datamodule=dm, ckpt_path=best, **safe)
        trainer.test(model, datamodule=dm, ckpt_path=best, **safe)
    except Exception as err:
        _reraise_checkpoint_error(ckpt_path, err)
        if isinstance(err, OSError):
            _reraise_write_error(err, trainer.default_root_dir)
        raise
    finally:
        finish_wandb(trainer)
    return Path(trainer.default_root_dir)
