"""NumPy back end: the default CPU path. It must never import torch.

Work is done in blocks of about :data:`BLOCK_ELEMENTS` values so that a block's float temporaries stay in
cache: each block is read from the input once (the cast to float fuses with the subtraction of the
maximum), and blocks run on a thread pool, since NumPy releases the GIL inside its loops.
A single map larger than a block is processed in slabs along its first spatial axis, in two passes
(its maximum must be known before any ``exp``).

Most of a heatmap's weights are negligible: a weight below ``exp(-(ln N + 20))`` of the maximum's (N values
in the map) changes no sum by more than 2e-9 of itself, far below float32's resolution. So the soft-argmax
compares each value once against a per-map raw threshold and takes ``exp`` only of the values above it,
accumulating their weights with ``bincount`` in float64. Maps where more than a tenth of a fixed sample of
their values count take the dense path instead: ``exp`` of everything, then marginal sums as matrix-vector
products. That choice is made per map from the map alone, never per block, so that a map's result does not
depend on the maps computed beside it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, partial
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..errors import NoFiniteValueError
from ..ops.normalize import coefficient, exp_logits
from ..ops.peaks import unravel

if TYPE_CHECKING:
    from concurrent.futures import Executor, Future

#: Values per block: 512 Ki values (2 MiB of float32) keep a block's temporaries in cache and the
#: per-block overhead small (measured best of 64 Ki to 2 Mi on the pose batch, benchmarks/bench_speed.py).
BLOCK_ELEMENTS = 1 << 19
#: Most values per block when a batch of small maps is split between threads. Every thread gets one large
#: block per round rather than many small ones: each block holds the GIL for its small NumPy calls, and
#: threads that trade the GIL back and forth per call ran slower than one thread (pose batch, 2 cores:
#: 2.6 ms in blocks of 512 Ki values, 1.7 ms in two halves).
BATCH_BLOCK_ELEMENTS = 1 << 21
#: Below this many values in all, threads cost more than they save.
PARALLEL_MIN_ELEMENTS = 1 << 20
#: Logits below ``-(ln N + NEGLIGIBLE_LOGIT)`` are dropped: their weights sum to < exp(-20) of the total.
NEGLIGIBLE_LOGIT = 20.0
#: Above this share of values kept, the dense path (exp of everything) is faster.
DENSE_SHARE = 0.1
#: The dense-or-sparse choice counts every SAMPLE_STRIDE-th value of a map (a prime, so that the sample does
#: not follow the map's columns): a 61st of the values to count, and the choice only sets the speed.
SAMPLE_STRIDE = 61
#: Maps of fewer values take their marginal sums as BLAS matrix-vector products, 5x faster than ``np.sum``
#: along an axis. OpenBLAS runs a product this small on one thread (``m * n < 2304 *
#: GEMM_MULTITHREAD_THRESHOLD``, interface/gemv.c), so its order of summation is fixed by the map's shape alone;
#: NumPy's matmul calls BLAS once per map of a stack, so it does not depend on the batch either.
BLAS_MAX_VALUES = 2304 * 4
#: Values per chunk of the dense path: its float temporaries (1 MiB of float32) stay in a core's L2 cache, and
#: its five NumPy calls a chunk are long enough that two threads seldom wait on each other for the GIL
#: (the uniform batch 64x17x64x48, 2 cores: 2.7 ms in chunks of 256 Ki values, 3.5 ms of 64 Ki, 4.0 ms unchunked).
DENSE_CHUNK_ELEMENTS = 1 << 18

T = TypeVar("T")

#: Scratch arrays of up to this many bytes are kept by their thread for the next call (:func:`scratch`).
SCRATCH_MAX_BYTES = 4 << 20
_scratch = threading.local()


def scratch(slot: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array for temporaries, this thread's own, handed out again by the next call for ``slot``.

    malloc maps an array of more than 128 KiB afresh, and the kernel faults in and zeroes each of its 4 KiB
    pages at first touch (glibc's mmap threshold, until a larger free raises it): in a fresh process the
    uniform batch 64x17x64x48 took 10.7 ms a call with 1040 page faults, 5.7 ms without. So a block's
    masks and weights reuse their thread's array. One larger than :data:`SCRATCH_MAX_BYTES` is new each
    time, so that a thread keeps a few MiB at most. The array is the caller's only until its next call for
    the same ``slot`` on this thread: it must not outlive the function that asked for it.
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    if size > SCRATCH_MAX_BYTES:
        return np.empty(shape, dtype)
    held = getattr(_scratch, slot, None)
    if held is None or held.size < size:
        held = np.empty(max(size, 1), np.uint8)
        setattr(_scratch, slot, held)
    return held[:size].view(dtype).reshape(shape)


def work_dtype(dtype: np.dtype) -> np.dtype:
    """float64 for float64 (and wider) input, else float32: never the input's integer or half type."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype.itemsize >= 8:
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def cores() -> int:
    """Cores this process may run on: its CPU affinity where the platform has one, else every core.

    ``os.cpu_count()`` counts the machine's cores, not the few a container, ``taskset`` or a cluster's job
    (a SLURM cpuset) allows; threads for all of them would queue on the allowed few.
    """
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


