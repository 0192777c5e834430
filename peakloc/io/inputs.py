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


def _directory(root: str, recursive: bool, found: Expanded) -> None:
    """Supported files of a directory, sorted by name; with ``recursive``, subfolders too (by path)."""
    base = Path(root)
    files: list[Path] = []

    def unreadable(error: OSError) -> None:
        if error.filename is not None and os.path.normpath(error.filename) == os.path.normpath(root):
            raise error
        found.notes.append((str(error.filename), f"cannot list folder: {error.strerror or error}; skipped"))

    def wanted(path: Path) -> bool:
        # A .zarr folder is one input, like a file.
        return is_supported(path) and (path.is_file() or (path.is_dir() and path.suffix.lower() == ".zarr"))

    try:
        if recursive:
            for folder, subfolders, names in os.walk(root, onerror=unreadable):
                stores = [s for s in subfolders if s.lower().endswith(".zarr")]
                subfolders[:] = sorted(s for s in subfolders if s not in stores)
                files += [p for p in (Path(folder, n) for n in names + stores) if wanted(p)]
        else:
            files = [p for p in base.iterdir() if wanted(p)]
    except OSError as exc:
        found.inputs.append(Input(root, f"cannot list directory: {exc.strerror or exc}"))
        return
    if not files:
        what = "folder and its subfolders have" if recursive else "folder has"
        found.notes.append((root, f"{what} no supported file (.npy, .png, .tif, .jpg, ...)"))
    for p in sorted(files, key=lambda p: p.relative_to(base).parts):
        found.inputs.append(Input(os.path.join(root, *p.relative_to(base).parts)))


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
