"""The run layer over many inputs: order, stacking, warnings, and results that depend on their own input."""

import csv
import io as stdio
import subprocess
import sys

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peakloc.cli import main
from peakloc.io.inputs import Input
from peakloc.run import batch
from peakloc.run.settings import METHODS, Settings

from ..conftest import StrictRunner, gaussian


def find(*args):
    result = StrictRunner().invoke(main, ["find", *map(str, args)])
    assert result.exit_code in (0, 1), result.output
    return result


def table(text):
    return list(csv.DictReader(stdio.StringIO(text)))


def rows_of(result, path):
    return [r for r in table(result.stdout) if r["path"] == str(path)]


def warnings_of(result, path):
    return [line for line in result.stderr.splitlines() if line.startswith(f"peakloc: warning: {path}:")]


def assert_same_rows(alone, together):
    """The same rows, ranks and methods; numbers within 1e-9."""
    assert [(r["index"], r["peak"], r["method"]) for r in alone] == [
        (r["index"], r["peak"], r["method"]) for r in together
    ]
    for a, b in zip(alone, together):
        for column, value in a.items():
            if column in ("path", "index", "peak", "method", "fallback", "split") or value == "":
                assert value == b[column], column
            else:
                assert float(value) == pytest.approx(float(b[column]), rel=1e-9, abs=1e-9), column


def _png(path, image):
    cv2.imwrite(str(path), np.round(image / image.max() * 255).astype(np.uint8))
    return path


@pytest.fixture
def crowded(tmp_path):
    """The issue's case: a sharp peak beside a weaker one, and three PNGs of broad peaks of the same size."""
    near = gaussian((64, 64), (30.4, 20.8), 1.5) + 0.6 * gaussian((64, 64), (30.4, 26.8), 2.0)
    files = [_png(tmp_path / "n2.png", near)]
    files += [_png(tmp_path / f"b{i}.png", gaussian((64, 64), (20 + 5 * i, 30 + 4 * i), 6 + i)) for i in range(3)]
    return files


def test_a_files_rows_do_not_depend_on_the_other_files_in_its_run(crowded):
    for options in (["-m", "gaussian,dark"], ["-m", "all", "--peaks", "2", "--extra"]):
        alone = rows_of(find(crowded[0], *options), crowded[0])
        together = rows_of(find(*crowded, *options), crowded[0])
        assert alone == together  # byte for byte: the same computation


def test_stacked_inputs_keep_their_own_warnings(crowded):
    options = ["-m", "dark", "--peaks", "2"]
    alone = find(crowded[0], *options)
    assert warnings_of(alone, crowded[0]) == [
        f"peakloc: warning: {crowded[0]}: dark kept the integer peak for 1 peak "
        "(border, flat or non-positive neighbourhood, or failed fit)"
    ]
    assert warnings_of(find(*crowded, *options), crowded[0]) == warnings_of(alone, crowded[0])


def test_a_stack_that_fails_as_a_whole_is_located_input_by_input(crowded, monkeypatch):
    real = batch.locate

    def refuses_stacks(heatmaps, layout, settings, budget=None, slabs=None):
        if len(heatmaps) > 1:
            raise batch.PeaklocError("a stack failed")
        return real(heatmaps, layout, settings, budget, slabs)

    monkeypatch.setattr(batch, "locate", refuses_stacks)
    outcomes = batch.run_chunk(batch.Job(Settings()), [Input(str(p)) for p in crowded])
    assert [o.errors for o in outcomes] == [[], [], [], []]
    assert [len(o.rows) for o in outcomes] == [2, 2, 2, 2]


def test_many_files_run_in_parallel_chunks_with_rows_in_input_order(tmp_path):
    expected = []
    for i in range(batch.PARALLEL_MIN_INPUTS + batch.CHUNK + 3):
        heat = np.zeros((20 + (i % 3), 30), np.uint8)  # three shapes: stacked in groups, split back
        heat[i % 17, (2 * i) % 29] = 200
        cv2.imwrite(str(tmp_path / f"f{i:03d}.png"), heat)
        expected.append((str(tmp_path / f"f{i:03d}.png"), str((2 * i) % 29), str(i % 17)))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    out = subprocess.run(
        [sys.executable, "-m", "peakloc", "find", str(tmp_path), "-m", "argmax", "-q"], capture_output=True, text=True
    )
    assert out.returncode == 1 and out.stderr.count("peakloc: error:") == 1
    assert [(r["path"], r["x"], r["y"]) for r in table(out.stdout)] == expected


