"""Synthetic microscopy workloads, as microscopists meet them: an SMLM movie and smFISH-like volumes.

Spots are Gaussians integrated over each pixel (differences of ``erf``), in photons, on a background, with
Poisson noise and a camera offset; brightness is lognormal. Each generator returns the frames as the camera
stores them (uint16) and the true centres in pixel coordinates (array-axis order, pixel centres whole).
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf


def _integrated(lo: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    """Share of a 1-D Gaussian's mass in each pixel ``[i - 0.5, i + 0.5]``, ``lo`` the pixel indices."""
    s = sigma * np.sqrt(2.0)
    return 0.5 * (erf((lo + 0.5 - centre) / s) - erf((lo - 0.5 - centre) / s))


def add_spots(image: np.ndarray, centres: np.ndarray, photons: np.ndarray, sigma, reach: int = 4) -> None:
    """Add pixel-integrated Gaussian spots (``photons`` each, ``sigma`` per axis) to ``image``, in place."""
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), (image.ndim,))
    for centre, n in zip(centres, photons):
        corner = np.floor(centre).astype(int)
        lo = [max(0, c - reach * int(np.ceil(s))) for c, s in zip(corner, sigma)]
        hi = [min(size, c + reach * int(np.ceil(s)) + 2) for c, s, size in zip(corner, sigma, image.shape)]
        if any(h <= low for low, h in zip(lo, hi)):
            continue
        profile = None
        for axis, (low, h) in enumerate(zip(lo, hi)):
            p = _integrated(np.arange(low, h, dtype=np.float64), centre[axis], sigma[axis])
            shape = [1] * image.ndim
            shape[axis] = len(p)
            profile = p.reshape(shape) if profile is None else profile * p.reshape(shape)
        image[tuple(slice(low, h) for low, h in zip(lo, hi))] += n * profile


def smlm_movie(
    frames: int = 1000,
    side: int = 128,
    per_frame: float = 15,
    sigma: float = 1.3,
    photons: float = 1500,
    background: float = 20,
    offset: float = 100,
    seed: int = 17,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(frames, side, side)`` uint16 and, per frame, the true centres ``(k, 2)``.

    About ``per_frame`` spots a frame (Poisson), placed at random (neighbours included), brightness
    lognormal around ``photons`` (sigma 0.4), on ``background`` photons, Poisson noise, camera ``offset``.
    """
    rng = np.random.default_rng(seed)
    movie = np.empty((frames, side, side), np.uint16)
    truth = []
    for f in range(frames):
        count = rng.poisson(per_frame)
        centres = rng.uniform(2, side - 3, (count, 2))
        brightness = photons * rng.lognormal(0.0, 0.4, count)
        expected = np.full((side, side), float(background))
        add_spots(expected, centres, brightness, sigma)
        movie[f] = np.clip(rng.poisson(expected) + offset, 0, 65535)
        truth.append(centres)
    return movie, truth


def spot_volume(
    shape: tuple[int, int, int] = (48, 512, 512),
    count: int = 5000,
    sigma: tuple[float, float, float] = (2.0, 1.3, 1.3),
    amplitude: float = 300,
    background: float = 100,
    seed: int = 22,
) -> tuple[np.ndarray, np.ndarray]:
    """A smFISH-like ``shape`` uint16 volume of ``count`` spots (peak ``amplitude`` over ``background``).

    Returns the volume and the spots' centres ``(count, 3)``.

    Spots are anisotropic pixel-integrated Gaussians (``sigma`` per axis), placed at random, Poisson noise.
    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(2, np.array(shape) - 3, (count, 3))
    # Peak height ``amplitude``: a spot's photons are its amplitude times the Gaussian's volume.
    photons = np.full(count, amplitude * (2 * np.pi) ** 1.5 * np.prod(sigma))
    expected = np.full(shape, float(background))
    add_spots(expected, centres, photons, sigma)
    return np.clip(rng.poisson(expected), 0, 65535).astype(np.uint16), centres
