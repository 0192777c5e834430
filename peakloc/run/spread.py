"""One input's heatmaps located on helper processes, a group of maps each, where a run has cores to spare.

A run of a few inputs has no process pool (:mod:`.batch` starts one from
:data:`~peakloc.run.batch.PARALLEL_MIN_INPUTS` inputs on), so one process did all the work of a stack of many
maps (an SMLM movie, a batch of pose heatmaps) while the other cores idled: the peak finding and the fits run
in Python a group of peaks at a time, and threads would wait for each other's turn at the interpreter. Here,
helper processes locate groups of the stack's maps and send back only the peaks.

The numbers do not change: every method works per map (``tests/ops/test_batch_invariance.py`` holds every
method to that), so groups located apart give the table of the whole stack located at once, byte for byte.

The helpers are forked when the run starts, before any input is read and before the progress bar's thread:
they are small (the interpreter and NumPy), and a fork then copies no heatmap and no lock that another thread
holds. This process locates groups too: each process takes the next group left when it is free. Each group
goes to its helper pickled; a helper that dies (out of memory) breaks the pool, and the input is then located
in this process, as are the inputs after it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from ..backends import numpy_backend
from ..io.axes import Layout
from ..io.inputs import Input
from ..io.remote import is_url
from .budget import needed
from .capture import captured
from .locate import Located, concatenate, locate, regular_size
from .settings import REFINE_METHODS, Settings

#: Inputs that hold fewer bytes on disk, together, get no helpers: forking them would cost more than it saves.
MIN_INPUT_BYTES = 4 << 20
#: Fewest heatmap values of an input whose maps are spread over the helpers (an SMLM movie of 1000 frames of
#: 128x128 holds 16 Mi).
MIN_VALUES = 1 << 20
#: Groups per process. One: a group's fits cost about 0.15 s whatever its size (their iterations run over
#: chunks of peaks), so the SMLM movie's 1000 frames took 2.05 s in 2 groups on 2 cores, 2.8 s in 8.
GROUPS_PER_PROCESS = 1
#: Anonymous memory of a helper before it gets a group (the interpreter, NumPy and peakloc: 22 MiB
#: measured), set aside from the budget.
HELPER_BYTES = 48 << 20
#: Smallest budget a run starts helpers under (they and the heap's pad take 112 MiB of it on 2 cores).
MIN_BUDGET = 1 << 30


def worth_helpers(settings: Settings) -> bool:
    """Whether ``settings`` ask for per-map work (local maxima, sub-pixel fits) that pays for helper processes."""
    if settings.device != "cpu":
        return False
    return settings.finds_peaks or any(m in REFINE_METHODS for m in settings.methods)


def helper_count(items: Sequence[Input], settings: Settings, budget: int | None = None) -> int:
    """Helper processes for a run of ``items`` in this process, within ``budget`` bytes: 0 where none pays.

    Else one per core beside this process's (which locates groups too), at most 7; none under a budget
    below :data:`MIN_BUDGET`.
    """
    stored = sum(regular_size(item.path) or 0 for item in items if not item.problem and not is_url(item.path))
    if not worth_helpers(settings) or stored < MIN_INPUT_BYTES:
        return 0
    if budget is not None and budget < MIN_BUDGET:
        return 0
    return min(numpy_backend.cores(), 8) - 1


def budget_left(budget: int | None, count: int) -> int | None:
    """What a run's inputs may use of ``budget`` beside ``count`` helpers and the heap's pad (none without)."""
    if budget is None or count < 1:
        return budget
    return budget - count * HELPER_BYTES - HEAP_PAD


#: Free memory glibc's allocator keeps at the top of its heap (``M_TOP_PAD``) in a run's processes.
HEAP_PAD = 64 << 20


#: glibc's ``mallopt`` parameters (``malloc.h``).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def keep_heap_pad(pad: int = HEAP_PAD) -> bool:
    """Have glibc's ``malloc`` keep ``pad`` bytes of freed memory at the top of its heap; False where it cannot.

    The fits allocate and free arrays of a few MB thousands of times; by default the heap is trimmed back to
    the system after them and its pages are faulted in again at the next: 0.7-0.9 s of system time in the
    dense volume's 4.2 s (``MALLOC_TOP_PAD_=64MiB``: 0.3 s, and 0.2-0.4 s less in all; its peak RSS the
    same). Peak memory grows by at most ``pad``, pages that later arrays reuse, which :func:`budget_left`
    sets aside. A small pad is worse than none (setting it turns off glibc's adaptive mmap threshold:
    16 MiB gave 1.8 s of system time, 128 KiB 5.4 s), so runs whose budget cannot spare 64 MiB get none
    (:func:`helper_count`). glibc only (Linux).
    """
    set_option = mallopt()
    return set_option is not None and bool(set_option(M_TOP_PAD, int(pad)))


def mallopt():
    """The C library's ``mallopt`` (glibc), or None: not Linux, or not glibc (musl has none)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


