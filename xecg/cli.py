"""The ``xecg`` command: ``prepare``, ``split`` (data layer) and the training commands.

Data commands use argparse; ``fit|validate|test|predict`` go through LightningCLI so that every
value of an experiment YAML can be overridden on the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

TRAINING_COMMANDS = ("fit", "validate", "test", "predict")


@dataclass
class Experiment:
    """Where a run lives and how it is reported (the ``experiment:`` block of an experiment YAML).

    The run folder is ``runs_dir/name``: checkpoints, config.yaml, metrics.json, attention
    images and the W&B run. Re-running with ``--ckpt_path last`` resumes from it.
    """

    name: str = "xecg"
    project: str = "xecg"
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    runs_dir: str = "runs"
    wandb: bool = True
    attention_every_n_epochs: int = 5
    attention_records: int = 4
    patience: int | None = None


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


def _make_cli_class():
    # Lightning is imported only for training commands: `xecg prepare` stays quick to start.
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.loggers import CSVLogger, WandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    from xecg.callbacks import AttentionImages, MetricsReport
    from xecg.data.datamodule import CPSCDataModule
    from xecg.module import XECGModule

    class XECGCLI(LightningCLI):
        """LightningCLI whose run folder, W&B logger and callbacks come from ``experiment``."""

        resume: bool = False

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("save_config_kwargs", {"overwrite": True})
            super().__init__(XECGModule, CPSCDataModule, *args, **kwargs)

        def add_arguments_to_parser(self, parser) -> None:
            parser.add_class_arguments(Experiment, "experiment")

        def instantiate_trainer(self, **kwargs):
            cfg = self.config.get(str(self.subcommand), self.config)
            exp: Experiment = self._get(self.config_init, "experiment")
            run_dir = Path(exp.runs_dir) / exp.name
            resume = self.resume or bool(cfg.get("ckpt_path"))
            # Under DDP's subprocess launcher every rank runs this; only rank 0 owns the folder.
            if self.subcommand in (None, "fit") and not resume and rank_zero_only.rank == 0:
                _archive_previous_run(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            callbacks = list(self._get(self.config_init, "trainer", default={}).get("callbacks")
                             or [])
            callbacks += [
                ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best-epoch{epoch:03d}",
                                monitor="val/micro_f1", mode="max",
                                auto_insert_metric_name=False),
                # last.ckpt after every epoch, for resuming: with a monitor, `save_last=True`
                # would rewrite it only when the best checkpoint changes.
                ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last",
                                enable_version_counter=False),
                LearningRateMonitor(),
                AttentionImages(exp.attention_every_n_epochs, exp.attention_records),
                MetricsReport({"experiment": exp.name}),
            ]
            if exp.patience:
                callbacks.append(EarlyStopping("val/micro_f1", mode="max", patience=exp.patience))
            if exp.wandb:
                logger = WandbLogger(
                    save_dir=str(run_dir), project=exp.project, name=exp.name, group=exp.group,
                    tags=list(exp.tags), id=_wandb_id(run_dir, resume), resume="allow",
                    mode=wandb_mode(), config=_plain(cfg))
            else:
                logger = CSVLogger(str(run_dir), name="", version="")
            return super().instantiate_trainer(default_root_dir=str(run_dir), logger=logger,
                                               callbacks=callbacks, **kwargs)

    return XECGCLI


def _plain(cfg) -> dict:
    try:
        return cfg.as_dict()
    except AttributeError:
        return dict(cfg)


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
    from lightning.pytorch.utilities import rank_zero_only

    path = run_dir / "wandb_id"
    if resume and path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:8]
    if rank_zero_only.rank == 0:  # other DDP ranks log nothing to W&B
        path.write_text(run_id + "\n")
    return run_id


def _train(argv: list[str]) -> int:
    """fit, then validate and test the best checkpoint: what `make train` runs."""
    pre = argparse.ArgumentParser(prog="xecg train", description=_train.__doc__)
    pre.add_argument("--config", action="append", default=[],
                     help="experiment YAML (default experiments/smoke.yaml)")
    pre.add_argument("--data", default=None,
                     help="dataset root in any supported layout (default: synthetic data)")
    pre.add_argument("--ckpt_path", default=None, help="resume: 'last' or a checkpoint path")
    known, rest = pre.parse_known_args(argv)
    args = []
    for cfg in known.config or ["experiments/smoke.yaml"]:
        args += ["--config", cfg]
    if known.data:
        root = Path(known.data).resolve()
        args += ["--data.source", str(root), "--data.store", f"data/stores/{root.name}",
                 "--data.protocol", "paper"]
    args += rest
    cli_class = _make_cli_class()
    cli_class.resume = known.ckpt_path is not None
    cli = cli_class(args=args, run=False)
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    trainer.fit(model, datamodule=dm, ckpt_path=known.ckpt_path)
    best = trainer.checkpoint_callback.best_model_path or None
    # The best checkpoint (by validation micro-F1) is what gets validated and tested; its
    # thresholds were tuned on validation when it was saved.
    trainer.validate(model, datamodule=dm, ckpt_path=best)
    trainer.test(model, datamodule=dm, ckpt_path=best)
    _finish_wandb(trainer)
    print(f"run folder: {trainer.default_root_dir}")
    return 0


def _finish_wandb(trainer) -> None:
    """Close the run's W&B run: this writes its summary, and a later run in the same process
    (a sweep, a test) would otherwise log into it, since WandbLogger attaches to an active run."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


