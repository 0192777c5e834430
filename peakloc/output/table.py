"""The coordinate table: rows -> csv / tsv / json / jsonl, streamed to stdout or written atomically."""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

#: The contract's columns, in order.
COLUMNS = ("path", "index", "peak", "method", "x", "y", "z", "value")
#: Added at the end with ``--extra``: peak width (px), height above background, signal-to-noise, fallback flag.
SHAPE_COLUMNS = ("sigma", "amplitude", "snr")
EXTRA_COLUMNS = SHAPE_COLUMNS + ("fallback",)
FORMATS = ("csv", "tsv", "json", "jsonl")
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}

Row = dict[str, Any]


def infer_format(output: str, fmt: str | None) -> str:
    """The table format: ``fmt`` if given, else from the output's extension, else csv.

    Examples
    --------
    >>> infer_format("peaks.jsonl", None), infer_format("-", None), infer_format("a.txt", "tsv")
    ('jsonl', 'csv', 'tsv')
    """
    if fmt:
        return fmt
    if output == "-":
        return "csv"
    return _SUFFIX_FORMATS.get(Path(output).suffix.lower(), "csv")


#: Significant digits of computed float64 numbers: 1e-9 px on a 1000 px map, far below any method's
#: accuracy, and no ``254.99999999999997`` for an interpolated 255.
DIGITS = 12


def number(value: Any) -> int | float | None:
    """A NumPy or Python scalar as a short Python number (None for NaN and inf).

    Integers stay integers; float32 values print as float32 (``0.1``, not ``0.10000000149011612``);
    float64 values are rounded to :data:`DIGITS` significant digits.

    Examples
    --------
    >>> number(np.uint8(255)), number(np.float32(0.1)), number(254.99999999999997), number(float("nan"))
    (255, 0.1, 255.0, None)
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return int(value)
    if isinstance(value, np.floating) and value.dtype.itemsize < 8:
        value = float(str(value))  # str() of a NumPy float32 is its shortest round-trip repr
    elif np.isfinite(value):
        value = float(f"{float(value):.{DIGITS}g}")
    value = float(value)
    return value if np.isfinite(value) else None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return str(value)


class TableWriter:
    """Write rows as they come; a file appears whole at :meth:`close` (temp file, then rename).

    Standard output (``"-"``) is streamed, flushed after each :meth:`write` call.
    """

    def __init__(self, output: str, fmt: str, columns: tuple[str, ...] = COLUMNS) -> None:
        self.output = output
        self.fmt = fmt
        self.columns = columns
        self._count = 0
        self._tmp: str | None = None
        if output == "-":
            self._stream: IO[str] = sys.stdout
        else:
            import tempfile  # only for a file: standard output needs none of it

            target = Path(output)
            handle, self._tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
            self._stream = os.fdopen(handle, "w", newline="", encoding="utf-8")
        if fmt in ("csv", "tsv"):
            self._csv = csv.writer(self._stream, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
            self._csv.writerow(columns)
        elif fmt == "json":
            self._stream.write("[")

    def write(self, rows: Iterable[Row]) -> None:
        """Append rows (dicts keyed by :data:`COLUMNS`)."""
        for row in rows:
            if self.fmt in ("csv", "tsv"):
                self._csv.writerow([_cell(row[c]) for c in self.columns])
            else:
                import json

                text = json.dumps({c: row[c] for c in self.columns}, allow_nan=False)
                if self.fmt == "json":
                    self._stream.write(("," if self._count else "") + "\n  " + text)
                else:
                    self._stream.write(text + "\n")
            self._count += 1
        self._stream.flush()

    def close(self) -> None:
        """Finish the table; for a file, move it into place in one step."""
        if self.fmt == "json":
            self._stream.write("\n]\n" if self._count else "]\n")
        self._stream.flush()
        if self._tmp is not None:
            self._stream.close()
            os.chmod(self._tmp, 0o666 & ~_umask())
            os.replace(self._tmp, self.output)
            self._tmp = None

    def discard(self) -> None:
        """Drop a file table that will not be finished (standard output cannot be taken back)."""
        if self._tmp is not None:
            self._stream.close()
            os.unlink(self._tmp)
            self._tmp = None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def rows(
    path: str,
    labels: list[str],
    spatial: str,
    peaks: Mapping[str, Any],
    coords: Mapping[str, np.ndarray],
    extra: bool = False,
) -> Iterator[Row]:
    """Rows of one input, in the contract's order: index (C order), then peak rank, then method.

    Parameters
    ----------
    path : str
        The input as given or as found in a directory.
    labels : list of str
        One ``index`` label per heatmap.
    spatial : str
        The spatial axis letters of the coordinates, in ``Z, Y, X`` order (e.g. ``"YX"``).
    peaks : dict
        Method -> its peaks (:class:`peakloc.run.locate.MethodPeaks`: ``values``, ``present``, ``fallback``
        and ``shape`` columns, each ``(B, P)``); iteration order is the row order of methods.
    coords : dict
        Method -> coordinates ``(B, P, ndim)`` in the table's system.
    extra : bool
        Add :data:`EXTRA_COLUMNS`.
    """
    methods = list(peaks)
    n_peaks = max(p.present.shape[1] for p in peaks.values())
    axis_of = {a: i for i, a in enumerate(spatial)}
    for b, label in enumerate(labels):
        for rank in range(n_peaks):
            for method in methods:
                found = peaks[method]
                if rank >= found.present.shape[1] or not found.present[b, rank]:
                    continue
                point = coords[method][b, rank]
                row = {
                    "path": path,
                    "index": label or None,
                    "peak": rank + 1,
                    "method": method,
                    **{a.lower(): (number(point[axis_of[a]]) if a in axis_of else None) for a in "XYZ"},
                    "value": number(found.values[b, rank]),
                }
                if extra:
                    for column in SHAPE_COLUMNS:
                        row[column] = number(found.shape[column][b, rank])
                    row["fallback"] = bool(found.fallback[b, rank])
                yield row
