"""Turn the command line's INPUT arguments into the list of files to read, in order."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .readers import is_supported


@dataclass(frozen=True)
class Input:
    """One file to read: ``path`` as given or as found in a directory; ``problem`` if it cannot be listed."""

    path: str
    problem: str | None = None


def _directory(root: str, recursive: bool) -> Iterator[Input]:
    """Supported files of a directory, sorted by name; with ``recursive``, subfolders too (by path)."""
    base = Path(root)
    try:
        found = base.rglob("*") if recursive else base.iterdir()
        files = [p for p in found if p.is_file() and is_supported(p)]
    except OSError as exc:
        yield Input(root, f"cannot list directory: {exc.strerror or exc}")
        return
    for p in sorted(files, key=lambda p: p.relative_to(base).parts):
        yield Input(os.path.join(root, *p.relative_to(base).parts))


def expand(arguments: Iterable[str], recursive: bool, stdin: TextIO) -> list[Input]:
    """Files named by INPUT arguments: files as given, directories expanded, ``-`` read from `stdin`.

    A path that does not exist is kept, so that reading it reports the problem in its place.
    """
    out: list[Input] = []
    for argument in arguments:
        if argument == "-":
            names = [line.rstrip("\r\n") for line in stdin]
            out.extend(expand([n for n in names if n.strip()], recursive, stdin))
        elif os.path.isdir(argument):
            out.extend(_directory(argument, recursive))
        else:
            out.append(Input(argument))
    return out
