"""Run inputs one after another or across processes, yielding each input's outcome in input order.

A worker reads, locates, builds table rows and writes overlays; only rows, messages and counts travel back
to the parent, which writes the table and shows progress. Process start-up uses ``fork`` where the platform
has it (no re-import); elsewhere, and for a few inputs or a GPU run, everything stays in one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import PeaklocError
from ..io.axes import Layout
from ..io.inputs import Input
from ..output.table import rows
from .locate import Located, locate, read_heatmaps
from .settings import Settings

#: From this many inputs on, a process pool pays for its start-up.
PARALLEL_MIN_INPUTS = 16
#: Inputs handed to a worker at once: their single-map integer images are located in one call.
CHUNK = 16


@dataclass(frozen=True)
class Job:
    """Everything a worker needs for any input of the run: the settings and the overlay file names."""

    settings: Settings
    overlay_names: dict[str, str] = field(default_factory=dict)
    protected: frozenset[str] = frozenset()


@dataclass
class Outcome:
    """One input's result: table rows, heatmap count, warnings, and error messages (empty if it succeeded)."""

    path: str
    rows: list[dict] = field(default_factory=list)
    heatmaps: int = 0
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _read(job: Job, item: Input) -> tuple[np.ndarray, Layout]:
    """``(heatmaps (B, *spatial), layout)`` of one input, or a :class:`PeaklocError`."""
    if item.problem:
        raise PeaklocError(item.problem)
    return read_heatmaps(item.path, job.settings.axes)


def _finish(job: Job, path: str, located: Located, outcome: Outcome) -> None:
    """Table rows, warnings and overlays of one input's peaks."""
    settings = job.settings
    outcome.warnings = located.warnings()
    outcome.heatmaps = located.layout.count
    labels = located.layout.index_labels()
    outcome.rows = list(
        rows(path, labels, located.layout.spatial, located.peaks, located.table_coords(settings.coords), settings.extra)
    )
    if settings.overlay is not None:
        from ..output.overlay_files import write_overlays

        try:
            write_overlays(
                job.overlay_names[path],
                path,
                labels,
                located.heatmaps,
                located.overlay_peaks(),
                settings.overlay,
                job.protected,
            )
        except PeaklocError as exc:
            outcome.errors.append(str(exc))


def _locate_one(job: Job, item: Input, loaded: tuple[np.ndarray, Layout], outcome: Outcome) -> None:
    try:
        _finish(job, item.path, locate(loaded[0], loaded[1], job.settings), outcome)
    except PeaklocError as exc:
        outcome.errors.append(str(exc))


def run_chunk(job: Job, items: Sequence[Input]) -> list[Outcome]:
    """Process inputs; single-map integer images of one shape are stacked and located together.

    Stacking changes no number: every method works per map (the tests hold every method to that). A stack
    that fails as a whole is located again input by input, so that one input's failure stays its own.
    """
    outcomes = [Outcome(item.path) for item in items]
    loaded: dict[int, tuple[np.ndarray, Layout]] = {}
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
        if len(members) > 1:
            layout = loaded[members[0]][1]
            stack = np.concatenate([loaded[k][0] for k in members])
            stacked = Layout("B", (len(members),), layout.spatial, layout.spatial_shape)
            try:
                together = locate(stack, stacked, job.settings)
            except PeaklocError:
                pass  # located one by one below, where each input's own error is its own
            else:
                for i, k in enumerate(members):
                    _finish(job, items[k].path, together.part(i, loaded[k][1]), outcomes[k])
                continue
        for k in members:
            _locate_one(job, items[k], loaded[k], outcomes[k])
    return outcomes


_JOB: Job | None = None


def _init_worker(job: Job) -> None:
    global _JOB
    _JOB = job


def _run_in_worker(items: Sequence[Input]) -> list[Outcome]:
    return run_chunk(_JOB, items)


def workers_for(count: int, settings: Settings) -> int:
    """How many processes to use: one for few inputs or a GPU run, else one per core (at most 8)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if count < PARALLEL_MIN_INPUTS or settings.device != "cpu" or cores < 2:
        return 1
    return min(cores, 8, count)


@contextmanager
def outcomes(job: Job, items: Sequence[Input]) -> Iterator[Iterator[Outcome]]:
    """Context giving each input's outcome, in input order; in a process pool when that pays.

    The pool is forked on entering, before the caller starts anything with threads of its own (a progress
    bar): forking a process that runs other threads can deadlock the children.
    """
    workers = workers_for(len(items), job.settings)
    chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
    if workers == 1:
        yield (outcome for chunk in chunks for outcome in run_chunk(job, chunk))
        return
    import multiprocessing

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    # One process per core already: threads inside a worker would only compete with the other workers.
    pooled = replace(job, settings=replace(job.settings, threads=1))
    with context.Pool(workers, initializer=_init_worker, initargs=(pooled,)) as pool:
        # imap keeps input order; results are rows, so the ones waiting for their turn stay small.
        yield (outcome for done in pool.imap(_run_in_worker, chunks) for outcome in done)
