"""Secrets never leave the process: passwords in URLs and values of secret-looking keys are
masked before a configuration is written (``config.yaml``), logged (the W&B run's config) or
printed. Sweeps and other tools use :func:`mask_url` for storage URLs such as
``postgresql://user:password@host/db``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

#: Keys whose values are secrets whatever they hold (compared lower-case, ``-`` as ``_``).
SECRET_KEY = re.compile(r"(^|_)(password|passwd|pwd|secret|token|api_?key|access_?key|"
                        r"private_?key|credentials?|auth)($|_)")
#: ``scheme://user:password@`` anywhere in a string (URLs inside longer text too).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)(?P<pw>[^@\s/]*)@")


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: ``postgresql://user:***@host/db``.

    A URL without a password (``sqlite:///x.db``, ``postgresql://host/db``) is returned as it is;
    a password in a query (``?password=...``) is masked too."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", str(url))
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if parts.query:
        query = "&".join(_mask_pair(p) for p in parts.query.split("&"))
        text = urlunsplit(parts._replace(query=query))
    return text


def _mask_pair(pair: str) -> str:
    key, sep, value = pair.partition("=")
    return f"{key}={MASK}" if sep and is_secret_key(key) and value else pair


def is_secret_key(key: object) -> bool:
    return bool(SECRET_KEY.search(str(key).lower().replace("-", "_")))


def redact(value: Any) -> Any:
    """A copy of ``value`` (dicts, lists, strings, a jsonargparse Namespace as a dict) with URL
    passwords masked and the values of secret-looking keys replaced by ``***``."""
    if isinstance(value, Mapping):
        return {k: (MASK if is_secret_key(k) and v not in (None, "") else redact(v))
                for k, v in value.items()}
    if hasattr(value, "as_dict") and callable(value.as_dict):  # jsonargparse Namespace
        return redact(value.as_dict())
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact(v) for v in value)
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return value


def redact_namespace(config):
    """A copy of a jsonargparse ``Namespace`` (nested Namespaces, lists, dicts) with secrets
    masked as :func:`redact` does, still a Namespace so that its parser can save it."""
    from jsonargparse import Namespace

    def walk(value, key=""):
        if key and is_secret_key(key) and isinstance(value, str) and value:
            return MASK
        if isinstance(value, Namespace):
            out = Namespace()
            for k, v in vars(value).items():
                setattr(out, k, walk(v, k))
            return out
        if isinstance(value, Mapping):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and "://" in value:
            return mask_url(value)
        return value

    return walk(config)
