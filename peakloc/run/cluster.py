"""Runs on a Dask cluster (``peakloc find --dask ADDRESS``): Dask schedules, peakloc only submits and collects.

- **Inputs** go to the workers in chunks (:func:`~peakloc.run.batch.chunk_size`) as tasks
  (:func:`run_chunk_task`, which is :func:`peakloc.run.batch.run_chunk`: each input fails alone), a bounded
  number in flight. Workers read the files themselves and write the overlays; only rows, messages and
  counts come back, and :func:`outcomes_on` gives them in input order.
- **An input larger than the memory budget** is located by the task that holds it; its passes over slabs
  (extremes, soft-argmax sums, local-maximum candidates) are tasks of their own (:class:`ClusterSlabs`),
  each worker opening the input again (:class:`~peakloc.run.locate.Source`) and reading its slab.
- **Faults**: Dask runs again the tasks of a worker that died. A chunk whose tasks killed workers too often
  (Dask's ``KilledWorker``) runs again input by input, so that only the input that kills workers fails. A
  scheduler that cannot be reached, or that goes away, is a :class:`ClusterError`.

Nothing here is imported unless a cluster is asked for: Dask's import costs a second.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from ..backends import numpy_backend
from ..errors import PeaklocError
from ..ops.streaming import Slabs
from .batch import Job, Outcome, chunk_size, failure, run_chunk
from .spread import HEAP_PAD, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, MIN_BUDGET, mallopt

if TYPE_CHECKING:
    from distributed import Client

    from ..io.inputs import Input
    from ..ops.lazy import Maps
    from .locate import Source

#: Seconds to wait for the scheduler before giving up (the whole start stays within 15 s).
CONNECT_TIMEOUT = 10
#: Chunk tasks submitted and not yet given out, per worker thread (and at least): enough to keep every
#: thread busy while one slow chunk holds the others' results back, few enough to stream.
IN_FLIGHT_PER_THREAD = 8
MIN_IN_FLIGHT = 32
#: Most inputs in one task, and tasks per worker thread to aim at (see :func:`~peakloc.run.batch.chunk_size`).
MAX_CHUNK = 256
CHUNKS_PER_THREAD = 8
#: Inputs (their stacks read in pieces) a worker process keeps open for the slab tasks that read them.
OPEN_INPUTS = 8

#: Tries of an input run alone after its chunk killed workers.
ISOLATED_TRIES = 2
#: The error of an input whose tasks killed the workers that ran them, every try.
KILLED = "killed every Dask worker that read it (out of memory, or a crash)"

_ADDRESS = re.compile(r"^(\w+://)?[\w.\-]+:\d+$|^\w+://.+$|^\[[0-9a-fA-F:]+\]:\d+$")


class ClusterError(PeaklocError):
    """The cluster cannot be used: the scheduler is unreachable, or went away mid-run."""


#: Loggers of Dask's client and of the Tornado loop under it: a lost scheduler had Tornado log a
#: connection reset on stderr, beside the run's own one-line error.
DASK_LOGGERS = ("distributed", "tornado")


def quiet_dask_logs() -> None:
    """Silence Dask's and Tornado's log lines below CRITICAL: the run reports what goes wrong itself.

    Dask sets levels on some of their loggers (``tornado.application``: ERROR), so each is quietened, not
    only their parents.
    """
    for name in [*DASK_LOGGERS, *logging.root.manager.loggerDict]:
        if name.split(".")[0] in DASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)


def connect(address: str, timeout: float = CONNECT_TIMEOUT) -> Client:
    """A client of the scheduler at ``address``: ``tcp://host:port`` (or ``host:port``), or a scheduler file.

    Raises :class:`ClusterError` naming the address within about ``timeout`` seconds when it cannot be reached.
    """
    import dask
    from distributed import Client

    quiet_dask_logs()
    with dask.config.set({"distributed.comm.timeouts.connect": f"{timeout}s"}):
        try:
            if os.path.isfile(address):
                return Client(scheduler_file=address, timeout=timeout, set_as_default=False)
            if not _ADDRESS.match(address):
                raise ClusterError(f"{address} is neither a scheduler address (tcp://host:port) nor a scheduler file")
            return Client(address, timeout=timeout, set_as_default=False)
        except ClusterError:
            raise
        except (OSError, TimeoutError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClusterError(f"cannot reach the Dask scheduler at {address} ({reason})") from None


def _worker_share(budget: int | None) -> tuple[int | None, int]:
    """The share of the memory budget of one thread of this worker, and the NumPy threads one task may use."""
    from distributed import get_worker

    worker = get_worker()
    nthreads = max(1, int(getattr(worker, "nthreads", 0) or worker.state.nthreads))
    return (None if budget is None else budget // nthreads), max(1, numpy_backend.cores() // nthreads)


def _same(job: Job) -> Job:
    return job


def run_chunk_task(job: Job, items: Sequence[Input], budget: int | None) -> list[Outcome]:
    """:func:`~peakloc.run.batch.run_chunk` on a worker, with its share of ``budget`` and its slabs as tasks.

    The heap keeps freed memory while it runs (:func:`heap_kept`), out of the budget.
    """
    with heap_kept(budget is None or budget >= MIN_BUDGET) as kept:
        share, threads = _worker_share(budget if budget is None or not kept else budget - HEAP_PAD)
        job = replace(job, settings=replace(job.settings, threads=threads))
        return run_chunk(job, items, share, ClusterSlabs(threads))


#: glibc's mmap threshold where nothing set it (``DEFAULT_MMAP_THRESHOLD_MIN``).
_MMAP_THRESHOLD = 128 << 10
#: Arrays up to this size come from the heap while :func:`heap_kept` holds (glibc's largest, 64-bit).
HEAP_ARRAYS = 32 << 20
_heap_lock = threading.Lock()
_heap_tasks = 0


@contextmanager
def heap_kept(allowed: bool = True) -> Iterator[bool]:
    """While peakloc's tasks run in this Dask worker, a heap that keeps freed memory; whether it holds.

    Arrays up to :data:`HEAP_ARRAYS` come from the heap, and :data:`~peakloc.run.spread.HEAP_PAD` of freed
    memory stays in it.

    Dask's nanny starts each worker with ``MALLOC_TRIM_THRESHOLD_=65536``, so that freed memory goes back to
    the system at once. It also fixes glibc's mmap threshold at 128 KiB (a set threshold turns off glibc's
    adaptive one), so each array larger than that is mapped afresh and its pages faulted in, and a task's
    arrays are mostly larger: a chunk of 256 PNG heatmaps made 12 400 page faults in a worker against 200
    in a plain process, and took 135 ms against 110 ms. While any peakloc task runs in the worker the
    thresholds are raised; the last one to end sets back the values the variables name (128 KiB for the
    mmap threshold where none does), and glibc trims the heap at its next ``free``. Nothing changes where
    ``MALLOC_TRIM_THRESHOLD_`` is not set (a worker without a nanny: glibc adapts its thresholds itself, and
    setting one would stop that for good), where mallopt is missing (not glibc), or where not ``allowed``
    (a budget too small to spare the pad).
    """
    global _heap_tasks
    trim, mmap = os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("MALLOC_MMAP_THRESHOLD_")
    try:
        restore = (int(trim), _MMAP_THRESHOLD if mmap is None else int(mmap)) if trim is not None else None
        set_option = mallopt() if restore is not None and allowed else None
    except ValueError:  # a value glibc would not have read either
        set_option = None
    if set_option is None:
        yield False
        return
    with _heap_lock:
        _heap_tasks += 1
        if _heap_tasks == 1:
            set_option(M_MMAP_THRESHOLD, HEAP_ARRAYS)
            set_option(M_TRIM_THRESHOLD, HEAP_PAD)
    try:
        yield True
    finally:
        with _heap_lock:
            _heap_tasks -= 1
            if _heap_tasks == 0:
                set_option(M_MMAP_THRESHOLD, restore[1])
                set_option(M_TRIM_THRESHOLD, restore[0])


class ClusterSlabs(Slabs):
    """Passes over the slabs of an input read in pieces, one task per slab, from inside a task.

    A stack that cannot be opened again elsewhere (no ``source``: a smoothed map in a file of this
    process) is read here, on threads.
    """

    def map(self, compute, maps: Maps, b: int, boxes: list[tuple[int, int, int]], *args, fold=None) -> list:
        """``compute(slab, box, *args)`` of each box's slab of map ``b``, in order, each on some worker.

        With ``fold``, as :meth:`Slabs.map`: each result goes to ``fold(box, result)`` in order, as it comes.
        """
        if maps.source is None or len(boxes) < 2:
            return super().map(compute, maps, b, boxes, *args, fold=fold)
        from distributed import worker_client

        # worker_client secedes this task's thread while the slab tasks run: they may run on its worker too.
        with worker_client() as client:
            name = uuid.uuid4().hex
            futures = client.map(
                slab_task,
                boxes,
                key=[f"peakloc-slab-{name}-{k}" for k in range(len(boxes))],
                pure=False,
                source=maps.source,
                b=b,
                compute=compute,
                args=args,
            )
            if fold is None:
                return client.gather(futures)
            for box, future in zip(boxes, futures):
                fold(box, future.result())
                future.release()
            return []


_OPENED: OrderedDict[Source, Maps] = OrderedDict()


def slab_task(box: tuple[int, int, int], source: Source, b: int, compute, args: tuple):
    """``compute`` of one slab of map ``b`` of the input ``source``, read by this worker."""
    maps = _OPENED.get(source)
    if maps is None:
        maps = _OPENED[source] = source.open()
        while len(_OPENED) > OPEN_INPUTS:
            _OPENED.popitem(last=False)
    return compute(maps.read(b, (slice(box[0], box[1]),)), box, *args)


def for_workers(job: Job) -> Job:
    """The job as workers in other folders need it: relative inputs and the overlay folder resolved here."""
    overlay = job.settings.overlay
    if overlay is not None:
        overlay = replace(overlay, folder=os.path.abspath(overlay.folder))
    return replace(job, settings=replace(job.settings, overlay=overlay), cwd=os.getcwd())


def _threads(client: Client) -> int:
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # noqa: BLE001 - only sizes the window
        return 1


@contextmanager
def outcomes_on(client: Client, job: Job, items: Sequence[Input]) -> Iterator[Iterator[Outcome]]:
    """Context giving each input's outcome, in input order, from chunk tasks on ``client``'s cluster.

    The job goes to the cluster once; each task carries its chunk's inputs and the budget (bytes, shared by
    each worker's threads). Leaving the context cancels what is still queued.
    """
    threads = _threads(client)
    # A task costs the scheduler a few milliseconds: more inputs a task than in a local pool.
    size = chunk_size(len(items), threads, MAX_CHUNK, CHUNKS_PER_THREAD)
    chunks = [list(items[i : i + size]) for i in range(0, len(items), size)]
    budget = job.settings.max_memory
    job = for_workers(job)
    # The job is a task's result, not scattered data: a worker that dies with it loses nothing, since the
    # scheduler computes it again from the task.
    shared = client.submit(_same, job, key=f"peakloc-job-{uuid.uuid4().hex}", pure=False)
    window = max(MIN_IN_FLIGHT, IN_FLIGHT_PER_THREAD * threads)
    name = uuid.uuid4().hex
    submitted: dict[str, int] = {}
    from distributed import as_completed

    # Tasks are taken as they finish, their results fetched several at once and put back in input order here.
    finished = as_completed(loop=client.loop)

    def submit(k: int) -> None:
        future = _submit(client, job, shared, chunks[k], budget, f"peakloc-chunk-{name}-{k}")
        submitted[future.key] = k
        finished.add(future)

    def results() -> Iterator[Outcome]:
        waiting: dict[int, object] = {}
        for k in range(min(window, len(chunks))):
            submit(k)
        queued, ready = min(window, len(chunks)), 0
        for batch in finished.batches():
            for future, result in zip(batch, _results(client, batch)):
                waiting[submitted.pop(future.key)] = result
            while ready in waiting:
                yield from _collect(client, shared, chunks[ready], waiting.pop(ready), budget, job)
                ready += 1
                if queued < len(chunks):
                    submit(queued)
                    queued += 1

    try:
        yield results()
    finally:
        futures = list(finished.futures)
        if futures:
            try:
                client.cancel(futures)
            except Exception:  # noqa: BLE001, S110 - the scheduler may be gone already
                pass


def _submit(client: Client, job: Job, shared, items: list, budget: int | None, key: str):
    """The task that runs ``items`` (:func:`run_chunk_task`) under ``key``.

    A client closed since it lost its scheduler refuses it: that refusal is :class:`ClusterError`.
    """
    try:
        return client.submit(run_chunk_task, shared, items, budget, key=key, pure=False)
    except Exception as exc:
        _raise_if_fatal(client, job, exc)
        raise


def _results(client: Client, futures: list) -> list:
    """Each done task's result, or the exception it ended with (the failed fetch's, for a finished one).

    The finished tasks' results come in one request. They are fetched here, not by ``as_completed``: there,
    a fetch that failed (the scheduler lost while it ran) ended its helper quietly and left the run waiting
    for that task forever.
    """
    from asyncio import CancelledError

    finished = [future for future in futures if future.status == "finished"]
    try:
        fetched = client.gather(finished) if finished else []
    except (Exception, CancelledError) as exc:  # each of these chunks fails with it
        fetched = [exc] * len(finished)
    results = dict(zip((future.key for future in finished), fetched))
    return [results[future.key] if future.key in results else _result_or_error(future) for future in futures]


def _result_or_error(future):
    """The result of a task that did not finish: the exception it failed with, or its cancellation."""
    from asyncio import CancelledError

    try:
        return future.result()
    except (Exception, CancelledError) as exc:
        return exc


def _collect(client: Client, shared, chunk: list, result, budget: int | None, job: Job) -> list[Outcome]:
    """A chunk's outcomes from its task's ``result``.

    A chunk whose task failed (``result`` is its exception) runs again input by input, each failing alone.
    """
    from asyncio import CancelledError

    from distributed import KilledWorker

    if not isinstance(result, BaseException):
        return result
    if not isinstance(result, KilledWorker):
        _raise_if_fatal(client, job, result)
    # One input at a time, each tried twice: an input whose task merely shared a worker with one that
    # killed it is not blamed.
    outcomes = []
    for item in chunk:
        for attempt in range(ISOLATED_TRIES):
            try:
                single = _submit(client, job, shared, [item], budget, f"peakloc-input-{uuid.uuid4().hex}")
                outcomes += single.result()
                break
            except KilledWorker:
                if attempt + 1 == ISOLATED_TRIES:
                    outcomes.append(Outcome(item.path, errors=[KILLED]))
            except (Exception, CancelledError) as exc:
                _raise_if_fatal(client, job, exc)
                outcomes.append(Outcome(item.path, errors=[failure(exc)]))
                break
    return outcomes


def _raise_if_fatal(client: Client, job: Job, exc: BaseException) -> None:
    """Raise a task's failure that ends the run: peakloc's bug under ``reraise``, or a lost scheduler.

    Any other failure is one input's (or one chunk's, then run again input by input).
    """
    if job.reraise:
        raise exc
    # A client that lost its scheduler cancels every task it had and tries to connect again ("connecting"):
    # none of them will finish, so the run ends at once.
    if client.status != "running":
        raise ClusterError(f"lost the Dask scheduler ({type(exc).__name__})") from None