#: Threads for large arrays when the caller does not say: one per core this process may run on, at most 8.
DEFAULT_THREADS = max(1, min(cores(), 8))


@cache
def _pool(threads: int):
    from concurrent.futures import ThreadPoolExecutor  # 5 ms of imports, paid only for large arrays

    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="peakloc")


def worker_pool(threads: int):
    """The process's pool of ``threads`` threads (a ``ThreadPoolExecutor``), made once."""
    return _pool(threads)


def map_in_threads(fn: Callable[..., T], items: Sequence, threads: int) -> list[T]:
    """``[fn(item) for item in items]`` on up to ``threads`` threads (NumPy releases the GIL in its loops)."""
    if threads > 1 and len(items) > 1:
        return list(_pool(threads).map(fn, items))
    return [fn(item) for item in items]


@dataclass(frozen=True)
class Helpers:
    """A run's helper processes (:mod:`peakloc.run.spread`): their executor and how many there are."""

    executor: Executor
    count: int

    def submit(self, fn: Callable, *args) -> Future:
        """``fn(*args)`` on a helper."""
        return self.executor.submit(fn, *args)


#: Helper processes of the run, while :func:`sharing` holds them; else None.
_HELPERS: Helpers | None = None


@contextmanager
def sharing(pool: Helpers | None) -> Iterator[None]:
    """Let :func:`map_shared` hand work to ``pool``'s helper processes (None: none) in the block."""
    global _HELPERS
    before, _HELPERS = _HELPERS, pool
    try:
        yield
    finally:
        _HELPERS = before


