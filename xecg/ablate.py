"""``xecg ablate ABLATION.yaml``: a grid of full training runs, variants x seeds, each in its own
run folder, then ``xecg compare`` over them.

An ablation file (see ``experiments/ablations/gamma.yaml``)::

    name: gamma                       # W&B group and metrics.json "ablation" (default: file stem)
    experiment: ../smoke.yaml         # one config path or a list, as --config (relative to this
                                      # file, else to the current folder)
    overrides:                        # dotted keys, for every run
      trainer.max_epochs: 40
      early_stopping.patience: 5
    variants:                         # name -> dotted-key overrides ({} for none)
      cnn: {model.net.class_path: xecg.models.CNNBaseline}
      abn: {model.loss.gamma: 0.0}
      xecgnet-g0.01: {model.loss.gamma: 0.01}
    seeds: 5                          # a count (0 .. N-1) or a list
    reference: abn                    # the variant the others are compared with (default abn)
    out: runs/gamma                   # relative to this file (default: runs/<file stem> beside it)

Each run is ``xecg train`` in a fresh process (isolated global state, seeds and memory; a crash
ends that run only) with ``--seed_everything S``, run folder ``OUT/<variant>/seed<S>``, W&B run
``<variant>-seed<S>`` in group ``<name>`` with job type ``ablation`` and tags ``[variant,
seed<S>]``, and ``variant``, ``seed``, ``ablation`` and ``overrides`` at the top of its
``metrics.json``. Its output goes to ``OUT/logs/<variant>-seed<S>.log``.

Re-running is safe: a finished run (``metrics.json`` with a ``test`` section) is skipped, an
unfinished one with ``checkpoints/last.ckpt`` resumes from it (``--ckpt_path last``, the same W&B
run), anything else starts afresh. Failed runs are listed at the end and make the exit code 1;
a bad ablation file or option is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xecg.cli import cli_value, load_mapping, override_args
from xecg.errors import ConfigError, error_exit

FILE_KEYS = ("name", "experiment", "overrides", "variants", "seeds", "reference", "out")
DEFAULT_REFERENCE = "abn"
#: Set by xecg ablate for every run; an ablation file may not override them.
RESERVED = ("seed_everything", "trainer.default_root_dir", "experiment.name",
            "experiment.group", "experiment.tags", "experiment.job_type", "experiment.runs_dir",
            "report.meta", "ckpt_path", "config")
#: Folders of the output folder that are not variants: run logs and xecg compare's report.
RESERVED_FOLDERS = ("logs", "compare")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass
class Ablation:
    """A validated ablation file."""

    path: Path
    name: str
    configs: list[Path]
    overrides: dict[str, Any]
    variants: dict[str, dict[str, Any]]
    seeds: list[int]
    reference: str | None
    out: Path


@dataclass
class Run:
    """One cell of the grid."""

    variant: str
    seed: int
    folder: Path
    log: Path
    state: str = field(init=False, default="new")  # new | resume | finished

    @property
    def label(self) -> str:
        return f"{self.variant}-seed{self.seed}"

    def refresh(self) -> str:
        if test_metrics(self.folder) is not None:
            self.state = "finished"
        elif (self.folder / "checkpoints" / "last.ckpt").is_file():
            self.state = "resume"
        else:
            self.state = "new"
        return self.state


# ----------------------------------------------------------------------------- the file

def load_ablation(path: str | Path) -> Ablation:
    """Read and check an ablation file; every problem is a :class:`ConfigError` of one line
    naming the file and the key."""
    path = Path(path)
    data = load_mapping(path, "ablation file", FILE_KEYS)

    name = data.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{path}: name: {name!r} is not a plain name (letters, digits, ._+=-)")
    configs = [_find_config(path, c) for c in _as_list(path, "experiment", data.get("experiment"))]
    overrides = _overrides(path, "overrides", data.get("overrides"))

    variants_raw = data.get("variants")
    if not isinstance(variants_raw, dict) or not variants_raw:
        raise ConfigError(f"{path}: variants: expected a mapping of variant name -> overrides")
    variants: dict[str, dict[str, Any]] = {}
    for vname, vover in variants_raw.items():
        if not isinstance(vname, str) or not _NAME.match(vname):
            raise ConfigError(f"{path}: variants: {vname!r} is not a plain name usable as a "
                              "folder (letters, digits, ._+=-)")
        if vname in RESERVED_FOLDERS:
            raise ConfigError(f"{path}: variants: {vname!r} is the name of a folder that xecg "
                              f"ablate writes beside the runs ({', '.join(RESERVED_FOLDERS)})")
        variants[vname] = _overrides(path, f"variants.{vname}", vover)

    seeds = parse_seeds(path, data.get("seeds", 3))

    if "reference" in data:
        reference = data["reference"]
        if reference not in variants:
            raise ConfigError(f"{path}: reference: {reference!r} is not one of the variants "
                              f"({', '.join(variants)})")
    else:
        reference = DEFAULT_REFERENCE if DEFAULT_REFERENCE in variants else None

    out_value = data.get("out", f"runs/{path.stem}")
    if not isinstance(out_value, str) or not out_value.strip():
        raise ConfigError(f"{path}: out: expected a folder path, got {out_value!r}")
    out = Path(out_value) if Path(out_value).is_absolute() else path.parent / out_value
    return Ablation(path, name, configs, overrides, variants, seeds, reference, out)


def _as_list(path: Path, key: str, value) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(
            isinstance(v, str) and v for v in values):
        raise ConfigError(f"{path}: {key}: expected an experiment config path or a list of them")
    return values


def _find_config(path: Path, value: str) -> Path:
    """Relative to the ablation file (like ``extends:``), else to the current folder."""
    candidate = Path(value)
    for found in ((candidate,) if candidate.is_absolute() else (path.parent / value, candidate)):
        if found.is_file():
            return Path(os.path.normpath(found))
    raise ConfigError(f"{path}: experiment: {value} not found (relative to {path.parent} or the "
                      "current folder)")


def _overrides(path: Path, key: str, value) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {key}: expected a mapping of dotted keys to values, "
                          f"got {value!r}")
    for k in value:
        if not isinstance(k, str) or not _KEY.match(k):
            raise ConfigError(f"{path}: {key}: {k!r} is not a dotted key like model.loss.gamma")
        if any(k == r or k.startswith(r + ".") for r in RESERVED):
            raise ConfigError(f"{path}: {key}.{k}: set by xecg ablate for every run "
                              f"(reserved: {', '.join(RESERVED)})")
    return dict(value)


def parse_seeds(path: Path | str, value) -> list[int]:
    """A count N (seeds 0..N-1) or a list of distinct seeds in [0, 2**32)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"{path}: seeds: expected a count >= 1 or a list, got {value}")
        return list(range(value))
    if (isinstance(value, list) and value and all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in value)):
        if len(set(value)) != len(value):
            raise ConfigError(f"{path}: seeds: {value} repeats a seed")
        return list(value)
    raise ConfigError(f"{path}: seeds: expected a count >= 1 or a list of distinct integers in "
                      f"[0, 2**32), got {value!r}")


