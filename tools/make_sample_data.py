"""Write peakloc's sample heatmaps into a folder, deterministically (fixed seeds).

Usage: python tools/make_sample_data.py sample_data

Files:
- fixations.png: the Gaussian fixation heatmap of the seed demo: 40 random subjects on a 256x256 image,
  Gaussian sigma 33 px, summed, peak normalised to 255, 8-bit grey.
- spots16.png: a 16-bit, non-square (180x240) image with three Gaussian spots at sub-pixel centres.
- pose/keypoints_17x64x48.npy: 17 keypoint heatmaps (float32, axes CYX), Gaussian sigma 2 px.
- volume.tif: a 3-D uint16 volume (ImageJ axes ZYX, 24x48x64) with two spots.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def gaussians(shape: tuple[int, ...], centres: np.ndarray, sigma: float, amplitudes=None) -> np.ndarray:
    """Sum of isotropic Gaussians at `centres` (``(n, ndim)``, array-axis order), float64."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    out = np.zeros(shape)
    amplitudes = np.ones(len(centres)) if amplitudes is None else amplitudes
    for centre, amplitude in zip(centres, amplitudes):
        r2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
        out += amplitude * np.exp(-r2 / (2 * sigma**2))
    return out


def fixations(rng: np.random.Generator) -> np.ndarray:
    """40 subjects' fixations as one heatmap, the seed demo's way: uint8, maximum 255."""
    points = rng.uniform(0, 256, size=(40, 2))
    heat = gaussians((256, 256), points, sigma=33.0)
    return np.round(heat / heat.max() * 255).astype(np.uint8)


def spots16(rng: np.random.Generator) -> np.ndarray:
    centres = np.array([[60.3, 170.7], [120.6, 50.2], [30.1, 30.9]])
    heat = gaussians((180, 240), centres, sigma=3.0, amplitudes=np.array([1.0, 0.7, 0.4]))
    heat = 2000 + 50000 * heat + rng.normal(0, 200, heat.shape)
    return np.clip(np.round(heat), 0, 65535).astype(np.uint16)


def keypoints(rng: np.random.Generator) -> np.ndarray:
    centres = np.stack([rng.uniform(4, 60, 17), rng.uniform(4, 44, 17)], axis=1)
    return np.stack([gaussians((64, 48), c[None], sigma=2.0) for c in centres]).astype(np.float32)


def volume(rng: np.random.Generator) -> np.ndarray:
    centres = np.array([[10.4, 20.2, 40.7], [16.0, 35.5, 12.3]])
    heat = gaussians((24, 48, 64), centres, sigma=2.5, amplitudes=np.array([1.0, 0.6]))
    heat = 100 + 3000 * heat + rng.normal(0, 10, heat.shape)
    return np.clip(np.round(heat), 0, 65535).astype(np.uint16)


def write(folder: Path) -> list[Path]:
    """Write every sample file into `folder`; returns their paths."""
    import cv2
    import tifffile

    rng = np.random.default_rng(20261123)
    (folder / "pose").mkdir(parents=True, exist_ok=True)
    paths = [
        folder / "fixations.png",
        folder / "spots16.png",
        folder / "pose" / "keypoints_17x64x48.npy",
        folder / "volume.tif",
    ]
    cv2.imwrite(str(paths[0]), fixations(rng))
    cv2.imwrite(str(paths[1]), spots16(rng))
    np.save(paths[2], keypoints(rng))
    tifffile.imwrite(paths[3], volume(rng), imagej=True, metadata={"axes": "ZYX"})
    return paths


def main(argv: list[str]) -> None:
    folder = Path(argv[1] if len(argv) > 1 else "sample_data")
    for path in write(folder):
        print(f"{path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv)