def share(
    pool: Helpers, fn: Callable[[Any], T], items: Sequence, prepare: Callable[[Any], Any] | None = None
) -> list[T]:
    """``[fn(prepare(item)) for item in items]``, on ``pool``'s helper processes and this process together.

    Each process takes the next item left when it is free; ``prepare`` (default: none) runs here, when the
    item's turn comes, so that only the items in flight are held prepared. ``fn`` must pickle (a module's
    function, or a :func:`functools.partial` of one). The first exception, a helper's included, is raised.
    """
    import queue
    from itertools import count

    ready = prepare or (lambda item: item)
    claims = count()  # the next item's index: taken by this process and by the helpers' callbacks
    finished: queue.SimpleQueue = queue.SimpleQueue()
    stopped: list[bool] = []

    def feed(_done=None) -> None:
        k = next(claims)
        if k >= len(items) or stopped:
            return
        try:
            future = pool.submit(fn, ready(items[k]))
        except Exception as exc:  # noqa: BLE001 - a broken pool: raised below, in this process
            finished.put((k, None, exc))
            return
        future.add_done_callback(lambda done, k=k: (finished.put((k, done, None)), feed(done)))

    out: list = [None] * len(items)
    try:
        # Among many items, two in flight per helper: the next waits in its queue while this process
        # prepares the one after (between its own items), so that a helper does not wait. Among few (a
        # stack's groups, one per process), one: this process takes its share, claimed before the helpers
        # get theirs (a helper done first would otherwise claim it from its callback).
        helpers = pool.count
        few = len(items) < 4 * (helpers + 1)
        mine = next(claims) if few else len(items)
        for _ in range(helpers if few else 2 * helpers):
            feed()
        done = 0
        if mine < len(items):
            out[mine] = fn(ready(items[mine]))
            done += 1
        while (k := next(claims)) < len(items):
            out[k] = fn(ready(items[k]))
            done += 1
        while done < len(items):
            k, future, exc = finished.get()
            if exc is not None:
                raise exc
            out[k] = future.result()
            done += 1
    except BaseException:
        stopped.append(True)  # the helpers get no further item
        raise
    return out


def map_shared(
    fn: Callable[..., T],
    items: Sequence,
    threads: int | None = None,
    prepare: Callable[[Any], Any] | None = None,
    on_threads: bool = False,
) -> list[T]:
    """``[fn(prepare(item), threads) for item in items]``, on the run's helper processes too.

    Where :func:`sharing` gave helpers, each call, there and here, has one thread (a process per core).
    Without helpers: one item after another, each call with ``threads``; or, ``on_threads``, the items
    on ``threads`` threads, each call with one. A failure on the helpers (one that died) has every item run
    here instead, which gives the same results or the error of a run without helpers.
    """
    ready = prepare or (lambda item: item)
    if _HELPERS is not None and len(items) > 1:
        try:
            return share(_HELPERS, partial(fn, threads=1), items, prepare)
        except Exception:  # noqa: BLE001 - run here: the same results, or this process's own error
            pass
    if on_threads:
        return map_in_threads(lambda item: fn(ready(item), 1), items, DEFAULT_THREADS if threads is None else threads)
    return [fn(ready(item), threads) for item in items]


def _flat_batch(x: np.ndarray, ndim: int) -> np.ndarray:
    """``(..., *spatial)`` -> ``(B, *spatial)``; a view when the batch axes allow it."""
    return x.reshape((-1,) + x.shape[x.ndim - ndim :])


def _finite_mask(x: np.ndarray) -> np.ndarray | None:
    """Boolean mask of finite values, or None when every value is finite (the usual, fast case)."""
    if x.dtype.kind not in "fc":
        return None
    finite = np.isfinite(x)
    return None if finite.all() else finite


def count_per_row(mask: np.ndarray) -> np.ndarray:
    """``np.count_nonzero(mask, axis=1)`` of a 2-D boolean mask, int64 ``(rows,)``.

    ``count_nonzero`` with an axis sums bytes, several times slower than a popcount. Long rows are counted
    one by one with the whole-array popcount; shorter rows of a multiple of 8 flags, 8 at a time as uint64
    words with ``np.bitwise_count`` (NumPy 2; 3x faster on 170 rows of 3072).
    """
    if mask.shape[1] >= 4096:
        return np.array([np.count_nonzero(row) for row in mask], np.int64)
    if hasattr(np, "bitwise_count") and mask.shape[1] % 8 == 0 and mask.flags.c_contiguous:
        return np.bitwise_count(mask.view(np.uint64)).sum(axis=1, dtype=np.int64)
    return np.count_nonzero(mask, axis=1).astype(np.int64)


def _raise_if_empty(finite_count: np.ndarray, offset: int = 0) -> None:
    empty = np.flatnonzero(finite_count == 0)
    if empty.size:
        raise NoFiniteValueError(f"heatmap {offset + int(empty[0])} has no finite value", int(offset + empty[0]))


