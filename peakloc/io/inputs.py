"""Turn the command line's INPUT arguments into the list of files to read, in order, with what was odd."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .readers import is_supported


@dataclass(frozen=True)
class Input:
    """One file to read: ``path`` as given or as found in a directory; ``problem`` if it cannot be listed."""

    path: str
    problem: str | None = None


@dataclass
class Expanded:
    """The files INPUT arguments name, in order, and ``(where, message)`` notes on what gave none."""

    inputs: list[Input] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)


def _wanted(entry: os.DirEntry | Path) -> bool:
    """A supported file, or a ``.zarr`` folder (one input, like a file)."""
    name = entry.name
    return is_supported(name) and (entry.is_file() or (entry.is_dir() and name.lower().endswith(".zarr")))


def _flat(root: str) -> list[tuple[str, ...]]:
    """The wanted entries of one folder, as one-part paths."""
    # scandir's entries know their type without a stat per file (thousands of files per folder).
    with os.scandir(root) as entries:
        return [(e.name,) for e in entries if _wanted(e)]


def _walk(root: str, found: Expanded) -> list[tuple[str, ...]]:
    """The wanted entries of a folder and its subfolders, as paths relative to it, split into parts."""

    def unreadable(error: OSError) -> None:
        if error.filename is not None and os.path.normpath(error.filename) == os.path.normpath(root):
            raise error
        found.notes.append((str(error.filename), f"cannot list folder: {error.strerror or error}; skipped"))

    base = Path(root)
    parts: list[tuple[str, ...]] = []
    for folder, subfolders, names in os.walk(root, onerror=unreadable):
        stores = [s for s in subfolders if s.lower().endswith(".zarr")]
        subfolders[:] = sorted(s for s in subfolders if s not in stores)
        parts += [p.relative_to(base).parts for p in (Path(folder, n) for n in names + stores) if _wanted(p)]
    return parts


def _directory(root: str, recursive: bool, found: Expanded) -> None:
    """Supported files of a directory, sorted by name; with ``recursive``, subfolders too (by path)."""
    try:
        parts = _walk(root, found) if recursive else _flat(root)
    except OSError as exc:
        found.inputs.append(Input(root, f"cannot list directory: {exc.strerror or exc}"))
        return
    if not parts:
        what = "folder and its subfolders have" if recursive else "folder has"
        found.notes.append((root, f"{what} no supported file (.npy, .png, .tif, .jpg, ...)"))
    found.inputs += [Input(os.path.join(root, *p)) for p in sorted(parts)]


def expand(arguments: Iterable[str], recursive: bool, stdin: TextIO) -> Expanded:
    """Files named by INPUT arguments: files as given, directories expanded, ``-`` read from `stdin`.

    A path that does not exist is kept, so that reading it reports the problem in its place. A folder with
    no supported file, a subfolder that cannot be listed and an empty list on standard input are notes.
    """
    found = Expanded()
    for argument in arguments:
        if argument == "-":
            names = [n for n in (line.rstrip("\r\n") for line in stdin) if n.strip()]
            if not names:
                found.notes.append(("-", "standard input lists no path"))
            inner = expand(names, recursive, stdin)
            found.inputs += inner.inputs
            found.notes += inner.notes
        elif os.path.isdir(argument) and not argument.rstrip("/").lower().endswith(".zarr"):
            _directory(argument, recursive, found)
        else:
            found.inputs.append(Input(argument))
    return found
