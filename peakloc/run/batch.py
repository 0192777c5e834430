"""Run inputs one after another or across processes, yielding each input's outcome in input order.

A worker reads, locates, builds table rows and writes overlays; only rows, messages and counts travel back
to the parent, which writes the table and shows progress. Process start-up uses ``fork`` where the platform
has it (no re-import); elsewhere, and for a few inputs or a GPU run, everything stays in one process.

Every input fails alone: whatever goes wrong while one input is read, located or drawn (any exception,
``MemoryError`` included) becomes that input's one-line error, and the others go on. An exception that is
not a :class:`~peakloc.errors.PeaklocError` nor a decoder's is peakloc's own bug and says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from ..backends import numpy_backend
from ..errors import PeaklocError
from ..io.axes import Layout
from ..io.inputs import Input
from ..io.remote import is_url
from ..output.table import Rows, rows
from .capture import captured
from .locate import Located, locate, read_heatmaps
from .settings import Settings
from .spread import budget_left, helper_count, helpers, kill_children, locate_spread, quiet_child, spread_over

if TYPE_CHECKING:
    from ..ops.streaming import Slabs

#: From this many inputs on, a process pool pays for its start-up.
PARALLEL_MIN_INPUTS = 16
#: Inputs handed to a worker at once (at least; more for many inputs, see :func:`chunk_size`): their
#: single-map integer images are located in one call.
CHUNK = 16
#: Up to this many when there are enough inputs: a Gaussian fit's iterations cost the same for a stack of 64
#: tiny maps as for 256 (10000 PNG 16x16 with -m gaussian: 2.85 s in chunks of 64, 2.49 s of 256, 2.77 s of
#: 512, 3.34 s of 1024, where fewer chunks balance worse between workers).
MAX_CHUNK = 256
#: Most bytes of small images a worker holds to stack them (see :func:`run_chunk`).
STACK_BYTES = 64 * 1024**2

T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    """Everything a worker needs for any input of the run.

    Attributes
    ----------
    settings : Settings
    overlay_names : dict
        Input path -> its overlays' base name.
    protected : frozenset of str
        Real paths of the inputs, which no overlay may replace.
    debug : bool
        Keep each failure's traceback (``--debug``).
    reraise : bool
        Let peakloc's own bugs raise instead of becoming an input's error: the test suite's setting.
    cwd : str, optional
        The folder relative input paths name files in, where that is not this process's working folder (a
        cluster's workers); rows and messages keep the paths as given.
    """

    settings: Settings
    overlay_names: dict[str, str] = field(default_factory=dict)
    protected: frozenset[str] = frozenset()
    debug: bool = False
    reraise: bool = False
    cwd: str | None = None


@dataclass
class Outcome:
    """One input's result.

    Table rows, heatmap count, warnings, error messages (empty if it succeeded), and with ``debug`` the
    traceback of its failure.
    """

    path: str
    rows: list[dict] | Rows = field(default_factory=list)
    heatmaps: int = 0
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    traceback: str = ""
    #: File names of the overlays written (in the overlay folder).
    overlays: list[str] = field(default_factory=list)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


def failure(exc: BaseException) -> str:
    """The one-line reason of an input's failure."""
    if isinstance(exc, PeaklocError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory; lower --max-memory so that such inputs fail before they are decoded"
    return f"internal error ({type(exc).__name__}: {_first_line(exc)}); please report it with --debug"


def _attempt(job: Job, outcome: Outcome, work: Callable[[], T]) -> T | None:
    """``work()``, or None with the failure recorded as ``outcome``'s one-line error (and traceback)."""
    try:
        return work()
    except Exception as exc:
        if job.reraise and not isinstance(exc, (PeaklocError, MemoryError)):
            raise
        outcome.errors.append(failure(exc))
        if job.debug:
            import traceback

            outcome.traceback = traceback.format_exc()
    return None


def _noted(outcome: Outcome, notes: list[str]) -> None:
    """What libraries said about an input becomes its warnings, unless it failed (its error says enough)."""
    if not outcome.errors:
        outcome.warnings.extend(n for n in notes if n not in outcome.warnings)


def _local(job: Job, path: str) -> str:
    """An input's path where this process runs (a cluster worker resolves it against the client's folder)."""
    return path if job.cwd is None or is_url(path) else os.path.join(job.cwd, path)


def _read(job: Job, item: Input, budget: int | None) -> tuple[np.ndarray, Layout]:
    """``(heatmaps (B, *spatial), layout)`` of one input, or a :class:`PeaklocError`."""
    if item.problem:
        raise PeaklocError(item.problem)
    return read_heatmaps(_local(job, item.path), job.settings, budget)


def _finish(job: Job, path: str, located: Located, outcome: Outcome) -> None:
    """Table rows, warnings and overlays of one input's peaks."""
    settings = job.settings
    outcome.warnings.extend(located.warnings())
    outcome.heatmaps = located.layout.count
    labels = located.layout.index_labels()
    outcome.rows = rows(
        path, labels, located.layout.spatial, located.peaks, located.table_coords(settings.coords), settings.extra
    )
    if settings.overlay is not None:
        from ..io.spacing import voxel_size
        from ..output.overlay_files import write_overlays

        spatial, given = located.layout.spatial, settings.overlay.spacing
        # The file's own voxel size, unless --spacing gives every axis.
        found = voxel_size(_local(job, path), spatial) if len(spatial) > (len(given) if given else 1) else None
        outcome.overlays = [
            os.path.basename(name)
            for name in write_overlays(
                job.overlay_names[path],
                path,
                labels,
                located.heatmaps,
                located.overlay_peaks(),
                settings.overlay,
                job.protected,
                settings.overlay.spacing_for(len(spatial), found),
                lower_maxima(located, settings),
            )
        ]


#: Overlays ring at most this many local maxima ranked below the peaks asked for (at least 100, or 4 per peak).
MOST_LOWER_MAXIMA = 2000


def lower_maxima(located: Located, settings: Settings) -> list[np.ndarray] | None:
    """Per heatmap, the local maxima ranked just below the table's peaks, ``(Q, ndim)``, for overlays.

    Found with the run's ``min_distance`` and threshold. None unless the run looks for peaks (``--peaks``
    above 1 or a ``--threshold``), or where the heatmaps are read in pieces.
    """
    if not settings.finds_peaks or not isinstance(located.heatmaps, np.ndarray):
        return None
    from ..ops.api import find_peaks

    ndim = len(located.layout.spatial)
    more = min(MOST_LOWER_MAXIMA, max(100, 4 * settings.peaks))
    # A stack (B, *spatial): one array of candidates per heatmap.
    found = find_peaks(
        located.heatmaps,
        ndim=ndim,
        num_peaks=settings.peaks + more,
        min_distance=settings.min_distance,
        threshold=settings.threshold,
    )
    marked = next(iter(located.peaks.values()), None)
    out = []
    for b, candidates in enumerate(found):
        candidates = np.asarray(candidates, dtype=np.float64).reshape(-1, ndim)
        if marked is not None and len(candidates):
            kept = marked.coords[b][marked.present[b]]
            if len(kept):
                # Not one of the marked peaks: farther than min_distance (Chebyshev) from each.
                near = (
                    np.abs(candidates[:, None, :] - kept[None, :, :]).max(axis=2) < settings.min_distance + 0.5
                ).any(axis=1)
                candidates = candidates[~near]
        out.append(candidates[:more])
    return out


def _locate(job: Job, heatmaps, layout: Layout, budget: int | None, slabs, pool, notes: list[str]) -> Located:
    """:func:`~peakloc.run.locate.locate`, on ``pool``'s helper processes where that pays (:mod:`.spread`)."""
    groups = spread_over(pool, heatmaps, job.settings, budget)
    if groups:
        return locate_spread(pool, groups, heatmaps, layout, job.settings, notes)
    # One map, or few: the helpers take batches of its fits instead.
    with numpy_backend.sharing(pool):
        return locate(heatmaps, layout, job.settings, budget, slabs)


def _one(
    job: Job, item: Input, loaded: tuple, outcome: Outcome, budget: int | None, slabs: Slabs | None, pool=None
) -> None:
    """Locate one input and finish it.

    In pieces within ``budget``, its slabs on ``slabs``, where it was opened so; its maps on ``pool``'s
    helpers, where that pays.
    """
    with captured() as notes:

        def work() -> None:
            _finish(job, item.path, _locate(job, loaded[0], loaded[1], budget, slabs, pool, notes), outcome)

        _attempt(job, outcome, work)
    _noted(outcome, notes)


def run_chunk(
    job: Job, items: Sequence[Input], budget: int | None = None, slabs: Slabs | None = None, pool=None
) -> list[Outcome]:
    """Process inputs, each failing alone; single-map integer images of one shape are stacked and located together.

    Stacking changes no number: every method works per map (the tests hold every method to that). A stack
    that fails as a whole is located again input by input, so that one input's failure stays its own.
    ``budget`` is this process's share of the memory budget, in bytes; ``slabs`` runs the passes over the
    slabs of inputs read in pieces (default: threads of this process); ``pool`` holds helper processes that
    locate groups of a stack's maps (:mod:`.spread`).
    """
    outcomes = [Outcome(item.path) for item in items]
    loaded: dict[int, tuple[np.ndarray, Layout]] = {}
    waiting: dict[tuple, list[int]] = {}
    # Inputs wait to be stacked only while they are small together; any other input is located as soon as it
    # is read, so that a chunk holds one input's heatmaps at a time, not the whole chunk's.
    limit = STACK_BYTES if budget is None else min(STACK_BYTES, budget // 4)
    held = 0

    def flush() -> None:
        for members in waiting.values():
            if len(members) < 2 or not _stacked(job, items, loaded, members, outcomes, pool):
                for k in members:
                    _one(job, items[k], loaded[k], outcomes[k], budget, slabs, pool)
            for k in members:
                del loaded[k]
        waiting.clear()

    for k, item in enumerate(items):
        with captured() as notes:
            found = _attempt(job, outcomes[k], lambda item=item: _read(job, item, budget))
        _noted(outcomes[k], notes)
        if found is None:
            continue
        heatmaps, layout = found
        if not (isinstance(heatmaps, np.ndarray) and layout.count == 1 and heatmaps.dtype.kind in "iub"):
            _one(job, item, found, outcomes[k], budget, slabs, pool)
            continue
        loaded[k] = found
        waiting.setdefault((heatmaps.shape, heatmaps.dtype.str, layout.spatial), []).append(k)
        held += heatmaps.nbytes
        if held > limit:
            flush()
            held = 0
    flush()
    return outcomes


def _stacked(job: Job, items, loaded, members: list[int], outcomes: list[Outcome], pool=None) -> bool:
    """Locate single-map inputs of one shape in one call; False (nothing recorded) if the stack fails.

    Without overlays, every input's rows are built at once too (:func:`_rows_each`); an input with warnings
    gets them from its own part of the stack, as it would alone.
    """
    layout = loaded[members[0]][1]
    try:
        with captured() as notes:
            stack = np.concatenate([loaded[k][0] for k in members])
            stacked = Layout("B", (len(members),), layout.spatial, layout.spatial_shape)
            together = _locate(job, stack, stacked, None, None, pool, notes)
            made = None if job.settings.overlay is not None else _rows_each(job, items, loaded, members, together)
    except Exception:  # noqa: BLE001 - located again one by one, where each failure is its own
        return False
    if made is not None:
        warned = together.warned()
        for i, k in enumerate(members):
            outcomes[k].rows, outcomes[k].heatmaps = made[i], loaded[k][1].count
            if warned[i]:
                outcomes[k].warnings.extend(together.part(i, loaded[k][1]).warnings())
            _noted(outcomes[k], notes)
        return True
    for i, k in enumerate(members):
        with captured() as own:
            _attempt(
                job,
                outcomes[k],
                lambda i=i, k=k: _finish(job, items[k].path, together.part(i, loaded[k][1]), outcomes[k]),
            )
        _noted(outcomes[k], notes + own)
    return True


def _rows_each(job: Job, items, loaded, members: list[int], together: Located) -> list[list[dict]]:
    """Each stacked input's table rows, built for the whole stack at once (a column at a time).

    The rows :func:`_finish` gives each input alone: each heatmap keeps its input's path and index label.
    """
    settings = job.settings
    labels = [label for k in members for label in loaded[k][1].index_labels()]
    coords = together.table_coords(settings.coords)
    paths = [items[k].path for k in members]
    # As dicts: each input's few rows are written on their own, where a column at a time costs more per call.
    made = list(rows(paths, labels, together.layout.spatial, together.peaks, coords, settings.extra))
    ends = np.cumsum(sum(np.count_nonzero(p.present, axis=1) for p in together.peaks.values())).tolist()
    return [made[a:b] for a, b in zip([0, *ends[:-1]], ends)]


_JOB: Job | None = None
_BUDGET: int | None = None


def _init_worker(job: Job, budget: int | None, parent: int | None = None) -> None:
    global _JOB, _BUDGET
    _JOB, _BUDGET = job, budget
    quiet_child(parent)


def _run_in_worker(items: Sequence[Input]) -> list[Outcome]:
    return run_chunk(_JOB, items, _BUDGET)


def chunk_size(count: int, workers: int, most: int = MAX_CHUNK, per_worker: int = 4) -> int:
    """Inputs per chunk: :data:`CHUNK` at least, up to ``most`` while each worker still gets ``per_worker``.

    Larger stacks of small images pay their fixed costs (a Gaussian fit's iterations) over more maps; enough
    chunks per worker let the last ones finish close together.
    """
    return max(CHUNK, min(most, count // (per_worker * max(1, workers))))


def workers_for(count: int, settings: Settings) -> int:
    """How many processes to use: one for few inputs or a GPU run, else one per core (at most 8)."""
    cores = numpy_backend.cores()
    if count < PARALLEL_MIN_INPUTS or settings.device != "cpu" or cores < 2:
        return 1
    return min(cores, 8, count)


@contextmanager
def outcomes(job: Job, items: Sequence[Input], client=None) -> Iterator[Iterator[Outcome]]:
    """Context giving each input's outcome, in input order; in a process pool when that pays.

    The pool is forked on entering, before the caller starts anything with threads of its own (a progress
    bar): forking a process that runs other threads can deadlock the children. With a pool, each worker
    gets an equal share of the memory budget. With a ``distributed.Client``, the inputs run on its cluster
    instead (:func:`peakloc.run.cluster.outcomes_on`).
    """
    if client is not None:
        from .cluster import outcomes_on

        with outcomes_on(client, job, items) as results:
            yield results
        return
    workers = workers_for(len(items), job.settings)
    size = chunk_size(len(items), workers)
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    budget = job.settings.max_memory
    if workers == 1:
        # Few inputs: the other cores help with the maps of each (:mod:`.spread`), out of the same budget.
        count = helper_count(items, job.settings, budget)
        left = budget_left(budget, count)
        with helpers(count) as pool:
            yield (outcome for chunk in chunks for outcome in run_chunk(job, chunk, left, pool=pool))
        return
    import multiprocessing

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    # One process per core already: threads inside a worker would only compete with the other workers.
    pooled = replace(job, settings=replace(job.settings, threads=1))
    share = None if budget is None else budget // workers
    pool = context.Pool(workers, initializer=_init_worker, initargs=(pooled, share, os.getpid()))
    try:
        # imap keeps input order; results are rows, so the ones waiting for their turn stay small.
        yield (outcome for done in pool.imap(_run_in_worker, chunks) for outcome in done)
    except BaseException:
        # A signal or an error in the parent: the workers are killed, not joined (Pool.terminate could wait
        # forever); the caller ends the process without the pool's exit handlers (see peakloc.cli).
        kill_children()
        raise
    pool.terminate()
