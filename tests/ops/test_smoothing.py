import cv2
import numpy as np
import pytest

import peakloc
from peakloc.cli import main
from peakloc.errors import PeaklocValueError
from peakloc.ops.smoothing import smoothing_kernels

from ..conftest import StrictRunner

SIGMA = 20.0
CENTRES = ((48.3, 42.7), (47.6, 85.6))  # 43 px apart: the saddle is within one grey level of the lower peak


def two_peaks(yy, xx):
    """Two broad Gaussians, the second 0.97 as high (float64)."""
    heights = (1.0, 0.97)
    return sum(h * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * SIGMA**2)) for h, (cy, cx) in zip(heights, CENTRES))


def merged_pair() -> tuple[np.ndarray, np.ndarray]:
    """An 8-bit map whose two peaks rounding merges, and the float map's maxima (to 0.01 px)."""
    yy, xx = np.mgrid[:96, :128].astype(np.float64)
    scale = 255 / two_peaks(yy, xx).max()
    image = np.round(two_peaks(yy, xx) * scale).astype(np.uint8)
    maxima = []
    # Brute force on a fine grid, one half of the pair each side of the saddle: no code under test involved.
    for lo, hi in ((30, 64), (64, 100)):
        fy, fx = np.mgrid[44:52:0.01, lo:hi:0.01]
        f = two_peaks(fy, fx)
        k = np.unravel_index(np.argmax(f), f.shape)
        maxima.append((fy[k], fx[k]))
    return image, np.array(maxima)


def weighted_quadratic_fit(x: np.ndarray, point: tuple, sigma: float) -> float:
    """Constant term of a Gaussian-weighted least-squares quadratic around ``point``, by lstsq."""
    taps, _, _ = smoothing_kernels(sigma)
    radius = len(taps) // 2
    offsets = np.stack(np.meshgrid(*[np.arange(-radius, radius + 1)] * x.ndim, indexing="ij"), -1).reshape(-1, x.ndim)
    values = x[tuple((np.array(point) + offsets).T)]
    d = offsets.astype(np.float64)
    columns = [np.ones(len(d))] + [d[:, k] for k in range(x.ndim)]
    columns += [d[:, k] * d[:, m] for k in range(x.ndim) for m in range(k, x.ndim)]
    design = np.stack(columns, 1)
    w = np.sqrt(np.exp(-0.5 * np.sum(d**2, axis=1) / sigma**2))
    coef, *_ = np.linalg.lstsq(design * w[:, None], values * w, rcond=None)
    return coef[0]


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_smooth_equals_a_weighted_least_squares_quadratic_fit(ndim):
    x = np.random.default_rng(ndim).random((15,) * ndim)
    centre = (7,) * ndim
    assert peakloc.smooth(x, 1.2, ndim=ndim)[centre] == pytest.approx(weighted_quadratic_fit(x, centre, 1.2), abs=1e-12)


def test_smooth_leaves_quadratic_surfaces_unchanged_inside_the_map():
    z, y, x = np.mgrid[:14, :16, :18].astype(np.float64)
    bowl = 50 - (z - 6.2) ** 2 - 0.3 * (y - 7.9) ** 2 - 0.7 * (x - 8.4) ** 2 + 0.2 * (x - 9) * (z - 7)
    inner = (slice(5, -5),) * 3
    np.testing.assert_allclose(peakloc.smooth(bowl, 1.5, ndim=3)[inner], bowl[inner], atol=1e-10)


def test_smooth_keeps_batch_axes_and_leaves_non_finite_values_out():
    x = np.random.default_rng(0).random((2, 3, 20, 20))
    x[1, 2, 5, 5] = np.nan
    out = peakloc.smooth(x, 2.0)
    assert out.shape == x.shape and out.dtype == np.float64
    assert np.isnan(out).sum() == 1 and np.isnan(out[1, 2, 5, 5])
    np.testing.assert_allclose(out[0, 0], peakloc.smooth(x[0, 0], 2.0))


@pytest.mark.parametrize("sigma", [0, -1.0, float("nan"), float("inf")])
def test_smooth_rejects_a_width_that_is_not_positive_and_finite(sigma):
    with pytest.raises(PeaklocValueError):
        peakloc.smooth(np.zeros((5, 5)), sigma)


