"""Atomic writers: a file or folder appears whole under its final name, or not at all.

Everything xecg writes for later reading (stores, splits, metrics.json, predictions, sweep
tables) goes through here, so an interrupted process never leaves half a file that looks done.
A write that fails (full disk, read-only or missing folder) raises
:class:`xecg.errors.WriteError` (one line, also an ``OSError``) after removing its temporary
file; the previous file, if any, is left as it was.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from xecg.errors import WriteError

_NOT_IN_NAMES = re.compile(r"[/\\\x00-\x1f]")


def output_name(record_id: str, suffix: str) -> str:
    """A file name for ``record_id`` that stays inside the output folder: path separators and
    control characters become ``_`` and a name of only dots gets a leading ``_``."""
    name = _NOT_IN_NAMES.sub("_", str(record_id)) or "_"
    if set(name) == {"."}:
        name = "_" + name
    return name + suffix


def inside(out: Path, name: str) -> Path:
    """``out / name``, refused (:class:`xecg.errors.WriteError`) unless it lies directly in
    ``out``; ``name`` should come from :func:`output_name`."""
    path = out / name
    if path.resolve().parent != out.resolve():
        raise WriteError(f"{path}: would be written outside {out}; not written")
    return path


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` through a temporary sibling and a rename: nobody ever reads half a file.

    The data is flushed to disk before the rename, so after a power cut the file is the old one
    or the new one, never a truncated mix."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; these files are results to share
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        if isinstance(err, WriteError):
            raise
        raise WriteError.of(path, err, "nothing was written there") from err
    except BaseException:
        _remove(tmp)
        raise


def json_text(data: object) -> str:
    """``data`` as indented, strict JSON: a NaN or infinity (an AUROC of a class with no
    positive) becomes ``null``, since ``NaN`` is Python's extension that other JSON readers
    refuse."""
    def finite(v: object) -> object:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return v

    return json.dumps(finite(data), indent=2, allow_nan=False) + "\n"


def _remove(tmp: str | None) -> None:
    if tmp is not None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Write a CSV file atomically (see :func:`write_atomic`)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    write_atomic(path, buf.getvalue())


def replace_dir(new: Path, dest: Path) -> None:
    """Move the finished folder ``new`` to ``dest``; an existing ``dest`` is moved aside first
    and removed after, so ``dest`` is never a mix of both. If the final rename fails, the old
    ``dest`` is put back before the error is raised. A process killed on the way leaves the old
    folder as ``.DEST.old-HOST-PID``, which :func:`reclaim_replaced` finishes."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{socket.gethostname()}-{os.getpid()}")
        os.replace(dest, old)
    try:
        os.replace(new, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def reclaim_replaced(dest: Path, whole: Callable[[Path], bool]) -> list[str]:
    """Finish the swaps of ``dest`` that :func:`replace_dir` left undone when its process was
    killed on this host; returns what was done, a line each.

    Killed while removing the old folder (the long part: a whole store), ``dest`` is the new
    one and the old is removed. Killed between the two renames, ``dest`` is missing and the
    old folder, still ``whole``, is put back. Folders of live processes or other hosts (a
    shared file system) are left alone."""
    done = []
    prefix = f".{dest.name}.old-"
    for old in dest.parent.glob(f"{prefix}*"):
        host, _, pid = old.name[len(prefix):].rpartition("-")
        if not old.is_dir() or not process_gone(host, pid):
            continue
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed {old}: the copy of {dest} that process {pid} replaced and "
                        "was stopped while removing")
        elif whole(old):
            os.replace(old, dest)
            done.append(f"restored {dest} from {old}: process {pid} was stopped while it "
                        "replaced it")
        else:
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed {old}: an incomplete copy of {dest} left by process {pid}")
    return done


def process_gone(host: object, pid: object) -> bool:
    """True when ``host`` is this machine and process ``pid`` no longer runs there (a zombie,
    dead but not reaped, counts as gone): its writer was killed and what it left is stale.
    False for another host (a shared file system or database) and for a live process."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, as another user's
    except (TypeError, ValueError, OverflowError):
        return False  # no pid to judge by
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        if stat.read_text().rpartition(")")[2].split()[0] == "Z":
            return True
    return False
