"""Regenerate the README's overlay figures in docs/ with `peakloc find --overlay` (run by `make figures`).

- docs/overlay_fixations.png: sample_data/fixations.png, ten peaks, argmax and gaussian.
- docs/overlay_volume.png: sample_data/volume.tif (24x48x64), its two spots on three projections.
- docs/overlay_dense.png: a dense field of 300 spots of varied brightness (made here, seeded), the 60 highest
  marked, the next ones ringed faintly, colours over the 0.5..99.5 percentiles.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def dense_field(path: Path) -> None:
    """A 200x300 uint16 star field: 300 Gaussian spots (sigma 1.2 px), a few bright, most faint, Poisson noise."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:200, :300]
    image = np.full((200, 300), 100.0)
    for _ in range(300):
        cy, cx = rng.uniform([2, 2], [197, 297])
        image += rng.pareto(1.5) * 400 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.2**2))
    cv2.imwrite(str(path), np.clip(rng.poisson(image), 0, 65535).astype(np.uint16))


def overlay(args: list[str], produced: str, target: str, folder: Path, cwd: Path = ROOT) -> None:
    """Run ``peakloc find ARGS --overlay`` in ``cwd`` (the overlay's title shows the input as given)."""
    out = folder / Path(target).stem
    subprocess.run(
        [sys.executable, "-m", "peakloc", "find", *args, "--overlay", str(out), "-q", "-o", str(out) + ".csv"],
        check=True,
        cwd=cwd,
    )
    shutil.copyfile(out / produced, DOCS / target)
    print(f"wrote docs/{target}")


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        overlay(
            [
                "sample_data/fixations.png",
                "--peaks",
                "10",
                "--min-distance",
                "10",
                "--threshold",
                "25%",
                "-m",
                "argmax,gaussian",
            ],
            "fixations.png",
            "overlay_fixations.png",
            folder,
        )
        overlay(
            ["sample_data/volume.tif", "--peaks", "2", "--threshold", "20%", "-m", "argmax,gaussian"],
            "volume.png",
            "overlay_volume.png",
            folder,
        )
        dense_field(folder / "field.png")
        overlay(
            [
                "field.png",
                "--peaks",
                "60",
                "--min-distance",
                "2",
                "-m",
                "argmax,gaussian",
                "--overlay-range",
                "0.5%,99.5%",
                "--overlay-scale",
                "3",
            ],
            "field.png",
            "overlay_dense.png",
            folder,
            cwd=folder,
        )


if __name__ == "__main__":
    main()
