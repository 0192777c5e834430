"""A stack's maps located on helper processes: the numbers of one process, failures as in one process."""

import dataclasses
import multiprocessing
import os
import sys

import numpy as np
import pytest
import tifffile

from peakloc.backends import numpy_backend
from peakloc.io.axes import Layout
from peakloc.io.inputs import Input
from peakloc.run import batch, spread
from peakloc.run.locate import locate
from peakloc.run.settings import Settings

from ..conftest import gaussian
from .test_batch import find, table

SPOTS = Settings(methods=("argmax", "gaussian", "dark"), peaks=8, min_distance=3, threshold="5sd", extra=True)


def movie(frames=24, side=48, seed=3):
    """A uint16 stack of frames with a few noisy spots each (pairs included)."""
    rng = np.random.default_rng(seed)
    stack = np.empty((frames, side, side), np.uint16)
    for f in range(frames):
        expected = np.full((side, side), 20.0)
        for centre in rng.uniform(4, side - 5, (rng.integers(2, 7), 2)):
            expected += rng.uniform(200, 600) * gaussian((side, side), centre, 1.3)
        stack[f] = rng.poisson(expected) + 100
    return stack


def layout_of(stack):
    return Layout("T", (len(stack),), "YX", stack.shape[1:])


def same_peaks(a, b):
    """The same peaks, numbers equal to the last bit (entries past a map's last peak mean nothing)."""
    assert a.peaks.keys() == b.peaks.keys()
    for method in a.peaks:
        present = a.peaks[method].present
        np.testing.assert_array_equal(present, b.peaks[method].present)
        for name in ("coords", "values", "fallback", "error", "split"):
            mine, theirs = getattr(a.peaks[method], name), getattr(b.peaks[method], name)
            assert (mine is None) == (theirs is None), name
            if mine is not None:
                np.testing.assert_array_equal(mine[present], theirs[present], name)
        for column in a.peaks[method].shape:
            np.testing.assert_array_equal(
                a.peaks[method].shape[column][present], b.peaks[method].shape[column][present], column
            )
    np.testing.assert_array_equal(a.nonfinite, b.nonfinite)


@pytest.fixture(scope="module")
def pool():
    """One helper: a machine of two cores."""
    with spread.helpers(1) as helpers:
        yield helpers


def test_a_stack_located_in_groups_on_helpers_has_the_peaks_of_one_process(pool):
    stack = movie()
    notes = []
    here = locate(stack, layout_of(stack), SPOTS)
    spread_out = spread.locate_spread(pool, 5, stack, layout_of(stack), SPOTS, notes)
    same_peaks(here, spread_out)
    assert spread_out.heatmaps is stack
    assert spread_out.layout == layout_of(stack)
    assert notes == []


def test_a_map_without_a_finite_value_fails_as_in_one_process(pool):
    stack = movie().astype(np.float32)
    stack[17] = np.nan
    with pytest.raises(Exception) as alone:
        locate(stack, layout_of(stack), SPOTS)
    with pytest.raises(type(alone.value)) as spread_out:
        spread.locate_spread(pool, 4, stack, layout_of(stack), SPOTS, [])
    assert str(spread_out.value) == str(alone.value)


def test_a_stack_whose_helper_died_is_located_here_and_so_are_the_stacks_after_it():
    stack = movie(frames=8)
    here = locate(stack, layout_of(stack), SPOTS)
    with spread.helpers(2) as pool:
        for process in list(pool.executor._processes.values()):
            process.kill()
            process.join(5)
        for _ in range(2):
            same_peaks(here, spread.locate_spread(pool, 4, stack, layout_of(stack), SPOTS, []))


@pytest.mark.parametrize(
    ("settings", "frames", "budget", "groups"),
    [
        (SPOTS, 64, None, 2),  # 64 maps of 128x128: 1 Mi values, a group for the helper and one for this process
        (Settings(), 64, None, 0),  # argmax and soft-argmax: whole-stack passes, nothing to spread
        (Settings(peaks=3), 64, None, 2),
        (dataclasses.replace(SPOTS, device="cuda"), 64, None, 0),
        (SPOTS, 32, None, 0),  # fewer values than pay for the copies
        (SPOTS, 3, None, 0),  # fewer maps than two per process
        (SPOTS, 64, 64 << 20, 0),  # the copies in the helpers would not fit the budget
        (SPOTS, 64, 1 << 30, 2),
    ],
)
def test_only_a_large_stack_with_per_map_work_within_the_budget_is_spread(pool, settings, frames, budget, groups):
    stack = np.zeros((frames, 128, 128), np.uint16)
    assert spread.spread_over(pool, stack, settings, budget) == groups
    assert spread.spread_over(None, stack, settings, budget) == 0


def test_helpers_start_only_for_inputs_of_some_megabytes_that_need_per_map_work(tmp_path, monkeypatch):
    monkeypatch.setattr(numpy_backend, "cores", lambda: 2)
    small, large = tmp_path / "small.npy", tmp_path / "large.npy"
    np.save(small, np.zeros((4, 64, 64), np.float32))
    np.save(large, np.zeros((64, 128, 128), np.float32))
    assert spread.helper_count([Input(str(large))], SPOTS) == 1
    assert spread.helper_count([Input(str(small))], SPOTS) == 0
    assert spread.helper_count([Input(str(large))], Settings()) == 0
    assert spread.helper_count([Input(str(tmp_path / "missing.npy"))], SPOTS) == 0
    assert spread.helper_count([Input(str(large))], SPOTS, 1 << 30) == 1
    assert spread.helper_count([Input(str(large))], SPOTS, (1 << 30) - 1) == 0  # a budget that cannot spare them
    monkeypatch.setattr(numpy_backend, "cores", lambda: 1)
    assert spread.helper_count([Input(str(large))], SPOTS) == 0


