"""Run inputs one after another or across processes, yielding each input's outcome in input order.

A worker reads, locates, builds table rows and writes overlays; only rows, messages and counts travel back
to the parent, which writes the table and shows progress. Process start-up uses ``fork`` where the platform
has it (no re-import); elsewhere, and for a few inputs or a GPU run, everything stays in one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from .errors import PeaklocError
from .inputs import Input
from .pipeline import Located, Options, locate, read_heatmaps
from .table import rows

#: From this many inputs on, a process pool pays for its start-up.
PARALLEL_MIN_INPUTS = 16


@dataclass
class Job:
    """Everything a worker needs for any input of the run."""

    options: Options
    coords: str = "pixel"
    extra: bool = False
    overlays: object | None = None  # overlay.OverlaySettings
    names: dict[str, str] = field(default_factory=dict)
    protected: set[str] = field(default_factory=set)


@dataclass
class Outcome:
    """One input's result: table rows, heatmap count, warnings, and error messages (empty if it succeeded)."""

    path: str
    rows: list[dict] = field(default_factory=list)
    heatmaps: int = 0
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


#: Inputs handed to a worker at once: their single-map integer images are located in one call.
CHUNK = 16


def _read(job: Job, item: Input):
    """``(heatmaps (B, *spatial), layout)`` of one input, or a :class:`PeaklocError`."""
    if item.problem:
        raise PeaklocError(item.problem)
    return read_heatmaps(item.path, job.options.axes)


def _finish(job: Job, path: str, located: Located, outcome: Outcome) -> None:
    """Table rows and overlays of one input's peaks."""
    outcome.warnings = located.warnings
    outcome.heatmaps = located.layout.count
    labels = located.layout.index_labels()
    extras = located.extras if job.extra else None
    outcome.rows = list(rows(path, labels, located.layout.spatial, located.table_peaks(job.coords), extras))
    if job.overlays is not None:
        from .overlay import write_overlays

        try:
            write_overlays(
                job.names[path], path, labels, located.heatmaps, located.overlay_peaks(), job.overlays, job.protected
            )
        except PeaklocError as exc:
            outcome.errors.append(str(exc))


def _part(located: Located, i: int, layout) -> Located:
    """The ``i``-th heatmap of a stack located in one call, as the single-map input it came from."""
    peaks = {m: (c[i : i + 1], v[i : i + 1]) for m, (c, v) in located.peaks.items()}
    extras = {m: {k: a[i : i + 1] for k, a in cols.items()} for m, cols in located.extras.items()}
    present = None if located.present is None else located.present[i : i + 1]
    return Located(located.heatmaps[i : i + 1], layout, peaks, extras, [], present)


def run_chunk(job: Job, items: Sequence[Input]) -> list[Outcome]:
    """Process inputs; single-map integer images of one shape are stacked and located together.

    Stacking is exact: every method works per map. Integer images have no NaN, so no warning of one input
    can be mixed into another's.
    """
    outcomes = [Outcome(item.path) for item in items]
    loaded: dict[int, tuple] = {}
    for k, item in enumerate(items):
        try:
            loaded[k] = _read(job, item)
        except PeaklocError as exc:
            outcomes[k].errors.append(str(exc))
    groups: dict[tuple, list[int]] = {}
    for k, (heatmaps, layout) in loaded.items():
        stackable = layout.count == 1 and heatmaps.dtype.kind in "iub"
        key = (heatmaps.shape, heatmaps.dtype.str, layout.spatial) if stackable else ("alone", k)
        groups.setdefault(key, []).append(k)
    for members in groups.values():
        try:
            if len(members) == 1:
                k = members[0]
                located = locate(loaded[k][0], loaded[k][1], job.options)
                _finish(job, items[k].path, located, outcomes[k])
                continue
            stack = np.concatenate([loaded[k][0] for k in members])
            layout = loaded[members[0]][1]
            together = locate(
                stack, type(layout)("B", (len(members),), layout.spatial, layout.spatial_shape), job.options
            )
            for i, k in enumerate(members):
                _finish(job, items[k].path, _part(together, i, loaded[k][1]), outcomes[k])
        except PeaklocError as exc:
            for k in members:
                outcomes[k].errors.append(str(exc))
    return outcomes


_JOB: Job | None = None


def _init_worker(job: Job) -> None:
    global _JOB
    _JOB = job
    from .backends import _numpy

    # One process per core already: threads inside a worker would only compete with the other workers.
    _numpy.PARALLEL_MIN_ELEMENTS = float("inf")


def _run_in_worker(items: Sequence[Input]) -> list[Outcome]:
    return run_chunk(_JOB, items)


def workers_for(count: int, options: Options) -> int:
    """How many processes to use: one for few inputs or a GPU run, else one per core (at most 8)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if count < PARALLEL_MIN_INPUTS or options.device != "cpu" or cores < 2:
        return 1
    return min(cores, 8, count)


@contextmanager
def outcomes(job: Job, items: Sequence[Input]) -> Iterator[Iterator[Outcome]]:
    """Context giving each input's outcome, in input order; in a process pool when that pays.

    The pool is forked on entering, before the caller starts anything with threads of its own (a progress
    bar): forking a process that runs other threads can deadlock the children.
    """
    workers = workers_for(len(items), job.options)
    chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
    if workers == 1:
        yield (outcome for chunk in chunks for outcome in run_chunk(job, chunk))
        return
    import multiprocessing

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with context.Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
        # imap keeps input order; results are rows, so the ones waiting for their turn stay small.
        yield (outcome for done in pool.imap(_run_in_worker, chunks) for outcome in done)