def quiet_child(parent: int | None) -> None:
    """A worker's signals: the parent handles ^C, SIGTERM and SIGHUP and then ends its workers.

    A worker dies quietly (SIGTERM's default), never with a KeyboardInterrupt traceback of its own, and on
    Linux the kernel kills it when ``parent`` ends: a pool replaces a worker that a signal killed, and one
    forked in the instant before the parent exits would outlive it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if parent is None or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before the request was made
        os._exit(0)


def _start_helper(parent: int) -> None:
    """A helper's start: its signals, and the modules that locate maps imported while the parent reads them."""
    quiet_child(parent)
    import cv2  # noqa: F401 - the local maxima's labelling

    from ..ops import peaks, subpixel  # noqa: F401


def kill_children() -> None:
    """Kill this process's worker processes at once (a signal or an error in the parent): never joined.

    A worker that the same signal ended may hold a queue's lock, and joining would wait for it forever.
    """
    import multiprocessing

    for child in multiprocessing.active_children():
        child.kill()


@contextmanager
def helpers(count: int) -> Iterator[numpy_backend.Helpers | None]:
    """``count`` helper processes, forked now (or None for 0), ended when the block ends."""
    if count < 1:
        yield None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if "fork" not in multiprocessing.get_all_start_methods():
        yield None  # a fresh interpreter per helper costs more than a run of a few inputs saves
        return
    from threadpoolctl import threadpool_limits

    keep_heap_pad()  # before the fork: the helpers inherit it

    # One BLAS thread in every process: with a process per core, OpenBLAS's own threads, spinning after each
    # call, took the other process's core (the dense volume's joint fits shared over 2 processes took 2.1 s
    # instead of 0.9 s). Set before the fork, the helpers inherit it.
    limits = threadpool_limits(1, user_api="blas")
    pool = ProcessPoolExecutor(count, multiprocessing.get_context("fork"), _start_helper, (os.getpid(),))
    try:
        # With fork, the first task starts every helper: now, while this process is small and has no thread.
        # Not waited for: the helpers import what they need while this process reads the first input.
        pool.submit(int)
        yield numpy_backend.Helpers(pool, count)
    except BaseException:
        kill_children()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        limits.restore_original_limits()
    pool.shutdown(wait=True, cancel_futures=True)


def spread_over(pool: numpy_backend.Helpers | None, heatmaps, settings: Settings, budget: int | None) -> int:
    """Groups to split ``heatmaps`` into on ``pool``'s helpers; 0 to locate them here.

    Only an in-memory stack of at least :data:`MIN_VALUES` values and two maps per helper, whose copies in the
    helpers (its own size again, and their interpreters) still fit ``budget``.
    """
    if pool is None or not isinstance(heatmaps, np.ndarray) or not worth_helpers(settings):
        return 0
    helpers = pool.count
    processes = helpers + 1  # this one takes groups too
    if len(heatmaps) < 2 * processes or heatmaps.size < MIN_VALUES:
        return 0
    if budget is not None and needed(2 * heatmaps.nbytes, heatmaps.size, settings) + helpers * HELPER_BYTES > budget:
        return 0
    return min(len(heatmaps), GROUPS_PER_PROCESS * processes)


def _located_group(part: tuple[np.ndarray, Layout, Settings]) -> tuple[Located, list[str]]:
    """A group's peaks (without its heatmaps, which the parent holds) and what libraries said."""
    heatmaps, layout, settings = part
    with captured() as notes:
        located = locate(heatmaps, layout, settings)
    return replace(located, heatmaps=None), notes


def locate_spread(
    pool: numpy_backend.Helpers, groups: int, heatmaps: np.ndarray, layout: Layout, settings: Settings, notes: list[str]
) -> Located:
    """:func:`~peakloc.run.locate.locate` of an in-memory stack ``(B, *spatial)`` on ``pool``'s helpers.

    Its maps go in ``groups`` groups of consecutive maps; what libraries said there joins ``notes``.

    Where a group fails (a map without a finite value, a helper that died), the whole stack is located here
    instead, so that the error is the one a run without helpers gives.
    """
    # One process per core: threads of their own would only compete with each other.
    one = replace(settings, threads=1)
    bounds = np.linspace(0, len(heatmaps), groups + 1).round().astype(int)
    parts = [
        (heatmaps[a:b], Layout("B", (b - a,), layout.spatial, layout.spatial_shape), one)
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    try:
        done = numpy_backend.share(pool, _located_group, parts)
    except Exception:  # noqa: BLE001 - located again here (also once a helper died: BrokenProcessPool)
        return locate(heatmaps, layout, settings)
    for _, said in done:
        notes.extend(said)
    return concatenate([part for part, _ in done], heatmaps, layout, settings)