# ----------------------------------------------------------------------------- the runs

def read_metrics(folder: Path) -> dict:
    """``folder/metrics.json``, or {} if there is none (or it cannot be read)."""
    try:
        data = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def test_metrics(folder: Path) -> dict | None:
    """The ``test`` section of ``folder/metrics.json``, or None if the run has not finished."""
    test = read_metrics(folder).get("test")
    return test if isinstance(test, dict) and test else None


def changed_overrides(data: dict, ablation: Ablation, run: Run) -> str:
    """What differs between the overrides a run's metrics.json recorded and the ablation file's
    now (the variant's, and the common ones since 2026-11-28), as ``trainer.max_epochs 2 -> 3``;
    empty when nothing does, or when the run recorded none."""
    if "overrides" not in data:
        return ""
    old, new = dict(data["overrides"]), dict(ablation.variants[run.variant])
    if "common_overrides" in data:  # older runs recorded the variant's alone
        old = {**data["common_overrides"], **old}
        new = {**ablation.overrides, **new}
    def shown(values: dict, key: str) -> str:
        return json.dumps(values[key]) if key in values else "unset"

    keys = sorted(k for k in set(old) | set(new) if shown(old, k) != shown(new, k))
    return ", ".join(f"{k} {shown(old, k)} -> {shown(new, k)}" for k in keys)