# ----------------------------------------------------------------------------------------- argmax


def argmax(x: np.ndarray, ndim: int) -> tuple[np.ndarray, int]:
    """First maximum in C order of each map, ignoring NaN and inf.

    Parameters
    ----------
    x : ndarray, shape ``(..., *spatial)``
    ndim : int
        Number of trailing spatial axes.

    Returns
    -------
    coords : ndarray of int64, shape ``(..., ndim)``
        In array-axis order ``(..., z, y, x)``.
    nonfinite : int
        How many values were ignored.
    """
    spatial = x.shape[x.ndim - ndim :]
    flat = x.reshape(-1, int(np.prod(spatial)))
    finite = _finite_mask(flat)
    nonfinite = 0
    if finite is not None:
        counts = finite.sum(axis=1)
        _raise_if_empty(counts)
        nonfinite = int(flat.size - counts.sum())
        # -inf never wins unless nothing else is there, and that case has just been refused.
        flat = np.where(finite, flat, -np.inf)
    index = flat.argmax(axis=1)
    coords = np.stack(np.unravel_index(index, spatial), axis=-1).astype(np.int64)
    return coords.reshape(x.shape[: x.ndim - ndim] + (ndim,)), nonfinite


# ------------------------------------------------------------------------------------ soft-argmax


