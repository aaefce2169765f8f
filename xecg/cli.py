"""The ``xecg`` command: ``prepare`` and ``split`` (data layer), ``train`` and Lightning's
``fit|validate|test`` (:mod:`xecg.lightning_cli`), ``predict``, ``sweep``, ``ablate`` and
``compare``.

Library code raises :class:`xecg.errors.XECGError` (and the data layer's record and dataset
errors) with a message that names the file or setting; here they become one line on stderr and
exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TRAINING_COMMANDS = ("fit", "validate", "test")
#: Commands with their own parser in their own module: name -> (module, help).
TOOL_COMMANDS = {
    "ablate": ("xecg.ablate", "train a grid of variants x seeds, each in its own run folder"),
    "predict": ("xecg.predict", "label records with a checkpoint and draw their attention"),
    "compare": ("xecg.compare", "compare runs' metrics over seeds, with intervals and tests"),
    "explain": ("xecg.explain", "draw and score explanation maps (attention, R, Grad-CAM, IG)"),
    "sweep": ("xecg.sweep", "run or continue an Optuna study of an experiment (`make sweep`)"),
    "evaluate": ("xecg.evaluate", "the test stage's metrics of a checkpoint on labelled data"),
}


def cli_value(value: Any) -> str:
    """A YAML value as LightningCLI reads it back from the command line: a string as it is;
    numbers, true/false/null, lists and dicts as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def load_mapping(path: str | Path, what: str, keys: Iterable[str]) -> dict[str, Any]:
    """The YAML mapping in ``path`` (a ``what``: "ablation file", "sweep file"), with only
    ``keys`` at its top; every problem is a one-line :class:`ConfigError` naming the file."""
    import yaml

    from xecg.errors import ConfigError, one_line

    path, keys = Path(path), tuple(keys)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({one_line(err)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} is a mapping of {', '.join(keys)}")
    unknown = [str(k) for k in data if k not in keys]
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}: unknown key (a {what} has {', '.join(keys)})")
    return data


def override_args(overrides: dict[str, Any], configs: Iterable = ()) -> list[str]:
    """LightningCLI arguments: ``--config FILE`` for each of ``configs``, then
    ``--KEY=VALUE`` for each dotted override (``{"model.loss.gamma": 0.1}``), in order."""
    args: list[str] = []
    for config in configs:
        args += ["--config", str(config)]
    return args + [f"--{k}={cli_value(v)}" for k, v in overrides.items()]


def _train(argv: list[str]) -> int:
    """fit, then validate and test the best checkpoint: what `make train` runs."""
    pre = argparse.ArgumentParser(prog="xecg train", description=_train.__doc__, add_help=False)
    pre.add_argument("--data", default=None,
                     help="dataset root in any supported layout (default: synthetic data)")
    pre.add_argument("--ckpt_path", default=None, help="resume: 'last' or a checkpoint path")
    known, rest = pre.parse_known_args(argv)
    if {"-h", "--help"} & set(rest):  # train's own options, then LightningCLI's (it exits)
        pre.print_help()
        print("\nWithout --config: experiments/smoke.yaml. Every option of `xecg fit` also "
              "applies:\n", flush=True)
    elif "--config" not in rest and "-c" not in rest:
        rest = ["--config", "experiments/smoke.yaml", *rest]
    args = list(rest)
    if known.data:
        root = Path(known.data).resolve()
        from xecg.data.readers.registry import folder_problem

        problem = folder_problem(root)
        if problem:  # before a run folder, a logger or a store is touched
            from xecg.errors import NotFoundError

            raise NotFoundError(f"--data {known.data}: {problem}")
        args += ["--data.source", str(root), "--data.store", store_for(root),
                 "--data.protocol", "paper"]
    from xecg.lightning_cli import fit_and_test

    # `--ckpt_path last` is Lightning's own shorthand: it finds last.ckpt in the run folder.
    run_dir = fit_and_test(args, ckpt_path=known.ckpt_path, prog="xecg train")
    print(f"run folder: {run_dir}")
    return 0


def store_for(root: Path) -> str:
    """The store of dataset folder ``root`` for ``xecg train --data``: ``data/stores/NAME-HASH``,
    the folder's name and a hash of its full path, as two datasets may share a folder name
    (the Challenge 2020 archives of PTB-XL and Georgia both unpack to ``WFDB/``) and would
    otherwise prepare over each other's store."""
    import hashlib

    root = root.resolve()
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return f"data/stores/{root.name}-{digest}"


def _prepare(args: argparse.Namespace) -> int:
    if args.source == "synthetic":
        from xecg.data.synthetic import Realism, make_synthetic_store

        make_synthetic_store(args.out, n=args.n, seed=args.seed, fs=args.fs or 500.0,
                             force=args.force,
                             realism=Realism(nuisance=args.nuisance, st_variety=args.st_variety,
                                             lead_gains=args.lead_gains,
                                             discordant_st=args.discordant_st))
        return 0
    from xecg.data.prepare import prepare_dataset

    return prepare_dataset(args.source, args.out, fs=args.fs, strict=args.strict,
                           reference=args.reference, workers=args.workers, force=args.force)