def test_workers_of_a_pool_compute_what_one_process_computes(tmp_path):
    rng = np.random.default_rng(7)
    paths = []
    for i in range(batch.PARALLEL_MIN_INPUTS + 2):
        heat = gaussian((48, 40), rng.uniform(5, 35, 2), rng.uniform(1.0, 4.0)) + 0.05 * rng.random((48, 40))
        paths.append(_png(tmp_path / f"p{i:02d}.png", heat))
    pooled = subprocess.run(
        [sys.executable, "-m", "peakloc", "find", *map(str, paths), "-m", "all", "--peaks", "2", "-q"],
        capture_output=True,
        text=True,
    )
    assert pooled.returncode == 0, pooled.stderr
    for path in paths[:: len(paths) // 4]:
        assert_same_rows(rows_of(find(path, "-m", "all", "--peaks", "2"), path), rows_of(pooled, path))


# ------------------------------------------------------------------------------- batch invariance

_KINDS = ("png8", "png16", "npy32", "npy64")


def _heatmap(draw, shape):
    """A map of one to three Gaussian peaks of random widths, noise and background."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    heat = np.zeros(shape)
    for _ in range(draw(st.integers(1, 3))):
        centre = rng.uniform(0, np.array(shape) - 1)
        sigma = draw(st.floats(0.7, 6.0))
        heat += rng.uniform(0.3, 1.0) * np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre)) / (2 * sigma**2))
    heat += draw(st.sampled_from([0.0, 0.02, 0.1])) * rng.random(shape) + draw(st.sampled_from([0.0, 0.3]))
    return heat


@st.composite
def runs(draw):
    """Several inputs of mixed kinds, some of one shape (stacked together), with their options."""
    shapes = draw(st.lists(st.tuples(st.integers(12, 40), st.integers(12, 40)), min_size=1, max_size=2))
    inputs = []
    for _ in range(draw(st.integers(2, 5))):
        inputs.append((draw(st.sampled_from(_KINDS)), _heatmap(draw, draw(st.sampled_from(shapes)))))
    options = ["-m", "all", "--peaks", str(draw(st.integers(1, 3))), "--extra"]
    if draw(st.booleans()):
        options += ["--normalize", draw(st.sampled_from(["max", "none"])), "--beta", "5"]
    return inputs, options


def _write(folder, k, kind, heat):
    scaled = heat / heat.max()
    if kind == "png8":
        path = folder / f"m{k}.png"
        cv2.imwrite(str(path), np.round(scaled * 255).astype(np.uint8))
    elif kind == "png16":
        path = folder / f"m{k}.png"
        cv2.imwrite(str(path), np.round(scaled * 65535).astype(np.uint16))
    else:
        path = folder / f"m{k}.npy"
        np.save(path, heat.astype(np.float32 if kind == "npy32" else np.float64))
    return path


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=runs())
def test_a_files_rows_and_warnings_are_the_same_alone_and_in_any_run(tmp_path_factory, run):
    inputs, options = run
    folder = tmp_path_factory.mktemp("mix")
    paths = [_write(folder, k, kind, heat) for k, (kind, heat) in enumerate(inputs)]
    together = find(*paths, *options)
    for path in paths:
        alone = find(path, *options)
        assert_same_rows(rows_of(alone, path), rows_of(together, path))
        assert warnings_of(alone, path) == warnings_of(together, path)


def test_every_method_is_in_the_invariance_property():
    assert set(METHODS) == {"argmax", "softargmax", "local", "quadratic", "dark", "gaussian"}


def _events(monkeypatch):
    """``read PATH`` and ``locate N`` (maps at once) in the order the run layer does them."""
    events = []
    real_read, real_locate = batch._read, batch.locate

    def read(job, item, budget):
        events.append(f"read {item.path.rsplit('/', 1)[-1]}")
        return real_read(job, item, budget)

    def locate(heatmaps, layout, settings, budget=None, slabs=None):
        events.append(f"locate {len(heatmaps)}")
        return real_locate(heatmaps, layout, settings, budget, slabs)

    monkeypatch.setattr(batch, "_read", read)
    monkeypatch.setattr(batch, "locate", locate)
    return events


def test_an_input_that_is_not_stacked_is_located_before_the_next_is_read(tmp_path, monkeypatch):
    for k in range(3):
        np.save(tmp_path / f"m{k}.npy", gaussian((20, 30), (5 + k, 9), 2.0))
    events = _events(monkeypatch)
    batch.run_chunk(batch.Job(Settings()), [Input(str(tmp_path / f"m{k}.npy")) for k in range(3)])
    assert events == ["read m0.npy", "locate 1", "read m1.npy", "locate 1", "read m2.npy", "locate 1"]


def test_small_images_wait_to_be_stacked_only_up_to_a_quarter_of_the_budget(tmp_path, monkeypatch):
    paths = []
    for k in range(5):
        image = np.zeros((20, 25), np.uint8)  # 500 bytes each
        image[5 + k, 9] = 200
        cv2.imwrite(str(tmp_path / f"f{k}.png"), image)
        paths.append(Input(str(tmp_path / f"f{k}.png")))
    events = _events(monkeypatch)
    outcomes = batch.run_chunk(batch.Job(Settings()), paths, budget=4 * 1100)
    # Past 1100 bytes held (at the third image), the three waiting are located together.
    assert events == ["read f0.png", "read f1.png", "read f2.png", "locate 3", "read f3.png", "read f4.png", "locate 2"]
    assert [o.rows[0]["y"] for o in outcomes] == [5, 6, 7, 8, 9]