def _stats(x: np.ndarray, normalize: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Per map of ``x`` (shape ``(b, ...)``): max, min (or None), finite count, finite mask (or None)."""
    flat = x.reshape(x.shape[0], -1)
    hi = flat.max(axis=1)
    lo = flat.min(axis=1) if normalize == "minmax" or x.dtype.kind == "f" else None
    # NaN propagates through max and inf is an extreme: finite extremes mean every value is finite, so the
    # usual case needs no separate isfinite pass.
    if x.dtype.kind != "f" or (np.isfinite(hi).all() and np.isfinite(lo).all()):
        count = np.full(x.shape[0], flat.shape[1], np.int64)
        return hi, lo if normalize == "minmax" else None, count, None
    finite = np.isfinite(x)
    flat_finite = finite.reshape(x.shape[0], -1)
    hi = np.where(flat_finite, flat, -np.inf).max(axis=1)
    lo = np.where(flat_finite, flat, np.inf).min(axis=1) if normalize == "minmax" else None
    return hi, lo, flat_finite.sum(axis=1), finite


def _weights(
    x: np.ndarray, hi: np.ndarray, coef: np.ndarray, finite: np.ndarray | None, dtype, out: np.ndarray | None = None
) -> np.ndarray:
    """``exp(coef * (x - hi))`` per map, 0 where ``x`` is not finite; into ``out`` (a new array by default).

    Logits below :func:`~peakloc.ops.normalize.logit_floor` weigh the least normal float (:func:`exp_logits`).
    """
    shape = (-1,) + (1,) * (x.ndim - 1)
    # Subtracting the maximum first keeps every exponent <= 0: no overflow whatever beta and dtype.
    w = np.subtract(x, hi.astype(dtype).reshape(shape), dtype=dtype, out=out)
    with np.errstate(over="ignore"):  # a huge coef sends non-maxima to -inf: weight ~0, as it should be
        w *= coef.astype(dtype).reshape(shape)
    exp_logits(w, out=w)
    if finite is not None:
        w[~finite] = 0
    return w


def _marginals(w: np.ndarray) -> list[np.ndarray]:
    """Sums of ``w`` (shape ``(b, n0, ..., nk)``) onto each spatial axis: ``[(b, n0), ..., (b, nk)]``.

    Two passes over ``w`` whatever the number of axes: the last axis's marginal, then a sum over the
    last axis that leaves a smaller array for the others. Maps of fewer than :data:`BLAS_MAX_VALUES` values
    are summed by matrix-vector products with ones.
    """
    blas = w[0].size < BLAS_MAX_VALUES
    out: list[np.ndarray] = []
    current = w
    while current.ndim > 2:
        rows = current.reshape(current.shape[0], -1, current.shape[-1])
        if blas:
            out.append(np.matmul(np.ones(rows.shape[1], w.dtype), rows))
            current = np.matmul(rows, np.ones(rows.shape[2], w.dtype)).reshape(current.shape[:-1])
        else:
            out.append(rows.sum(axis=1))
            current = current.sum(axis=-1)
    out.append(current)
    return out[::-1]


def _dense_sums(x, hi, coef, finite, dtype, maps: np.ndarray | None = None) -> np.ndarray:
    """:func:`_sums` by ``exp`` of every value; row by row the same whatever ``b``.

    ``maps`` (optional, ascending) picks the maps of ``x`` to weigh; ``hi``, ``coef`` and ``finite`` are
    then those maps' own. The weights are made and summed :data:`DENSE_CHUNK_ELEMENTS` values at a time, in
    one buffer: they stay in cache between the steps, and no large temporary is allocated per call. (A fresh
    multi-MiB array on a worker thread costs a page fault per 4 KiB: the uniform batch's two halves on two
    threads took 7.2 ms with 1400 faults a call, 4.0 ms without.) Picked maps are gathered a chunk at a time
    for the same reason.
    """
    b = x.shape[0] if maps is None else len(maps)
    spatial = x.shape[1:]
    step = max(1, DENSE_CHUNK_ELEMENTS // max(1, int(np.prod(spatial))))
    buffer = scratch("weights", (min(step, b),) + spatial, dtype)
    gathered = None if maps is None else scratch("gathered", (min(step, b),) + spatial, x.dtype)
    marginals = [np.empty((b, n), dtype) for n in spatial]
    for start in range(0, b, step):
        rows = slice(start, min(start + step, b))
        if maps is None:
            part = x[rows]
        else:
            part = np.take(x, maps[rows], axis=0, out=gathered[: rows.stop - start])
        w = _weights(part, hi[rows], coef[rows], None if finite is None else finite[rows], dtype, buffer[: len(part)])
        for whole, m in zip(marginals, _marginals(w)):
            whole[rows] = m
    out = np.empty((b, 1 + len(marginals)))
    out[:, 0] = marginals[0].sum(axis=1, dtype=np.float64)
    for k, m in enumerate(marginals):
        # A row-wise sum, not a matrix product: BLAS may block a product by the number of rows.
        out[:, 1 + k] = (m.astype(np.float64) * np.arange(m.shape[1], dtype=np.float64)).sum(axis=1)
    return out


def _sparse_sums(flat, spatial, hi, coef, index, dtype) -> np.ndarray:
    """:func:`_sums` over the kept values only, weights accumulated per map with ``bincount``.

    ``index`` holds the kept values' flat positions in ``flat``, ascending.
    """
    return sparse_sums(flat.reshape(-1)[index], index, flat.shape[0], spatial, hi, coef, dtype)


def sparse_sums(values, index, b: int, spatial: tuple[int, ...], hi, coef, dtype) -> np.ndarray:
    """Total weight and weighted coordinate sums ``(b, 1 + ndim)`` of the kept ``values`` of ``b`` maps.

    ``index`` holds the values' flat positions in the ``(b, *spatial)`` maps, ascending; ``values`` are in
    the maps' dtype. A caller that listed a map's kept values while reading it gets :func:`_sums`'s answer.
    """
    owner, *coordinates = unravel(index, (b, *spatial)).T
    with np.errstate(over="ignore"):  # as in _weights: -inf logits are weight 0
        logits = (values - hi[owner].astype(dtype)).astype(dtype) * coef[owner].astype(dtype)
    weights = np.exp(logits)
    out = np.empty((b, 1 + len(spatial)))
    out[:, 0] = np.bincount(owner, weights, minlength=b)
    for k, coordinate in enumerate(coordinates):
        out[:, 1 + k] = np.bincount(owner, weights * coordinate, minlength=b)
    return out


def _kept(flat: np.ndarray, threshold: np.ndarray, finite: np.ndarray | None) -> np.ndarray:
    """Flat positions (ascending) of the kept values of ``flat`` ``(b, n)``: finite, at or above their row's threshold.

    The same list as ``np.flatnonzero(flat >= threshold[:, None])`` less the non-finite values, found faster
    where few are kept: one comparison with the lowest threshold, a scalar (about 4x faster than each row
    against its own), gives candidates, which are then checked against their own row's threshold. The
    candidates are found 8 flags at a time, as the nonzero 8-byte words of the mask (``np.flatnonzero`` of a
    sparse mask reads it byte by byte, 3x slower on the pose batch).
    """
    lowest = threshold.min()
    if np.isnan(lowest):  # a NaN threshold keeps nothing; NaN >= NaN is False row by row below as well
        lowest = np.nanmin(threshold) if not np.isnan(threshold).all() else np.inf
    candidates = _true_places(np.greater_equal(flat, lowest, out=scratch("mask", flat.shape, bool)))
    kept = candidates[flat.reshape(-1)[candidates] >= threshold[candidates // flat.shape[1]]]
    return kept if finite is None else kept[finite.reshape(-1)[kept]]


def _true_places(mask: np.ndarray) -> np.ndarray:
    """``np.flatnonzero(mask)`` of a C-contiguous boolean ``mask``, by its nonzero 8-byte words first."""
    flat = mask.reshape(-1)
    whole = flat.size - flat.size % 8
    words = flat[:whole].view(np.uint64)
    words = np.flatnonzero(np.not_equal(words, 0, out=scratch("words", words.shape, bool)))
    places = (words[:, np.newaxis] * 8 + np.arange(8))[flat[:whole].reshape(-1, 8)[words]]
    return np.concatenate([places, whole + np.flatnonzero(flat[whole:])]) if whole < flat.size else places


def _mostly_kept(flat: np.ndarray, threshold: np.ndarray, finite: np.ndarray | None) -> np.ndarray:
    """Per row of ``flat`` ``(b, n)``: bool, more than :data:`DENSE_SHARE` of its sample reaches ``threshold``.

    The sample is every :data:`SAMPLE_STRIDE`-th value of the row, from its first: the same for a map
    whatever the batch.
    """
    kept = flat[:, ::SAMPLE_STRIDE] >= threshold[:, None]
    if finite is not None:
        kept &= finite.reshape(flat.shape)[:, ::SAMPLE_STRIDE]
    return dense_sample(np.count_nonzero(kept, axis=1), flat.shape[1])


def weight_threshold(hi, coef, per_map: int, offset: int, dtype) -> np.ndarray:
    """Per map, the least value whose weight :func:`_sums` counts, in ``dtype`` promoted with float32.

    A value below it weighs less than ``exp(-NEGLIGIBLE_LOGIT)`` of the maximum's weight over the
    ``per_map * (1 + offset)`` values of the map it belongs to (``offset``: the rows before a slab).
    """
    # coef * (v - hi) >= cut  <=>  v >= hi + cut / coef  (coef > 0); coef == 0 keeps every value (uniform).
    cut = -(np.log(per_map * (1 + offset)) + NEGLIGIBLE_LOGIT)
    with np.errstate(divide="ignore"):
        threshold = np.where(coef > 0, hi + cut / np.where(coef > 0, coef, 1), -np.inf)
    return threshold.astype(np.result_type(dtype, np.float32))


def dense_sample(kept, per_map: int):
    """Whether a map takes the dense path: more than :data:`DENSE_SHARE` of its sample kept (bool, per map).

    ``kept`` (an int, or an array of one per map): how many of its values at the sampled places (every
    :data:`SAMPLE_STRIDE`-th from its first) reach its :func:`weight_threshold`.
    """
    return kept > DENSE_SHARE * len(range(0, per_map, SAMPLE_STRIDE))


def _runs(flags: np.ndarray) -> list[tuple[slice, bool]]:
    """The runs of equal values of a 1-D boolean array: ``[(slice, value), ...]`` in order."""
    edges = [0, *(np.flatnonzero(flags[1:] != flags[:-1]) + 1).tolist(), len(flags)]
    return [(slice(a, b), bool(flags[a])) for a, b in zip(edges[:-1], edges[1:])]


#: A block whose dense and sparse maps alternate more often than this gathers its dense maps into one array
#: instead of taking each run as a view (each run costs a dozen NumPy calls).
MAX_RUNS = 8


def _sums(
    x: np.ndarray, hi: np.ndarray, coef: np.ndarray, finite: np.ndarray | None, dtype, offset: int = 0
) -> np.ndarray:
    """Per map of ``x`` (``(b, n0, ...)``): total weight and weighted coordinate sums, float64 ``(b, 1 + ndim)``.

    ``offset`` is added to the first spatial coordinate (a slab of a larger map). Each map takes the dense
    or the sparse path by the kept share of its own sample, so its sums do not depend on the other maps.
    Consecutive maps of one path are taken together, as views of ``x`` (a copy of the uniform batch's dense
    maps around one sparse map cost 1 ms).
    """
    b = x.shape[0]
    spatial = x.shape[1:]
    per_map = int(np.prod(spatial))
    flat = x.reshape(b, per_map)
    threshold = weight_threshold(hi, coef, per_map, offset, flat.dtype)
    # The sample decides first: a map the dense path takes is never compared value by value.
    dense = _mostly_kept(flat, threshold, finite)
    runs = _runs(dense)
    if len(runs) > MAX_RUNS:
        runs = [(np.flatnonzero(dense), True), (np.flatnonzero(~dense), False)]
    out = np.empty((b, 1 + len(spatial)))
    for rows, is_dense in runs:
        if is_dense:
            part_finite = None if finite is None else finite[rows]
            if isinstance(rows, slice):
                out[rows] = _dense_sums(x[rows], hi[rows], coef[rows], part_finite, dtype)
            else:
                out[rows] = _dense_sums(x, hi[rows], coef[rows], part_finite, dtype, rows)
        else:
            part, part_finite = flat[rows], None if finite is None else finite.reshape(b, per_map)[rows]
            index = _kept(part, threshold[rows], part_finite)
            out[rows] = _sparse_sums(part, spatial, hi[rows], coef[rows], index, dtype)
    out[:, 1] += offset * out[:, 0]
    return out


def _soft_argmax_block(x: np.ndarray, beta: float, normalize: str, dtype) -> tuple[np.ndarray, int]:
    hi, lo, count, finite = _stats(x, normalize)
    _raise_if_empty(count)
    sums = _sums(x, hi, coefficient(beta, normalize, hi, lo), finite, dtype)
    return sums[:, 1:] / sums[:, :1], int(x.size - count.sum())


def _slabs(n: int, step: int) -> list[slice]:
    return [slice(s, min(s + step, n)) for s in range(0, n, step)]


def _batch_blocks(batch: int, per_map: int, threads: int) -> list[slice]:
    """Equal blocks of maps, a multiple of ``threads`` of them, of at most :data:`BATCH_BLOCK_ELEMENTS` values.

    A map's result does not depend on its block.
    """
    count = -(-batch * per_map // BATCH_BLOCK_ELEMENTS)
    count = -(-count // threads) * threads
    return _slabs(batch, -(-batch // min(count, batch)))


def large_map_rows(spatial: tuple[int, ...]) -> int:
    """Rows of the first axis per slab of a map too large for one block (of :data:`BLOCK_ELEMENTS` values)."""
    return max(1, BLOCK_ELEMENTS // max(1, int(np.prod(spatial[1:]))))


def slab_sums(
    piece: np.ndarray, hi: np.ndarray, coef: np.ndarray, dtype, offset: int, all_finite: bool = False
) -> np.ndarray:
    """Weight and weighted coordinate sums ``(1, 1 + ndim)`` of rows ``offset..`` of one map.

    ``piece`` is ``(1, rows, ...)``. The slabs of :func:`large_map_rows` rows, summed in order with
    ``np.sum(..., axis=0)``, give the soft-argmax of a large map: a caller that reads the map in pieces gets
    the in-memory answer exactly. ``all_finite`` (the caller counted no NaN or inf) skips the finite mask.
    """
    return _sums(piece, hi, coef, None if all_finite else _finite_mask(piece), dtype, offset=offset)


def _soft_argmax_large(x: np.ndarray, beta: float, normalize: str, dtype, threads: int) -> tuple[np.ndarray, int]:
    """One map too large for a block, in slabs along its first axis: stats first, then weights."""
    x = x[np.newaxis]
    slabs = _slabs(x.shape[1], large_map_rows(x.shape[1:]))
    stats = map_in_threads(lambda s: _stats(x[:, s], normalize)[:3], slabs, threads)
    hi = np.max([s[0] for s in stats], axis=0)
    lo = np.min([s[1] for s in stats], axis=0) if normalize == "minmax" else None
    count = np.sum([s[2] for s in stats], axis=0)
    _raise_if_empty(count)
    coef = coefficient(beta, normalize, hi, lo)
    parts = map_in_threads(lambda part: slab_sums(x[:, part], hi, coef, dtype, part.start), slabs, threads)
    sums = np.sum(parts, axis=0)
    return (sums[:, 1:] / sums[:, :1])[0], int(x.size - count.sum())


def soft_argmax(
    x: np.ndarray, beta: float, ndim: int, normalize: str, threads: int | None = None
) -> tuple[np.ndarray, int]:
    """Soft-argmax ``sum_i i * softmax(beta * v)_i`` of each map, ``v`` normalised as asked.

    Parameters
    ----------
    x : ndarray, shape ``(..., *spatial)``
    beta : float
        Sharpness, > 0.
    ndim : int
        Number of trailing spatial axes.
    normalize : {"minmax", "max", "none"}
    threads : int, optional
        Threads for arrays of :data:`PARALLEL_MIN_ELEMENTS` values or more; default :data:`DEFAULT_THREADS`.
        A process pool that already runs one process per core passes 1.

    Returns
    -------
    coords : ndarray of float64, shape ``(..., ndim)``
        Pixel coordinates in array-axis order.
    nonfinite : int
        How many values were ignored.
    """
    flat = _flat_batch(x, ndim)
    batch, per_map = flat.shape[0], int(np.prod(flat.shape[1:]))
    dtype = work_dtype(x.dtype)
    threads = (
        (DEFAULT_THREADS if threads is None else max(1, int(threads))) if flat.size >= PARALLEL_MIN_ELEMENTS else 1
    )
    out = np.empty((batch, ndim), np.float64)
    if per_map <= BLOCK_ELEMENTS:
        blocks = _batch_blocks(batch, per_map, threads)

        def run(s: slice) -> int:
            try:
                out[s], nonfinite = _soft_argmax_block(flat[s], beta, normalize, dtype)
            except NoFiniteValueError as exc:
                raise NoFiniteValueError(
                    f"heatmap {s.start + exc.position} has no finite value", s.start + exc.position
                ) from None
            return nonfinite

        nonfinite = sum(map_in_threads(run, blocks, threads))
    else:
        nonfinite = 0
        for b in range(batch):
            try:
                out[b], n = _soft_argmax_large(flat[b], beta, normalize, dtype, threads)
            except NoFiniteValueError:
                raise NoFiniteValueError(f"heatmap {b} has no finite value", b) from None
            nonfinite += n
    return out.reshape(x.shape[: x.ndim - ndim] + (ndim,)), nonfinite