def _split(args: argparse.Namespace) -> int:
    from xecg.data.splits import make_split, save_split
    from xecg.errors import ConfigError

    try:
        split = make_split(args.source, protocol=args.protocol, seed=args.seed,
                           folds=args.folds, fold=args.fold)
    except ValueError as err:  # --folds/--fold that name no fold, too few records: one line
        raise ConfigError(f"{args.source}: {err}") from err
    save_split(split, args.out)
    counts = ", ".join(f"{k} {len(split[k]):,}" for k in ("train", "val", "test"))
    print(f"{args.protocol} split of {args.source}: {counts} -> {args.out}")
    return 0


USAGE = """\
xECGNet and its baselines for multilabel 12-lead ECG classification (CPSC 2018), on PyTorch
Lightning. Start with `make train` (synthetic data, CPU, minutes), or:

  xecg train --config experiments/xecgnet.yaml --data /path/to/cpsc2018

A bad file or setting stops a command with one line that names it (exit code 2)."""

EPILOG = "README.md has every command with an example; `xecg COMMAND --help` its options."


def _at_least_one(text: str) -> int:
    """An argparse type: an integer of at least 1 (an empty store is no dataset)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _rate(text: str) -> float:
    """An argparse type: a sampling rate in Hz within the range headers may state (leave --fs
    out for the native rate)."""
    from xecg.data.readers.header import FS_RANGE

    value = float(text)
    if not FS_RANGE[0] <= value <= FS_RANGE[1]:  # also refuses NaN and inf
        raise argparse.ArgumentTypeError(
            f"must be {FS_RANGE[0]:g} to {FS_RANGE[1]:g} Hz, got {text} (leave --fs out for "
            "the rate of most records)")
    return value


def build_parser() -> argparse.ArgumentParser:
    # The user's words, not the module docstring (written for developers).
    p = argparse.ArgumentParser(prog="xecg", description=USAGE, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("train", help="fit, validate and test the best checkpoint (`make train`); "
                   "see `xecg train --help`", add_help=False)
    for name in TRAINING_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} --config experiments/NAME.yaml",
                       add_help=False)
    for name, (_, help_text) in TOOL_COMMANDS.items():
        sub.add_parser(name, help=f"{help_text}; see `xecg {name} --help`", add_help=False)

    # The generator's option names, from where they are defined (numpy only: cheap to import).
    from xecg.data.synthetic import (
        DEFAULT_LEAD_GAINS,
        DEFAULT_NUISANCE,
        LEAD_GAINS,
        NUISANCE_LEVELS,
    )

    pp = sub.add_parser("prepare", help="read a dataset (or make synthetic data) into a store")
    pp.add_argument("source", help="dataset root (any supported layout), or 'synthetic'")
    pp.add_argument("--out", required=True, type=Path, help="store folder to write")
    pp.add_argument("--fs", type=_rate, default=None,
                    help="resample to this rate (Hz; default: the rate of most records, on a "
                         "tie the higher)")
    pp.add_argument("--strict", action="store_true", help="stop at the first bad record")
    pp.add_argument("--reference", type=Path, default=None,
                    help="REFERENCE.csv (default: found under SOURCE)")
    pp.add_argument("--workers", type=int, default=None,
                    help="reader processes (default: CPUs - 1)")
    pp.add_argument("--force", action="store_true", help="rewrite even if the store is current")
    pp.add_argument("--n", type=_at_least_one, default=2000, help="synthetic: number of records")
    pp.add_argument("--seed", type=int, default=0, help="synthetic: generator seed")
    pp.add_argument("--nuisance", choices=sorted(NUISANCE_LEVELS), default=DEFAULT_NUISANCE,
                    help="synthetic: nuisance level (v1: generator v1; wide: generator v3)")
    pp.add_argument("--st-variety", action="store_true",
                    help="synthetic: varied normal ST/T (J-point elevation, T size and axis) and "
                         "clearer STE")
    pp.add_argument("--lead-gains", choices=sorted(LEAD_GAINS), default=DEFAULT_LEAD_GAINS,
                    help="synthetic: per-lead QRS amplitudes (v1: generator v1; adult: normal "
                         "adults' textbook values)")
    pp.add_argument("--discordant-st", action="store_true",
                    help="synthetic: the secondary ST shift of RBBB and PVC beats")
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
    # sys.argv stays as it is: Lightning's DDP launcher re-runs it for the other ranks.
    argv = sys.argv[1:] if argv is None else argv
    from xecg.errors import XECGError, error_exit

    try:
        return _dispatch(argv)
    except XECGError as err:
        return error_exit(err)


def _dispatch(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else (None, [])
    if command == "train":
        return _train(rest)
    if command in TRAINING_COMMANDS:
        from xecg.lightning_cli import XECGCLI, finish_wandb

        finish_wandb(XECGCLI(args=argv).trainer)
        return 0
    if command in TOOL_COMMANDS:
        import importlib

        module = importlib.import_module(TOOL_COMMANDS[command][0])
        return int(module.main(rest) or 0)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