def test_the_inputs_budget_leaves_room_for_the_helpers_and_the_heap_pad():
    assert spread.budget_left(1 << 30, 1) == (1 << 30) - spread.HELPER_BYTES - spread.HEAP_PAD
    assert spread.budget_left(1 << 30, 0) == 1 << 30
    assert spread.budget_left(None, 3) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_run_with_helpers_keeps_freed_memory_at_the_top_of_its_heap_on_linux():
    # A refused value or a missing mallopt would say False.
    assert spread.keep_heap_pad(spread.HEAP_PAD) is True


def test_a_movie_on_helpers_gives_the_table_and_warnings_of_one_process(tmp_path, monkeypatch):
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, movie(frames=48, side=192, seed=5), metadata={"axes": "TYX"})  # 3.4 MiB
    monkeypatch.setattr(numpy_backend, "cores", lambda: 2)
    monkeypatch.setattr(spread, "MIN_INPUT_BYTES", 1 << 20)
    used = []
    real = batch.locate_spread
    monkeypatch.setattr(batch, "locate_spread", lambda *args: used.append(args[1]) or real(*args))
    options = ["-m", "all", "--peaks", "8", "--min-distance", "3", "--threshold", "5sd", "--extra"]
    before = set(multiprocessing.active_children())
    helped = find(path, *options)
    assert used == [2]
    monkeypatch.setattr(spread, "MIN_INPUT_BYTES", 1 << 40)
    alone = find(path, *options)
    assert used == [2]
    assert helped.exit_code == alone.exit_code == 0
    assert helped.stdout == alone.stdout
    assert helped.stderr.splitlines()[:-1] == alone.stderr.splitlines()[:-1]  # all but the timing line
    assert set(multiprocessing.active_children()) <= before  # the run's helpers ended with it
    assert len(table(helped.stdout)) > 48


def test_shared_work_comes_back_in_item_order_from_the_helpers_and_this_process(pool):
    items = list(range(-40, 0))
    assert numpy_backend.share(pool, abs, items) == [abs(i) for i in items]
    assert numpy_backend.share(pool, abs, items, lambda i: 2 * i) == [abs(2 * i) for i in items]


def _pid(_item):
    return os.getpid()


def test_this_process_takes_its_share_of_few_items(pool):
    pids = numpy_backend.share(pool, _pid, [0, 1])
    assert os.getpid() in pids and len(set(pids)) == 2


def test_this_process_keeps_its_share_of_few_items_from_a_helper_done_at_once():
    # A helper whose item is done before this process claims its own would take that one too, from its
    # callback (a loaded machine made the test above fail so): this process claims its share first.
    from concurrent.futures import Executor, Future

    class DoneAtOnce(Executor):
        def submit(self, fn, *args):
            future = Future()
            future.set_result(("helper", args[0]))
            return future

    got = numpy_backend.share(numpy_backend.Helpers(DoneAtOnce(), 1), lambda item: ("here", item), [0, 1])
    assert sorted(who for who, _ in got) == ["helper", "here"] and [item for _, item in got] == [0, 1]


def test_shared_work_whose_helper_died_runs_here():
    with spread.helpers(1) as pool, numpy_backend.sharing(pool):
        for process in list(pool.executor._processes.values()):
            process.kill()
            process.join(5)
        assert numpy_backend.map_shared(divmod, [7, 9, 11], 4) == [divmod(7, 4), divmod(9, 4), divmod(11, 4)]


def test_a_crowded_volume_whose_fits_ran_on_helpers_gives_the_table_of_one_process(tmp_path, monkeypatch):
    rng = np.random.default_rng(8)
    shape = (24, 96, 96)
    expected = np.full(shape, 100.0)
    centres = rng.uniform(3, np.array(shape) - 4, (120, 3))
    # Pairs closer than their widths: joint fits in batches of several sizes and box shapes.
    centres = np.concatenate([centres, centres[:40] + rng.uniform(1.5, 2.5, (40, 3)) * rng.choice([-1, 1], (40, 3))])
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    for centre in np.clip(centres, 1, np.array(shape) - 2):
        expected += 300 * np.exp(-sum(((g - c) / s) ** 2 for g, c, s in zip(grids, centre, (2.0, 1.3, 1.3))) / 2)
    path = tmp_path / "volume.npy"
    np.save(path, rng.poisson(expected).astype(np.uint16))
    monkeypatch.setattr(numpy_backend, "cores", lambda: 2)
    monkeypatch.setattr(spread, "MIN_INPUT_BYTES", 1 << 10)
    shared = []
    real = numpy_backend.share
    monkeypatch.setattr(
        numpy_backend, "share", lambda pool, fn, items, *more: shared.append(len(items)) or real(pool, fn, items, *more)
    )  # noqa: E501
    options = ["-m", "gaussian", "--peaks", "400", "--min-distance", "2", "--threshold", "180", "--extra"]
    helped = find(path, *options)
    assert shared and all(n > 1 for n in shared)
    monkeypatch.setattr(spread, "MIN_INPUT_BYTES", 1 << 40)
    count = len(shared)
    alone = find(path, *options)
    assert len(shared) == count
    assert helped.stdout == alone.stdout
    assert len(table(helped.stdout)) > 100
