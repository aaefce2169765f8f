"""Typed errors. Library code raises these with a message that names the file or setting and
the problem; the ``xecg`` command prints that one line (no traceback) and exits with
:attr:`XECGError.exit_code`."""

from __future__ import annotations


class XECGError(Exception):
    """Base of xecg's expected errors: bad input, bad configuration, unusable files."""

    exit_code = 2


class ConfigError(XECGError):
    """An experiment, sweep or ablation file, or a command-line value, that cannot be used."""