def _prepare(args: argparse.Namespace) -> int:
    if args.source == "synthetic":
        from xecg.data.synthetic import make_synthetic_store

        make_synthetic_store(args.out, n=args.n, seed=args.seed, fs=args.fs or 500.0)
        return 0
    from xecg.data.prepare import prepare_dataset

    return prepare_dataset(args.source, args.out, fs=args.fs, strict=args.strict,
                           reference=args.reference, workers=args.workers, force=args.force)


def _split(args: argparse.Namespace) -> int:
    from xecg.data.splits import make_split, save_split

    split = make_split(args.source, protocol=args.protocol, seed=args.seed, folds=args.folds,
                       fold=args.fold)
    save_split(split, args.out)
    counts = ", ".join(f"{k} {len(split[k]):,}" for k in ("train", "val", "test"))
    print(f"{args.protocol} split of {args.source}: {counts} -> {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xecg", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("train", help="fit, validate and test the best checkpoint (`make train`); "
                   "see `xecg train --help`", add_help=False)
    for name in TRAINING_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} --config experiments/NAME.yaml",
                       add_help=False)

    pp = sub.add_parser("prepare", help="read a dataset (or make synthetic data) into a store")
    pp.add_argument("source", help="dataset root (any supported layout), or 'synthetic'")
    pp.add_argument("--out", required=True, type=Path, help="store folder to write")
    pp.add_argument("--fs", type=float, default=None, help="resample to this rate (Hz)")
    pp.add_argument("--strict", action="store_true", help="stop at the first bad record")
    pp.add_argument("--reference", type=Path, default=None,
                    help="REFERENCE.csv (default: found under SOURCE)")
    pp.add_argument("--workers", type=int, default=None,
                    help="reader processes (default: CPUs - 1)")
    pp.add_argument("--force", action="store_true", help="rewrite even if the store is current")
    pp.add_argument("--n", type=int, default=2000, help="synthetic: number of records")
    pp.add_argument("--seed", type=int, default=0, help="synthetic: generator seed")
    pp.set_defaults(func=_prepare)

    ps = sub.add_parser("split", help="write train/val/test record ids to a JSON file")
    ps.add_argument("source", help="a store folder or a REFERENCE.csv")
    ps.add_argument("--protocol", choices=("paper", "kfold"), default="paper")
    ps.add_argument("--folds", type=int, default=10)
    ps.add_argument("--fold", type=int, default=0)
    ps.add_argument("--seed", type=int, default=None,
                    help="default: 1004 for paper (the authors'), 0 for kfold")
    ps.add_argument("--out", required=True, type=Path)
    ps.set_defaults(func=_split)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # LightningCLI reads sys.argv when given no args and warns when given both: give it args only.
    sys.argv = sys.argv[:1]
    if argv and argv[0] == "train":
        return _train(argv[1:])
    if argv and argv[0] == "predict" and "--config" not in argv and "-c" not in argv:
        from xecg.predict import main as predict_main

        return predict_main(argv[1:])
    if argv and argv[0] in TRAINING_COMMANDS:
        _finish_wandb(_make_cli_class()(args=argv).trainer)
        return 0
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