def test_rounding_merges_the_pair_and_smoothing_separates_it():
    image, maxima = merged_pair()
    assert len(peakloc.find_peaks(image, num_peaks=3, min_distance=5)) == 1  # the premise
    smoothed = peakloc.smooth(image, 3.0)
    found = peakloc.find_peaks(smoothed, num_peaks=3, min_distance=5)
    assert len(found) == 2
    refined = peakloc.refine(smoothed, found, method="quadratic")
    np.testing.assert_allclose(refined, maxima, atol=0.5)


def test_cli_smooth_finds_both_peaks_and_reports_raw_values(tmp_path):
    image, maxima = merged_pair()
    path = tmp_path / "pair.png"
    cv2.imwrite(str(path), image)
    args = ["find", str(path), "--peaks", "3", "--min-distance", "5", "-m", "argmax,quadratic"]
    plain = StrictRunner().invoke(main, args)
    smoothed = StrictRunner().invoke(main, args + ["--smooth", "3"])
    assert plain.exit_code == 0 and smoothed.exit_code == 0, smoothed.output
    assert len(plain.stdout.splitlines()) == 1 + 2
    rows = [line.split(",") for line in smoothed.stdout.splitlines()[1:]]
    assert [(r[2], r[3]) for r in rows] == [("1", "argmax"), ("1", "quadratic"), ("2", "argmax"), ("2", "quadratic")]
    for row in rows:
        if row[3] == "argmax":  # the raw 8-bit value, not the smoothed one
            assert row[7] == str(image[int(row[5]), int(row[4])])
    refined = np.array([[float(r[5]), float(r[4])] for r in rows if r[3] == "quadratic"])
    np.testing.assert_allclose(refined, maxima, atol=0.5)


def test_cli_rejects_a_negative_smooth(tmp_path):
    path = tmp_path / "m.npy"
    np.save(path, np.zeros((4, 4)))
    result = StrictRunner().invoke(main, ["find", str(path), "--smooth", "-1"])
    assert result.exit_code == 2 and "--smooth" in result.output


def test_a_smoothed_copy_the_temporary_disk_cannot_hold_fails_its_input_in_one_line(tmp_path, monkeypatch):
    import errno
    import os

    from peakloc.run import locate

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    monkeypatch.setattr(locate, "_in_memory_filesystem", lambda path: False)  # TMPDIR on a disk, full
    np.save(tmp_path / "big.npy", np.random.default_rng(0).random((300, 300)).astype(np.float32))
    cv2.imwrite(str(tmp_path / "small.png"), np.eye(9, dtype=np.uint8) * 200)
    result = StrictRunner().invoke(
        main, ["find", str(tmp_path / "big.npy"), str(tmp_path / "small.png"), "--smooth", "2", "--max-memory", "1MiB"]
    )
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"peakloc: error: {tmp_path / 'big.npy'}: no room for a temporary")
    assert "set TMPDIR to a folder with more room" in errors[0]
    assert len([row for row in result.stdout.splitlines() if "small.png" in row]) == 2  # the other input's rows


def test_a_smoothed_copy_in_a_memory_folder_beyond_the_budget_fails_its_input_in_one_line(tmp_path, monkeypatch):
    from peakloc.run import locate

    monkeypatch.setattr(locate, "_in_memory_filesystem", lambda path: True)  # TMPDIR on tmpfs
    np.save(tmp_path / "big.npy", np.random.default_rng(0).random((300, 300)).astype(np.float32))
    cv2.imwrite(str(tmp_path / "small.png"), np.eye(9, dtype=np.uint8) * 200)
    args = ["find", str(tmp_path / "big.npy"), str(tmp_path / "small.png"), "--smooth", "2", "--max-memory", "1MiB"]
    result = StrictRunner().invoke(main, args)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    big = tmp_path / "big.npy"
    assert len(errors) == 1 and errors[0].startswith(f"peakloc: error: {big}: --smooth needs 703.1 KiB")  # 300^2 x 8
    assert "in memory (tmpfs)" in errors[0] and "set TMPDIR to a folder on disk" in errors[0]
    assert len([row for row in result.stdout.splitlines() if "small.png" in row]) == 2  # the other input's rows
    monkeypatch.setattr(locate, "_in_memory_filesystem", lambda path: False)  # on a disk: smoothed there
    assert StrictRunner().invoke(main, args).exit_code == 0
