"""The coordinate table: rows -> csv / tsv / json / jsonl.

Streamed to a stream or written atomically to a file; never replacing a stream or a device.
"""

from __future__ import annotations

import csv
import errno
import io
import math
import operator
import os
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import IO, Any

import numpy as np

#: The contract's columns, in order.
COLUMNS = ("path", "index", "peak", "method", "x", "y", "z", "value")
#: Added at the end with ``--extra``: peak width (px), height above background, signal-to-noise, fallback flag.
SHAPE_COLUMNS = ("sigma", "amplitude", "snr")
#: The 1-sigma uncertainty of each coordinate (pixels), empty where the method has no noise model.
ERROR_COLUMNS = ("x_err", "y_err", "z_err")
EXTRA_COLUMNS = SHAPE_COLUMNS + ("fallback",) + ERROR_COLUMNS + ("split",)
FORMATS = ("csv", "tsv", "json", "jsonl")
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}

Row = dict[str, Any]
#: Rows written to a CSV or TSV table at once (a cell list of each column): a few MB of text.
WRITE_BLOCK = 4096


@dataclass(frozen=True, eq=False)
class Rounded:
    """A column of computed float64 numbers ``values`` ``(N,)``: :func:`numbers` of them, made when read.

    A CSV table takes their text straight away (:meth:`text`): one conversion a number instead of three
    (rounded text, a float again, its text); with :class:`Rows`, the SMLM movie's table took 74 ms instead
    of 141.
    """

    values: np.ndarray

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Rounded(self.values[index])
        return numbers(self.values[index : index + 1 or None])[0]

    def __eq__(self, other) -> bool:
        return isinstance(other, (Rounded, list)) and self.cells() == (
            other.cells() if isinstance(other, Rounded) else other
        )

    __hash__ = None

    def cells(self) -> list[float | None]:
        """The numbers (:func:`numbers`: rounded to :data:`DIGITS` significant digits; None for NaN, inf)."""
        return numbers(self.values)

    def text(self) -> list[str | None]:
        """Each cell's text as a CSV table writes it: ``str()`` of its number (None for NaN and inf).

        The rounded text itself, with ``.0`` where it has no point (``str(255.0)``): 12 significant digits or
        fewer tell a float64 from every other, so that text is the number's shortest round-trip form (what
        ``str()`` writes) from 1e-300 to 1e12. Outside, ``str()`` of the number.
        """
        values = self.values
        finite = np.isfinite(values)
        if not finite.any():  # an axis the maps do not have, a method without error bars
            return [None] * len(values)
        out = list(map(format, values.tolist(), repeat(_ROUNDED)))
        with np.errstate(invalid="ignore"):
            # Only a number within rounding of a whole one can have a text without a point.
            whole = np.abs(values - np.rint(values)) <= 1e-10 * np.abs(values)
        for i in np.flatnonzero(whole).tolist():
            if "." not in out[i] and "e" not in out[i]:
                out[i] += ".0"
        size = np.abs(values)
        # Past 1e12 ``str()`` writes no exponent where the rounded text has one; a subnormal number has fewer
        # digits than 12 to tell it from its neighbours, so its shortest form may be shorter.
        for i in np.flatnonzero(finite & ~((size < 1e12) & ((size > 1e-300) | (values == 0)))).tolist():
            out[i] = str(number(values[i]))
        for i in np.flatnonzero(~finite).tolist():
            out[i] = None
        return out


@dataclass(frozen=True, eq=False)
class Rows:
    """Rows held a column at a time: ``columns`` maps each column to its cells, all of one length.

    A sequence of rows (dicts, made as they are read), without a dict per row held (464 bytes each with
    ``--extra``, beside their cells: 37 MB for the 80 000 peaks of a noisy volume); a CSV table is written
    from the columns straight away (:meth:`TableWriter.write`).
    """

    columns: dict[str, list | Rounded]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), ()))

    def __iter__(self) -> Iterator[Row]:
        names = list(self.columns)
        cells = [c.cells() if isinstance(c, Rounded) else c for c in self.columns.values()]
        return (dict(zip(names, row)) for row in zip(*cells))

    def __getitem__(self, index):
        """A row (a dict), or the rows of a slice (:class:`Rows`)."""
        if isinstance(index, slice):
            return Rows({name: cells[index] for name, cells in self.columns.items()})
        return {name: cells[index] for name, cells in self.columns.items()}

    def __eq__(self, other) -> bool:
        """Equal to the same rows, held as :class:`Rows` or as a list of dicts."""
        return isinstance(other, (Rows, list)) and list(self) == list(other)

    __hash__ = None

    def text(self, name: str) -> list:
        """Column ``name`` as a CSV table writes its cells (numbers, or their text; None for an empty cell)."""
        cells = self.columns[name]
        return cells.text() if isinstance(cells, Rounded) else cells


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
#: :data:`DIGITS` as a format spec, built once: a spec nested in an f-string is parsed again for every number,
#: which made the numbers of the SMLM movie's 15 000 rows take twice as long.
_ROUNDED = f".{DIGITS}g"


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
    else:
        value = float(value)
        if math.isfinite(value):  # math, not NumPy: a few rows per input, one call per number
            value = float(format(value, _ROUNDED))
    return value if math.isfinite(value) else None


