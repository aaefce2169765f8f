"""Typed errors. Library code raises these with a message that names the file or setting and
the problem; the ``xecg`` command prints that one line (no traceback) and exits with
:attr:`XECGError.exit_code`."""

from __future__ import annotations

import os
import sys


def error_exit(err: BaseException, status: int | None = None) -> int:
    """Print ``xecg: error: ERR`` on stderr, the one line every command stops with, and return
    the exit status: ``status``, else the error's ``exit_code``, else 2."""
    print(f"xecg: error: {err}", file=sys.stderr)
    return status if status is not None else getattr(err, "exit_code", 2)


def one_line(err: object, limit: int = 300) -> str:
    """``err``'s text on one line, cut to ``limit`` characters (for errors from libraries)."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def counted(n: int, noun: str) -> str:
    """``1 record``, ``1,204 records``: a count in a message."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


class XECGError(Exception):
    """Base of xecg's expected errors: bad input, bad configuration, unusable files."""

    exit_code = 2


class ConfigError(XECGError):
    """An experiment, sweep or ablation file, or a command-line value, that cannot be used."""


class SplitError(ConfigError, ValueError):
    """A split file that cannot be used (not JSON, a split missing, records in two splits).
    Also a ``ValueError``, as load_split raised before."""


class NotFoundError(XECGError, FileNotFoundError):
    """A file or folder given to xecg to read that does not exist. Also a
    ``FileNotFoundError``, so code that caught that still does."""


class WriteError(XECGError, OSError):
    """A file or folder xecg could not write (full disk, read-only or missing folder). Whatever
    was being written was removed, so nothing half-written looks complete. Also an ``OSError``,
    so code that caught the underlying error still does."""

    @classmethod
    def of(cls, path: str | os.PathLike, err: OSError, what: str = "") -> WriteError:
        """``could not write PATH: REASON`` from the ``OSError`` that stopped the write."""
        reason = err.strerror or str(err) or type(err).__name__
        if err.filename is not None and os.fspath(err.filename) != os.fspath(path):
            reason += f" ({err.filename})"
        new = cls(f"could not write {path}: {reason}{'; ' + what if what else ''}")
        new.errno, new.strerror, new.filename = err.errno, err.strerror, os.fspath(path)
        return new

    def __str__(self) -> str:  # the message, not OSError's "[Errno N] ..." form
        return str(self.args[0]) if self.args else ""