def exit_reason(rc: int) -> str:
    """``exit 2``, or for a negative code ``killed by SIGKILL`` (out of memory, ``kill -9``)."""
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit {rc}"


def train_args(ablation: Ablation, run: Run, resume: bool | None = None) -> list[str]:
    """The ``xecg train`` arguments of one run (after ``train``); ``--ckpt_path last`` when it
    resumes (``resume``, by default: its state says so)."""
    args = override_args({**ablation.overrides, **ablation.variants[run.variant]},
                         ablation.configs)
    meta = {"variant": run.variant, "seed": run.seed, "ablation": ablation.name,
            "overrides": ablation.variants[run.variant],
            "common_overrides": ablation.overrides}
    args += [
        f"--seed_everything={run.seed}",
        f"--trainer.default_root_dir={run.folder}",
        f"--experiment.name={run.label}",
        f"--experiment.group={ablation.name}",
        "--experiment.job_type=ablation",
        f"--experiment.tags={json.dumps([run.variant, f'seed{run.seed}'])}",
        f"--report.meta={json.dumps(meta)}",
    ]
    if run.state == "resume" if resume is None else resume:
        args += ["--ckpt_path", "last"]
    return args


def train_command(ablation: Ablation, run: Run) -> list[str]:
    return [sys.executable, "-m", "xecg.cli", "train", *train_args(ablation, run)]


def execute(ablation: Ablation, run: Run) -> tuple[int, float, float]:
    """Run one training in a child process, output appended to its log; (exit code, seconds,
    CPU seconds of the child and its waited-for children). If this process is interrupted or
    terminated, the child is ended too."""
    run.log.parent.mkdir(parents=True, exist_ok=True)
    command = train_command(ablation, run)
    start, cpu_start = time.monotonic(), _children_cpu()
    with open(run.log, "a") as log:
        log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {run.state}: "
                  f"{' '.join(_quote(c) for c in command)}\n")
        log.flush()
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent())
        try:
            rc = child.wait()
        except BaseException:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            raise
    return rc, time.monotonic() - start, _children_cpu() - cpu_start