def numbers(values: np.ndarray) -> list[int | float | None]:
    """:func:`number` of each of ``values`` (any shape, flattened), as a list: one pass per array.

    Examples
    --------
    >>> numbers(np.array([0.1, np.nan], np.float32)), numbers(np.array([254.99999999999997])), numbers(np.uint8([7]))
    ([0.1, None], [255.0], [7])
    """
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind in "biu":
        return values.astype(np.int64).tolist() if values.dtype.kind == "b" else values.tolist()
    if values.dtype.kind != "f":
        return [number(v) for v in values]
    finite = np.isfinite(values).tolist()
    if values.dtype.itemsize < 8:
        # str() of a NumPy float32 is its shortest round-trip repr; Python's float has no such form.
        return [float(str(v)) if ok else None for v, ok in zip(values, finite)]
    rounded = map(float, map(format, values.tolist(), repeat(_ROUNDED)))
    return [v if ok else None for v, ok in zip(rounded, finite)]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return str(value)


def _destination(output: str) -> tuple[str, str]:
    """Where a table goes: ``("stream", output)`` or ``("file", path)``.

    Streams are written straight through: a FIFO, a terminal, ``/dev/stdout``, process substitution. A file
    is the regular file to replace, a symlink's target resolved.
    """
    try:
        mode = os.stat(output).st_mode  # follows symlinks: /dev/stdout, /dev/fd/63 are links to streams
    except FileNotFoundError:
        # A new file, or a dangling link whose target is created.
        return "file", os.path.realpath(output) if os.path.islink(output) else output
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", output)
    if stat.S_ISREG(mode):
        return "file", os.path.realpath(output)
    return "stream", output


def temporary_beside(target: str) -> tuple[int, str]:
    """A new file ``.NAME.XXXXXXXX.tmp`` in ``target``'s folder, opened for writing: ``(descriptor, path)``.

    What ``tempfile.mkstemp`` does (a random name, created exclusively, mode 0600), without importing
    :mod:`tempfile`, which with :mod:`shutil` and :mod:`random` costs a run 4 ms.
    """
    folder, name = os.path.split(target)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL
    for extra in ("O_CLOEXEC", "O_NOINHERIT", "O_BINARY"):  # as mkstemp: not inherited, no newline translation
        flags |= getattr(os, extra, 0)
    for _ in range(100):
        path = os.path.join(folder or ".", f".{name}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", os.path.join(folder, f".{name}.*.tmp"))


