"""DARK as MMPose implements it (``mmpose/codecs/utils/post_processing.py``), kept literal as a baseline.

``gaussian_blur`` and ``refine_keypoints_dark`` follow MMPose 1.x line by line: blur each map with
``cv2.GaussianBlur`` (kernel size given, sigma derived by OpenCV) after zero padding, rescale to the original
maximum, clamp at 1e-10, take the log, then one Newton step per keypoint when ``1 < x < W - 2`` and
``1 < y < H - 2`` and the Hessian is invertible. The 3-D version applies the same steps with a separable
blur of the same kernel and a 3x3 Hessian (MMPose has no 3-D DARK).
"""

from __future__ import annotations

import cv2
import numpy as np


def kernel_size_for(sigma: float) -> int:
    """The odd kernel size whose OpenCV default sigma, 0.3 * ((k - 1) / 2 - 1) + 0.8, is nearest `sigma`."""
    sizes = np.arange(3, 101, 2)
    return int(sizes[np.argmin(np.abs(0.3 * ((sizes - 1) * 0.5 - 1) + 0.8 - sigma))])


def gaussian_blur(heatmaps: np.ndarray, kernel: int = 11) -> np.ndarray:
    assert kernel % 2 == 1
    border = (kernel - 1) // 2
    heatmaps = heatmaps.copy()
    k, h, w = heatmaps.shape
    for i in range(k):
        origin_max = np.max(heatmaps[i])
        dr = np.zeros((h + 2 * border, w + 2 * border), dtype=np.float32)
        dr[border:-border, border:-border] = heatmaps[i].copy()
        dr = cv2.GaussianBlur(dr, (kernel, kernel), 0)
        heatmaps[i] = dr[border:-border, border:-border].copy()
        heatmaps[i] *= origin_max / np.max(heatmaps[i])
    return heatmaps


def refine_keypoints_dark(keypoints: np.ndarray, heatmaps: np.ndarray, blur_kernel_size: int) -> np.ndarray:
    """keypoints ``(N, K, 2)`` in (x, y); heatmaps ``(K, H, W)``."""
    n, k = keypoints.shape[:2]
    h, w = heatmaps.shape[1:]
    heatmaps = gaussian_blur(heatmaps, blur_kernel_size)
    np.maximum(heatmaps, 1e-10, heatmaps)
    np.log(heatmaps, heatmaps)
    keypoints = keypoints.copy()
    for i in range(n):
        for j in range(k):
            x, y = keypoints[i, j, :2].astype(int)
            if 1 < x < w - 2 and 1 < y < h - 2:
                hm = heatmaps[j]
                dx = 0.5 * (hm[y, x + 1] - hm[y, x - 1])
                dy = 0.5 * (hm[y + 1, x] - hm[y - 1, x])
                dxx = 0.25 * (hm[y, x + 2] - 2 * hm[y, x] + hm[y, x - 2])
                dxy = 0.25 * (hm[y + 1, x + 1] - hm[y - 1, x + 1] - hm[y + 1, x - 1] + hm[y - 1, x - 1])
                dyy = 0.25 * (hm[y + 2, x] - 2 * hm[y, x] + hm[y - 2, x])
                derivative = np.array([[dx], [dy]])
                hessian = np.array([[dxx, dxy], [dxy, dyy]])
                if dxx * dyy - dxy**2 != 0:
                    offset = -np.linalg.inv(hessian) @ derivative
                    keypoints[i, j, :2] += np.squeeze(np.array(offset.T), axis=0)
    return keypoints


def dark_2d(maps: np.ndarray, sigma: float) -> np.ndarray:
    """``(B, H, W)`` -> ``(B, 2)`` in (y, x): MMPose's argmax start, then its DARK."""
    b, h, w = maps.shape
    flat = maps.reshape(b, -1).argmax(1)
    keypoints = np.stack([flat % w, flat // w], axis=-1).astype(np.float64)[:, None, :]
    out = np.empty((b, 2))
    kernel = kernel_size_for(sigma)
    for i in range(b):
        refined = refine_keypoints_dark(keypoints[i : i + 1], maps[i : i + 1].astype(np.float32), kernel)
        out[i] = refined[0, 0, ::-1]
    return out


def _blur3(volume: np.ndarray, kernel: int) -> np.ndarray:
    g = cv2.getGaussianKernel(kernel, 0)[:, 0]
    border = (kernel - 1) // 2
    out = np.pad(volume.astype(np.float64), border)
    for axis in range(3):
        out = np.apply_along_axis(lambda v: np.convolve(v, g, mode="same"), axis, out)
    out = out[border:-border, border:-border, border:-border]
    return out * (volume.max() / out.max())


def dark_3d(maps: np.ndarray, sigma: float) -> np.ndarray:
    """``(B, D, H, W)`` -> ``(B, 3)`` in (z, y, x), the same algorithm with a 3x3 Hessian."""
    kernel = kernel_size_for(sigma)
    out = np.empty((len(maps), 3))
    for i, volume in enumerate(maps):
        start = np.array(np.unravel_index(volume.argmax(), volume.shape))
        hm = np.log(np.maximum(_blur3(volume, kernel), 1e-10))
        p = start.copy()
        if np.all((p > 1) & (p < np.array(volume.shape) - 2)):
            e = np.eye(3, dtype=int)
            at = lambda o, hm=hm, p=p: hm[tuple(p + o)]  # noqa: E731
            g = np.array([0.5 * (at(e[k]) - at(-e[k])) for k in range(3)])
            hess = np.empty((3, 3))
            for k in range(3):
                hess[k, k] = 0.25 * (at(2 * e[k]) - 2 * at(0 * e[k]) + at(-2 * e[k]))
                for m in range(k + 1, 3):
                    a, b = e[k], e[m]
                    hess[k, m] = hess[m, k] = 0.25 * (at(a + b) - at(a - b) - at(-a + b) + at(-a - b))
            if np.linalg.det(hess) != 0:
                out[i] = start - np.linalg.solve(hess, g)
                continue
        out[i] = start
    return out