def _die_with_parent():
    """On Linux, a function for ``preexec_fn`` that has the child sent SIGTERM when this process
    dies, even by SIGKILL: an orphaned training would go on writing into a run folder that a
    re-run then trains too. None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return set_death_signal


def _children_cpu() -> float:
    try:
        import resource
    except ImportError:  # not on POSIX
        return float("nan")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w@%+=:,./-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


_ERROR_LINE = re.compile(r"^((\w+\.)*\w*(Error|Exception|Interrupt)\b|(xecg: )?error:)")


def error_summary(text: str, limit: int = 400) -> str:
    """The error at the end of a command's output on one line: from the last line that starts
    an error (``error: ...`` of the argument parser, a traceback's ``SomeError: ...``) to the
    end, whitespace collapsed; else the last line."""
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.startswith("wandb:")]  # W&B's closing notes
    if not lines:
        return ""
    starts = [i for i, ln in enumerate(lines) if _ERROR_LINE.match(ln)]
    summary = " ".join(lines[starts[-1]:] if starts else lines[-1:])
    return summary if len(summary) <= limit else summary[:limit - 3] + "..."


def last_error(log: Path) -> str:
    """The error at the end of a run's log (see :func:`error_summary`)."""
    try:
        return error_summary(log.read_text(errors="replace"))
    except OSError:
        return ""


def check_arguments(ablation: Ablation, run: Run) -> str | None:
    """Parse one run's arguments as ``xecg train`` would, without building anything: None if
    they parse, else the parser's error on one line. Used by ``--dry-run``."""
    import io

    from xecg.lightning_cli import XECGCLI

    class Parsed(Exception):
        pass

    class ParseOnly(XECGCLI):
        def _set_seed(self) -> None:
            pass

        def before_instantiate_classes(self) -> None:
            raise Parsed

    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            ParseOnly(args=train_args(ablation, run, resume=False), run=False)
    except Parsed:
        return None
    except SystemExit:
        return error_summary(err.getvalue()) or "the arguments do not parse"
    except Exception as exc:  # any failure to parse is reported, not raised
        return error_summary(f"{type(exc).__name__}: {exc}")
    return None


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def f1_text(metrics: dict | None) -> str:
    value = (metrics or {}).get("micro_f1")
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"test micro-F1 {value:.3f}"
    return "test micro-F1   -  "


@contextlib.contextmanager
def lock(out: Path):
    """One ``xecg ablate`` at a time per output folder (two would train the same runs)."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock
        yield
        return
    with open(out / ".ablate.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"{out}: another xecg ablate is running on this folder") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_compare(out: Path, reference: str | None, runs: list[Run]) -> int:
    """``xecg compare OUT --reference REF`` if xecg.compare is installed; else a note."""
    try:
        compare = importlib.import_module("xecg.compare")
    except ImportError as err:
        print(f"\nnote: xecg compare is not available ({err}); compare the runs later with "
              f"`xecg compare {out}`")
        return 0
    args = [str(out)]
    if reference is not None and any(r.variant == reference and r.state == "finished"
                                     for r in runs):
        args += ["--reference", reference]
    print(f"\nxecg compare {' '.join(args)}", flush=True)
    try:
        rc = int(compare.main(args) or 0)
    except Exception as err:  # the runs are done; report and exit non-zero
        print(f"xecg ablate: xecg compare failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if rc:
        print(f"xecg ablate: xecg compare exited with {rc}", file=sys.stderr)
    return rc


# ----------------------------------------------------------------------------- the command

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="xecg ablate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ablation", type=Path, help="ablation file (YAML)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, metavar="N", help="seeds 0..N-1 (overrides the file)")
    seeds.add_argument("--seed-list", type=int, nargs="+", metavar="S",
                       help="these seeds (overrides the file)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: the file's `out:`, runs/<stem> beside it)")
    p.add_argument("--variants", nargs="+", metavar="NAME", default=None,
                   help="run only these variants (default: all)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the grid, each run's state and the first command; train nothing")
    p.add_argument("--no-compare", action="store_true", help="skip xecg compare at the end")
    return p.parse_args(argv)


def plan(args: argparse.Namespace) -> tuple[Ablation, list[Run]]:
    ablation = load_ablation(args.ablation)
    if args.seeds is not None:
        ablation.seeds = parse_seeds("--seeds", args.seeds)
    elif args.seed_list is not None:
        ablation.seeds = parse_seeds("--seed-list", args.seed_list)
    if args.out is not None:
        ablation.out = args.out
    names = list(ablation.variants)
    if args.variants:
        unknown = [v for v in args.variants if v not in ablation.variants]
        if unknown:
            raise ConfigError(f"--variants: {unknown[0]!r} is not a variant of "
                              f"{ablation.path} ({', '.join(ablation.variants)})")
        names = [v for v in names if v in args.variants]
    out = ablation.out
    # Seed-major: every variant of seed 0 before any of seed 1, so a grid stopped early still
    # holds complete seeds, which the paired comparison needs.
    runs = [Run(v, s, out / v / f"seed{s}", out / "logs" / f"{v}-seed{s}.log")
            for s in ablation.seeds for v in names]
    for run in runs:
        run.refresh()
    return ablation, runs


def print_grid(ablation: Ablation, runs: list[Run]) -> int:
    """``--dry-run``: the grid, each variant's arguments checked by the training parser, each
    run's state and the first command. 1 if a variant's arguments do not parse."""
    variants = list(dict.fromkeys(r.variant for r in runs))
    print(f"ablation {ablation.name} ({ablation.path}): {len(variants)} variants x "
          f"{len(ablation.seeds)} seeds = {len(runs)} runs -> {ablation.out}")
    print(f"experiment: {' + '.join(map(str, ablation.configs))}")
    if ablation.overrides:
        print("every run: " + ", ".join(f"{k}={cli_value(v)}"
                                        for k, v in ablation.overrides.items()))
    bad = 0
    for v in variants:
        over = ablation.variants[v]
        text = ", ".join(f"{k}={cli_value(x)}" for k, x in over.items()) or "(no overrides)"
        ref = "  [reference]" if v == ablation.reference else ""
        error = check_arguments(ablation, next(r for r in runs if r.variant == v))
        bad += error is not None
        print(f"  {v:<22} {text}{ref}" + (f"\n  {'':<22} ERROR: {error}" if error else ""))
    print(f"seeds: {', '.join(map(str, ablation.seeds))}")
    action = {"new": "to run", "resume": "to resume from last.ckpt", "finished": "finished, skip"}
    for run in runs:
        print(f"  {run.variant:<22} seed {run.seed:<4} {action[run.state]:<26} {run.folder}")
    todo = [r for r in runs if r.state != "finished"]
    if todo:
        print("first command: " + " ".join(_quote(c) for c in train_command(ablation, todo[0])))
    if bad:
        print(f"xecg ablate: {bad} variant(s) with arguments that do not parse", file=sys.stderr)
    return 1 if bad else 0


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # ends the running child too (see execute)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ablation, runs = plan(args)
        if args.dry_run:
            return print_grid(ablation, runs)
        try:  # SIGTERM ends the running training too, like Ctrl-C
            previous = signal.signal(signal.SIGTERM, _terminated)
        except ValueError:  # not the main thread: leave signals alone
            previous = None
        try:
            with lock(ablation.out):
                return _run_grid(ablation, runs, compare=not args.no_compare)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    except ConfigError as err:
        return error_exit(err)


def _run_grid(ablation: Ablation, runs: list[Run], compare: bool) -> int:
    n = len(runs)
    todo = sum(r.state != "finished" for r in runs)
    print(f"ablation {ablation.name}: {n} runs ({n - todo} finished, {todo} to run) -> "
          f"{ablation.out}; logs in {ablation.out / 'logs'}", flush=True)
    failures: list[tuple[Run, str]] = []
    start = time.monotonic()
    width = len(str(n))
    for i, run in enumerate(runs, 1):
        head = f"[{i:>{width}}/{n}] {run.variant:<22} seed {run.seed:<4}"
        data = read_metrics(run.folder)
        changed = changed_overrides(data, ablation, run)
        if run.refresh() == "finished":
            note = (f"  (trained with other overrides: {changed}; delete the folder to re-run)"
                    if changed else "")
            print(f"{head} skipped   {f1_text(data.get('test'))}{note}", flush=True)
            continue
        resumed = run.state == "resume"
        if resumed and changed:  # its epochs so far ran under the file as it was
            print(f"{head} note: started with other overrides ({changed}); it resumes under "
                  "the file's now: delete its folder to re-run it whole", flush=True)
        print(f"{head} ", end="", flush=True)
        try:
            rc, seconds, cpu = execute(ablation, run)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            print(f"xecg ablate: interrupted; re-run the same command to continue "
                  f"({run.label} resumes from its last.ckpt if it has one)", file=sys.stderr)
            return 130
        metrics = test_metrics(run.folder)
        if rc == 0 and metrics is not None:
            run.state = "finished"
            status = "resumed" if resumed else "done"
            print(f"{status:<9} {f1_text(metrics)}  {duration(seconds)} (CPU {duration(cpu)})",
                  flush=True)
        else:
            reason = exit_reason(rc) if rc else "no test metrics"
            # a killed process left no error of its own (its log's last lines are warnings)
            error = last_error(run.log) if rc >= 0 else ""
            print(f"FAILED    ({reason})  {duration(seconds)}  log {run.log}", flush=True)
            if error:
                print(f"{'':>{width * 2 + 3}} {error}", flush=True)
            failures.append((run, f"{reason}: {error}" if error else reason))
    print(f"\n{n - len(failures)} of {n} runs finished in {duration(time.monotonic() - start)}")
    rc = 0
    if compare and any(r.state == "finished" for r in runs):
        rc = run_compare(ablation.out, ablation.reference, runs)
    if failures:
        print(f"\nxecg ablate: {len(failures)} of {n} runs failed:", file=sys.stderr)
        for run, reason in failures:
            print(f"  {run.label}: {reason} (log {run.log})", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