class TableWriter:
    """Write rows as they come.

    A regular file appears whole at :meth:`close`: rows go to a temporary file beside it, renamed over it at
    the end (through a symlink, its target is replaced and the link stays). Standard output (``"-"``), FIFOs,
    terminals and other devices are written straight through, flushed after each :meth:`write` call, and
    never replaced. Opening fails at once (``OSError``) where the folder is missing or cannot be written.
    """

    def __init__(self, output: str, fmt: str, columns: tuple[str, ...] = COLUMNS) -> None:
        self.output = output
        self.fmt = fmt
        self.columns = columns
        self._count = 0
        self._tmp: str | None = None
        self._target: str | None = None
        self._own_stream = False
        if output == "-":
            self._stream: IO[str] = sys.stdout
        else:
            kind, target = _destination(output)
            if kind == "stream":
                self._stream = open(output, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
                self._own_stream = True
            else:
                handle, self._tmp = temporary_beside(target)
                self._target = target
                self._stream = os.fdopen(handle, "w", newline="", encoding="utf-8")
        if fmt in ("csv", "tsv"):
            self._line = io.StringIO()
            # "\r\n" as the writer's terminator makes it quote fields holding either character; each line then
            # ends in a plain "\n" (see _write_csv).
            self._csv = csv.writer(self._line, delimiter="," if fmt == "csv" else "\t", lineterminator="\r\n")
            self._write_csv(columns)
        elif fmt == "json":
            self._stream.write("[")

    def _write_csv(self, cells) -> None:
        self._line.seek(0)
        self._line.truncate()
        self._csv.writerow(cells)
        self._stream.write(self._line.getvalue()[:-2] + "\n")

    def write(self, rows: Iterable[Row]) -> None:
        """Append rows (dicts keyed by :data:`COLUMNS`, or :class:`Rows`)."""
        if self.fmt in ("csv", "tsv"):
            if isinstance(rows, Rows):
                for lo in range(0, len(rows), WRITE_BLOCK):
                    block = rows[lo : lo + WRITE_BLOCK]
                    if not self._write_block(zip(*(block.text(c) for c in self.columns)), len(block)):
                        self._write_slowly(block)
                self._flush()
                return
            rows = list(rows)
            if self._write_block(map(operator.itemgetter(*self.columns), rows), len(rows)):
                self._flush()
                return
        self._write_slowly(rows)
        self._flush()

    def _write_block(self, cells: Iterable, count: int) -> bool:
        """Write ``count`` rows of ``cells`` (each row's cells in column order) at once, if they can be.

        False (nothing written) where a cell holds a line break: those rows need :meth:`_write_slowly`.
        """
        self._line.seek(0)
        self._line.truncate()
        # All at once (the csv module writes None as an empty cell, anything else as str() does), then
        # "\r\n" -> "\n", unless a cell holds either character: then row by row, as _write_csv does.
        self._csv.writerows(cells)
        text = self._line.getvalue()
        if text.count("\r") != count or text.count("\n") != count:
            return False
        self._stream.write(text.replace("\r\n", "\n"))
        self._count += count
        return True

    def _write_slowly(self, rows: Iterable[Row]) -> None:
        """Append rows one at a time."""
        for row in rows:
            if self.fmt in ("csv", "tsv"):
                self._write_csv([_cell(row[c]) for c in self.columns])
            else:
                import json

                text = json.dumps({c: row[c] for c in self.columns}, allow_nan=False)
                if self.fmt == "json":
                    self._stream.write(("," if self._count else "") + "\n  " + text)
                else:
                    self._stream.write(text + "\n")
            self._count += 1

    def _flush(self) -> None:
        """A stream's rows out now (a reader waits on them); a file's wait in its buffer until it is closed."""
        if self._tmp is None:
            self._stream.flush()

    def close(self) -> None:
        """Finish the table; for a file, move it into place in one step."""
        if self.fmt == "json":
            self._stream.write("\n]\n" if self._count else "]\n")
        self._stream.flush()
        if self._own_stream:
            self._stream.close()
        if self._tmp is not None:
            self._stream.close()
            try:
                mode = stat.S_IMODE(os.stat(self._target).st_mode)
            except FileNotFoundError:
                mode = 0o666 & ~_umask()
            os.chmod(self._tmp, mode)
            os.replace(self._tmp, self._target)
            self._tmp = None

    def discard(self) -> None:
        """Drop a file table that will not be finished (a stream cannot be taken back)."""
        if self._tmp is not None:
            self._stream.close()
            os.unlink(self._tmp)
            self._tmp = None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def rows(
    path: str | Sequence[str],
    labels: list[str],
    spatial: str,
    peaks: Mapping[str, Any],
    coords: Mapping[str, np.ndarray],
    extra: bool = False,
) -> list[Row] | Rows:
    """Rows of one input, in the contract's order: index (C order), then peak rank, then method.

    A list of dicts for a few rows, else :class:`Rows` (a column at a time).

    Parameters
    ----------
    path : str or sequence of str
        The input as given or as found in a directory; or one per heatmap (single-map inputs located as one
        stack).
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
    paths = [path] * len(labels) if isinstance(path, str) else list(path)
    if sum(int(np.count_nonzero(p.present[: len(labels)])) for p in peaks.values()) < ROWS_BY_COLUMN:
        return list(_each_row(paths, labels, spatial, peaks, coords, extra))
    return _by_column(paths, labels, spatial, peaks, coords, extra)


#: Fewest rows of an input built a column at a time (:func:`_by_column`): 4 us a row instead of 15, but 37 us
#: for the two rows of one PNG against 9 one row at a time.
ROWS_BY_COLUMN = 16


def _each_row(paths, labels, spatial, peaks, coords, extra) -> Iterator[Row]:
    """:func:`rows`, one row at a time (``paths``: one per heatmap)."""
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
                    "path": paths[b],
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
                    error = getattr(found, "error", None)
                    for a in "XYZ":
                        row[f"{a.lower()}_err"] = (
                            number(error[b, rank, axis_of[a]]) if error is not None and a in axis_of else None
                        )
                    split = getattr(found, "split", None)
                    row["split"] = bool(split[b, rank]) if split is not None else False
                yield row


def _by_column(paths, labels, spatial, peaks, coords, extra) -> Rows:
    """:func:`rows`, each column of the input made at once (:func:`numbers`; ``paths``: one per heatmap)."""
    methods = list(peaks)
    axis_of = {a: i for i, a in enumerate(spatial)}
    # Each method's present peaks (heatmap, rank) in C order; ``order`` puts them all in the rows' order.
    found = [np.nonzero(peaks[m].present[: len(labels)]) for m in methods]
    n_peaks = max(p.present.shape[1] for p in peaks.values())
    key = np.concatenate([(b * n_peaks + rank) * len(methods) + k for k, (b, rank) in enumerate(found)])
    rows_order = np.argsort(key, kind="stable")
    order = rows_order.tolist()

    def column(cells_of) -> list:
        """A column in the rows' order, from ``cells_of(method, heatmaps, ranks)``: a list, or None for empty."""
        parts: list = []
        for m, (b, rank) in zip(methods, found):
            got = cells_of(m, b, rank)
            parts += [None] * len(b) if got is None else got
        return [parts[i] for i in order]

    def numeric(values_of) -> list | Rounded:
        """A column of numbers from ``values_of(method, heatmaps, ranks)``: an array, or None for empty cells.

        :class:`Rounded` where every method's are float64 (an empty cell is NaN there, as :func:`numbers`
        writes NaN), else the list of :func:`numbers`.
        """
        parts = [values_of(m, b, rank) for m, (b, rank) in zip(methods, found)]
        if all(p is None or p.dtype == np.float64 for p in parts):
            filled = [np.full(len(b), np.nan) if p is None else p for p, (b, _) in zip(parts, found)]
            return Rounded(np.concatenate(filled)[rows_order]) if filled else []
        return column(lambda m, b, rank: None if (p := parts[methods.index(m)]) is None else numbers(p))

    def per_axis(arrays) -> list[list | Rounded]:
        """The x, y, z columns of ``arrays(method)`` ``(B, P, ndim)`` (None: no such column)."""
        return [
            numeric(
                lambda m, b, rank, a=a: (
                    None if a not in axis_of or arrays(m) is None else np.asarray(arrays(m)[b, rank, axis_of[a]])
                )
            )
            for a in "XYZ"
        ]

    columns = {
        "path": column(lambda m, b, rank: [paths[i] for i in b.tolist()]),
        "index": column(lambda m, b, rank: [labels[i] or None for i in b.tolist()]),
        "peak": column(lambda m, b, rank: (rank + 1).tolist()),
        "method": column(lambda m, b, rank: [m] * len(b)),
        **dict(zip("xyz", per_axis(lambda m: coords[m]))),
        "value": numeric(lambda m, b, rank: np.asarray(peaks[m].values[b, rank])),
    }
    if extra:
        for name in SHAPE_COLUMNS:
            columns[name] = numeric(lambda m, b, rank, name=name: np.asarray(peaks[m].shape[name][b, rank]))
        columns["fallback"] = column(lambda m, b, rank: peaks[m].fallback[b, rank].astype(bool).tolist())
        columns.update(zip(ERROR_COLUMNS, per_axis(lambda m: getattr(peaks[m], "error", None))))
        split = lambda m: getattr(peaks[m], "split", None)  # noqa: E731
        columns["split"] = column(
            lambda m, b, rank: [False] * len(b) if split(m) is None else split(m)[b, rank].astype(bool).tolist()
        )
    return Rows(columns)
