"""Inputs named by URL (``s3://bucket/a.tif``, ``gs://...``, ``https://...``, ``file://...``), read through fsspec.

fsspec finds the file system of each protocol (``s3fs`` for ``s3://``, ``gcsfs`` for ``gs://``, ...), which
must be installed; Zarr stores are opened by zarr itself, from the same URL.
"""

from __future__ import annotations

import re

from ..errors import InputError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(path) -> bool:
    """True for a string with a protocol (``s3://...``); a plain path has none."""
    return isinstance(path, str) and bool(_SCHEME.match(path))


def filesystem(url: str):
    """``(fsspec file system, path within it)`` of ``url``; :class:`InputError` when its protocol cannot be read."""
    try:
        import fsspec.core
    except ImportError:
        raise InputError("URLs need fsspec: pip install fsspec (and the package of the protocol)") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        text = str(exc).strip().splitlines()
        raise InputError(f"cannot read this URL: {text[0] if text else type(exc).__name__}") from None


def size(url: str) -> int:
    """Size in bytes of the file at ``url``."""
    fs, where = filesystem(url)
    return int(fs.size(where))
