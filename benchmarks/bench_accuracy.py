"""Accuracy of every peakloc method on synthetic heatmaps with known sub-pixel centres.

Usage: python benchmarks/bench_accuracy.py [--maps N] [--calibration-maps N] [--quick]

Baselines computed in the same run: argmax, the seeds' soft-argmax (beta 100 on min-max scaled maps), and
DARK as MMPose implements it (benchmarks/mmpose_dark.py, kernel size matched to the true sigma). For noisy
conditions the Cramer-Rao bound is computed from the Fisher information of the model the maps are drawn
from (Gaussian of unknown centre, amplitude, background and width(s), white noise); clipping at 0 only
removes information, so the bound printed is, if anything, too low (a stricter bar).

Prints RMSE and 95th-percentile error per method and condition, checks the issue's bars, and writes
benchmarks/results/accuracy.{csv,json}. Then the calibration of the reported uncertainties (``x_err``...):
per noisy condition (and Poisson-noise conditions), the standard deviation of error / uncertainty per axis,
written to benchmarks/results/calibration.{csv,json}.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common  # noqa: E402
import mmpose_dark  # noqa: E402

import peakloc  # noqa: E402

OURS = ("local", "quadratic", "dark", "gaussian")


@dataclass(frozen=True)
class Condition:
    name: str
    shape: tuple[int, ...]
    sigma: tuple[float, ...]
    noise: float = 0.0
    background: float = 0.0
    saturate: float | None = None  # multiply by this, clip at 1
    eight_bit: bool = False
    #: Poisson noise instead: the map scaled to this many counts at its peak (background in the same units).
    counts: float | None = None


def conditions() -> list[Condition]:
    out = []
    for s in (1.0, 2.0, 3.0, 4.0):
        for noise, bg in ((0, 0), (0, 0.3), (0.05, 0), (0.1, 0), (0.05, 0.3)):
            tag = (
                "clean"
                if not noise and not bg
                else "+".join(([f"noise {noise}"] if noise else []) + ([f"background {bg}"] if bg else []))
            )
            out.append(Condition(f"2d s{s:g} {tag}", (64, 48), (s, s), noise, bg))
    out += [
        Condition("2d s2 saturated x1.5", (64, 48), (2, 2), saturate=1.5),
        Condition("2d s2 anisotropic 1.5x3", (64, 48), (1.5, 3.0)),
        Condition("2d s2 8-bit", (64, 48), (2, 2), eight_bit=True),
        Condition("2d s2 8-bit saturated x1.5", (64, 48), (2, 2), saturate=1.5, eight_bit=True),
        Condition("2d s2 anisotropic noise 0.05", (64, 48), (1.5, 3.0), noise=0.05),
        Condition("2d s2 128x96 clean", (128, 96), (2, 2)),
        Condition("2d s2 128x96 noise 0.05+background 0.3", (128, 96), (2, 2), 0.05, 0.3),
    ]
    for s in (1.5, 2.0, 3.0):
        out += [
            Condition(f"3d s{s:g} clean", (32, 32, 32), (s, s, s)),
            Condition(f"3d s{s:g} background 0.3", (32, 32, 32), (s, s, s), background=0.3),
            Condition(f"3d s{s:g} noise 0.05", (32, 32, 32), (s, s, s), noise=0.05),
        ]
    out += [
        Condition("3d s2 saturated x1.5", (32, 32, 32), (2, 2, 2), saturate=1.5),
        Condition("3d s2 anisotropic 1.5x2x3", (32, 32, 32), (1.5, 2.0, 3.0)),
    ]
    return out


def gaussian(shape, centre, sigma) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return np.exp(-sum((g - c) ** 2 / (2 * s**2) for g, c, s in zip(grids, centre, sigma)))


def draw(cond: Condition, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shape = np.array(cond.shape)
    margin = np.maximum(4, np.ceil(3 * np.array(cond.sigma)))
    centres = rng.uniform(margin, shape - 1 - margin, size=(n, len(shape)))
    maps = np.stack([gaussian(cond.shape, c, cond.sigma) for c in centres]) + cond.background
    if cond.saturate:
        maps = np.minimum(maps * cond.saturate, 1.0)
    if cond.counts:
        maps = rng.poisson(maps * cond.counts).astype(np.float64)
    if cond.noise:
        maps = np.clip(maps + rng.normal(0, cond.noise, maps.shape), 0, None)
    if cond.eight_bit:
        maps = np.round(np.clip(maps, 0, 1) * 255).astype(np.uint8)
    return maps, centres


def cramer_rao(cond: Condition, centres: np.ndarray) -> float:
    """RMSE bound: sqrt(trace of the centre block of the inverse Fisher information), averaged over centres."""
    ndim = len(cond.shape)
    grids = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in cond.shape], indexing="ij"), -1)
    grids = grids.reshape(-1, ndim)
    sig = np.array(cond.sigma)
    isotropic = len(set(cond.sigma)) == 1
    traces = []
    for c in centres[:50]:
        d = grids - c
        e = np.exp(-0.5 * np.sum((d / sig) ** 2, axis=1))
        cols = [e * d[:, k] / sig[k] ** 2 for k in range(ndim)] + [e, np.ones_like(e)]
        if isotropic:
            cols.append(e * np.sum(d**2, axis=1) / sig[0] ** 3)
        else:
            cols += [e * d[:, k] ** 2 / sig[k] ** 3 for k in range(ndim)]
        jac = np.stack(cols, axis=1)
        info = jac.T @ jac / cond.noise**2
        traces.append(np.trace(np.linalg.inv(info)[:ndim, :ndim]))
    return float(np.sqrt(np.mean(traces)))


#: Poisson-noise conditions of the calibration table: peak counts, background counts per pixel.
POISSON = [
    Condition("2d s2 poisson 500 counts", (64, 48), (2, 2), counts=500),
    Condition("2d s2 poisson 500 counts+background 0.04", (64, 48), (2, 2), background=0.04, counts=500),
    Condition("2d s1.5 poisson 100 counts+background 0.05", (64, 48), (1.5, 1.5), background=0.05, counts=100),
    Condition("2d s3 poisson 2000 counts+background 0.1", (64, 48), (3, 3), background=0.1, counts=2000),
    Condition("3d s2 poisson 300 counts", (32, 32, 32), (2, 2, 2), counts=300),
    Condition("3d s2 poisson 300 counts+background 0.03", (32, 32, 32), (2, 2, 2), background=0.03, counts=300),
]
#: The calibration bar: errors over reported uncertainties have a standard deviation in this range, per axis.
CALIBRATED = (0.9, 1.1)


def calibration(n: int, rng: np.random.Generator) -> tuple[list[dict], list[str]]:
    """Per noisy condition: the standard deviation of (error / reported uncertainty) per axis, per method."""
    print(
        f"\ncalibration: SD of (error / reported uncertainty) per axis, {n} maps each; gaussian's bar "
        f"{CALIBRATED[0]}-{CALIBRATED[1]} (dark's and quadratic's are approximations, shown for reference)"
    )
    rows, failures = [], []
    for cond in [c for c in conditions() if c.noise] + POISSON:
        maps, centres = draw(cond, n, rng)
        ndim = maps.ndim - 1
        start = peakloc.argmax(maps, ndim=ndim)[:, None, :]
        cells, ok = [], True
        for method in ("gaussian", "dark", "quadratic"):
            found = peakloc.refine(maps, start, method=method, ndim=ndim, full_output=True)
            error, reported = found.coords[:, 0] - centres, found.uncertainty[:, 0]
            usable = np.all(np.isfinite(reported) & (reported > 0), axis=1)
            sd = (error[usable] / reported[usable]).std(axis=0)
            if method == "gaussian":
                ok = bool(np.all((sd >= CALIBRATED[0]) & (sd <= CALIBRATED[1])))
            cells.append(f"{method} " + "/".join(f"{v:.3f}" for v in sd) + f" ({usable.mean():.0%})")
            rows.append(
                {
                    "condition": cond.name,
                    "method": method,
                    "maps": n,
                    "usable": int(usable.sum()),
                    **{f"sd_{a}": round(float(v), 4) for a, v in zip("zyx"[3 - ndim :], sd)},
                    "bar_met": ok if method == "gaussian" else "",
                }
            )
        if not ok:
            failures.append(cond.name)
        print(f"  {cond.name:44s} {'PASS' if ok else 'FAIL'}  " + "   ".join(cells), flush=True)
    return rows, failures


#: Crowded pairs: sigma 2, amplitude 1 (the second 1 or 0.5), white noise 0.05 clipped at 0, 64x48 maps.
PAIR_SIGMA, PAIR_NOISE = 2.0, 0.05
SEPARATIONS = (1.0, 1.5, 2.0, 3.0)
#: How a user finds spots here: ``--peaks 2 -m gaussian`` and no other option (#23); the equal pair 2 sigma
#: apart is also run with ``--threshold 5sd``.
PAIR_THRESHOLD = None


def _pair_maps(n: int, separation: float, ratio: float, rng: np.random.Generator):
    """Maps of two spots ``separation`` sigma apart at a random angle: maps, centres ``(n, 2, 2)``."""
    yy, xx = np.mgrid[:64, :48].astype(np.float64)
    middle = rng.uniform([26, 18], [38, 30], (n, 2))
    angle = rng.uniform(0, np.pi, n)
    half = 0.5 * separation * PAIR_SIGMA * np.stack([np.sin(angle), np.cos(angle)], axis=1)
    centres = np.stack([middle + half, middle - half], axis=1)
    maps = np.empty((n, 64, 48))
    for i, (a, b) in enumerate(centres):
        spot = lambda c, amp: amp * np.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / (2 * PAIR_SIGMA**2))  # noqa: E731
        maps[i] = spot(a, 1.0) + spot(b, ratio)
    return np.clip(maps + rng.normal(0, PAIR_NOISE, maps.shape), 0, None), centres


def pair_bound(centres: np.ndarray, ratio: float) -> float:
    """The two-spot model's Cramer-Rao bound on each spot's position (RMS distance, px), averaged over maps.

    Unknowns: both centres and amplitudes, one background and one shared sigma (the model peakloc fits).
    """
    yy, xx = np.mgrid[:64, :48].astype(np.float64)
    grid = np.stack([yy.ravel(), xx.ravel()], axis=1)
    traces = []
    for a, b in centres[:50]:
        cols, width = [], np.zeros(len(grid))
        for c, amp in ((a, 1.0), (b, ratio)):
            d = grid - c
            e = np.exp(-(d**2).sum(axis=1) / (2 * PAIR_SIGMA**2))
            cols += [amp * e * d[:, 0] / PAIR_SIGMA**2, amp * e * d[:, 1] / PAIR_SIGMA**2, e]
            width += amp * e * (d**2).sum(axis=1) / PAIR_SIGMA**3
        jac = np.stack(cols + [np.ones(len(grid)), width], axis=1)
        inverse = np.linalg.inv(jac.T @ jac / PAIR_NOISE**2)
        traces.append((inverse[0, 0] + inverse[1, 1] + inverse[3, 3] + inverse[4, 4]) / 2)
    return float(np.sqrt(np.mean(traces)))


def _matched(found: np.ndarray, truth: np.ndarray) -> np.ndarray | None:
    """Distances of the two true spots to their found partners (the better of the two pairings), or None."""
    if len(found) < 2:
        return None
    found = found[:2]
    direct = np.linalg.norm(found - truth, axis=1)
    swapped = np.linalg.norm(found[::-1] - truth, axis=1)
    return direct if direct.sum() <= swapped.sum() else swapped


def crowded(n: int, rng: np.random.Generator) -> tuple[list[dict], list[str]]:
    """Pairs of spots: the share of maps with both found within 1 px, and their RMSE against the bound."""
    from peakloc.io.axes import Layout
    from peakloc.run.locate import locate
    from peakloc.run.settings import Settings

    try:
        import trackpy
    except ImportError:
        trackpy = None
    print(
        f"\ncrowded pairs: sigma {PAIR_SIGMA:g}, noise {PAIR_NOISE}, {n} maps each; peakloc -m gaussian --peaks 2 "
        f"and no other option (split threshold {Settings().split_threshold:g}); DARK at the same local "
        "maxima; trackpy.locate(diameter 7, separation 2, topn 2). Both found: each true spot has one within 1 "
        "px. Bar: at 2 sigma, equal, both found in 95% and RMSE within 1.2x the two-spot bound"
    )
    rows, failures = [], []
    settings = Settings(methods=("dark", "gaussian"), peaks=2, threshold=PAIR_THRESHOLD, extra=True)
    for ratio in (1.0, 0.5):
        for separation in SEPARATIONS:
            maps, centres = _pair_maps(n, separation, ratio, rng)
            located = locate(maps, Layout("B", (n,), "YX", (64, 48)), settings)
            results = {}
            for method in ("gaussian", "dark"):
                peaks = located.peaks[method]
                results[method] = [_matched(peaks.coords[i][peaks.present[i]], centres[i]) for i in range(n)]
            if trackpy is not None:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    results["trackpy"] = [
                        _matched(trackpy.locate(m, 7, separation=2, topn=2, preprocess=False)[["y", "x"]].to_numpy(), c)
                        for m, c in zip(maps, centres)
                    ]
            bound = pair_bound(centres, ratio)
            name = f"{'equal' if ratio == 1 else '2:1'} pair {separation:g} sigma"
            cells = []
            for method, matched in results.items():
                both = [d for d in matched if d is not None and np.all(d < 1.0)]
                share = len(both) / n
                rmse = float(np.sqrt(np.mean(np.square(both)))) if both else float("nan")
                cells.append(f"{method} {share:6.1%} {rmse:.4f} px ({rmse / bound:.2f}x bound)")
                rows.append(
                    {
                        "condition": name,
                        "method": method,
                        "maps": n,
                        "both_found": round(share, 4),
                        "rmse_px": round(rmse, 6),
                        "bound_px": round(bound, 6),
                    }
                )
            verdict = ""
            if ratio == 1 and separation == 2.0:
                g = rows[-len(results)]
                with_sd = locate(maps, Layout("B", (n,), "YX", (64, 48)), replace(settings, threshold="5sd"))
                sd = with_sd.peaks["gaussian"]
                both = [_matched(sd.coords[i][sd.present[i]], centres[i]) for i in range(n)]
                both = [d for d in both if d is not None and np.all(d < 1.0)]
                sd_share, sd_rmse = len(both) / n, float(np.sqrt(np.mean(np.square(both)))) if both else np.nan
                ok = g["both_found"] >= 0.95 and g["rmse_px"] <= 1.2 * bound
                ok &= sd_share >= 0.95 and sd_rmse <= 1.2 * bound
                verdict = (
                    f"{'PASS' if ok else 'FAIL'} (with --threshold 5sd: {sd_share:.1%}, {sd_rmse / bound:.2f}x bound)"
                )
                rows.append(
                    {"condition": name + ", --threshold 5sd", "method": "gaussian", "maps": n,
                     "both_found": round(sd_share, 4), "rmse_px": round(sd_rmse, 6), "bound_px": round(bound, 6)}
                )  # fmt: skip
                if not ok:
                    failures.append(name)
            split_share = float(np.mean(located.peaks["gaussian"].split.any(axis=1)))
            print(f"  {name:22s} bound {bound:.4f}  split {split_share:5.1%}  " + "   ".join(cells) + f"  {verdict}")
    return rows, failures


def false_splits(n: int, rng: np.random.Generator) -> tuple[list[dict], list[str]]:
    """Single noisy spots: the share of maps where the two-spot test splits the one spot (bar: at most 1%)."""
    from peakloc.io.axes import layout_of
    from peakloc.run.locate import locate
    from peakloc.run.settings import Settings

    print(f"\nsingle spots split in two (-m gaussian --peaks 2, no other option), {n} maps each; bar 1%")
    rows, failures = [], []
    settings = Settings(methods=("gaussian",), peaks=2, threshold=PAIR_THRESHOLD, extra=True)
    for cond in [c for c in conditions() if c.noise]:
        maps, _ = draw(cond, n, rng)
        axes = "C" + "ZYX"[3 - len(cond.shape) :]
        located = locate(maps, layout_of(maps.shape, axes), settings)
        share = float(np.mean(located.peaks["gaussian"].split.any(axis=1)))
        ok = share <= 0.01
        if not ok:
            failures.append(f"false splits: {cond.name}")
        rows.append({"condition": cond.name, "maps": n, "split_share": round(share, 4), "bar_met": ok})
        print(f"  {cond.name:44s} {share:6.2%}  {'PASS' if ok else 'FAIL'}", flush=True)
    return rows, failures


def _scene(rng, shape, sigma, count, pairs):
    """Centres ``(m, ndim)`` of ``count`` spots spread over ``shape`` (at least 6 widths apart), ``pairs`` of
    them with a neighbour 2 to 4 widths away in a random direction; and which have one ``(m,)``."""
    sigma = np.asarray(sigma, np.float64)
    margin = 4 * sigma.max()
    centres: list[np.ndarray] = []
    while len(centres) < count:
        c = rng.uniform(margin, np.array(shape) - margin)
        if all(np.linalg.norm((c - o) / sigma) >= 10 for o in centres):
            centres.append(c)
    centres = np.array(centres)
    direction = rng.normal(size=(pairs, len(shape)))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    partners = centres[:pairs] + direction * rng.uniform(2, 4, (pairs, 1)) * sigma
    paired = np.zeros(count + pairs, bool)
    paired[:pairs] = paired[count:] = True
    return np.concatenate([centres, partners]), paired


def realistic_calibration(n: int, rng: np.random.Generator) -> tuple[list[dict], list[str]]:
    """Error bars on data shaped like an experiment (#23): SD of error / reported error per axis.

    2-D frames (64x64) as a camera records single molecules: spots integrated over each pixel (sigma 1.3),
    lognormal brightness around 1500 photons, 20 background photons, Poisson noise, camera offset 100. 3-D
    volumes (32x96x96), smFISH-like: anisotropic spots (sigma 2.0, 1.3, 1.3), lognormal peak heights around
    300 photons over 100, Poisson noise. A third of the spots have a neighbour 2 to 4 widths away. Found with
    ``--peaks 100 --min-distance 2 --threshold 5sd -m gaussian``, matched one to one within 1 px.
    """
    import workloads
    from scipy.optimize import linear_sum_assignment

    from peakloc.io.axes import Layout
    from peakloc.run.locate import locate
    from peakloc.run.settings import Settings

    print(
        "\nrealistic error bars: SD of (error / x_err...) per axis, matched spots within 1 px; bar 0.9-1.1 on all "
        "of them (isolated and beside a neighbour 2-4 widths away shown apart)"
    )
    rows, failures = [], []
    settings = Settings(methods=("gaussian",), peaks=100, min_distance=2, threshold="5sd", extra=True)
    for name, shape, sigma, count, maps_n in (
        ("2d SMLM frames 64x64, sigma 1.3", (64, 64), (1.3, 1.3), 8, max(20, n)),
        ("3d smFISH volumes 32x96x96, sigma 2/1.3/1.3", (32, 96, 96), (2.0, 1.3, 1.3), 24, max(2, n // 5)),
    ):
        stack, truths, flags = [], [], []
        for _ in range(maps_n):
            centres, paired = _scene(rng, shape, sigma, count, count // 3)
            if len(shape) == 2:
                expected = np.full(shape, 20.0)
                workloads.add_spots(expected, centres, 1500 * rng.lognormal(0, 0.4, len(centres)), sigma)
                stack.append(rng.poisson(expected) + 100.0)
            else:
                expected = np.full(shape, 100.0)
                heights = 300 * rng.lognormal(0, 0.3, len(centres))
                workloads.add_spots(expected, centres, heights * (2 * np.pi) ** 1.5 * np.prod(sigma), sigma)
                stack.append(rng.poisson(expected).astype(np.float64))
            truths.append(centres)
            flags.append(paired)
        axes = "YX" if len(shape) == 2 else "ZYX"
        located = locate(np.stack(stack), Layout("B", (maps_n,), axes, shape), settings)
        g = located.peaks["gaussian"]
        z, near = [], []
        for b, (centres, paired) in enumerate(zip(truths, flags)):
            found, error = g.coords[b][g.present[b]], g.error[b][g.present[b]]
            d = np.linalg.norm(centres[:, None] - found[None], axis=2)
            i, j = linear_sum_assignment(np.where(d <= 1, d, 1e9))
            ok = (d[i, j] <= 1) & np.all(np.isfinite(error[j]), axis=1)
            z.append((found[j[ok]] - centres[i[ok]]) / error[j[ok]])
            near.append(paired[i[ok]])
        z, near = np.concatenate(z), np.concatenate(near)
        spread = {
            k: z[m].std(axis=0) for k, m in (("all", np.ones(len(z), bool)), ("isolated", ~near), ("pairs", near))
        }
        ok = bool(np.all((spread["all"] > 0.9) & (spread["all"] < 1.1)))
        if not ok:
            failures.append(f"realistic error bars: {name}")
        rows.append(
            {"condition": name, "matched": len(z), **{f"sd_{k}": v.round(3).tolist() for k, v in spread.items()},
             "bar_met": ok}
        )  # fmt: skip
        cells = "   ".join(f"{k} {'/'.join(f'{x:.3f}' for x in v)}" for k, v in spread.items())
        print(f"  {name:44s} {'PASS' if ok else 'FAIL'}  {cells}  ({len(z)} spots, {near.sum()} beside a neighbour)")
    return rows, failures


def run_methods(maps: np.ndarray, cond: Condition) -> dict[str, np.ndarray]:
    ndim = maps.ndim - 1
    out = {}
    t = time.perf_counter()
    out["argmax"] = peakloc.argmax(maps, ndim=ndim).astype(np.float64)
    out["seed softargmax"] = peakloc.soft_argmax(maps, beta=100.0, ndim=ndim)
    sigma = float(np.exp(np.mean(np.log(cond.sigma))))
    out["mmpose dark"] = (mmpose_dark.dark_2d if ndim == 2 else mmpose_dark.dark_3d)(
        maps.astype(np.float64) if ndim == 3 else maps, sigma
    )
    start = peakloc.argmax(maps, ndim=ndim)[:, None, :]
    for method in OURS:
        out[method] = peakloc.refine(maps, start, method=method, ndim=ndim)[:, 0]
    out["_seconds"] = time.perf_counter() - t
    return out


#: ``--smooth`` values tried on the fixation maps: off, and about sigma / 8 (undoes the 8-bit plateaus).
SMOOTHS = (0.0, 4.0)


def several_peaks(n_maps: int, rng: np.random.Generator) -> dict:
    """The seed demo's 40-subject fixation maps (256x256, sigma 33, 8-bit): are all true peaks found?

    Per method and ``--smooth``: true peaks with a found peak within 1 px, found peaks with no true peak
    within 1 px (extra). Keys are ``"method"`` or ``"method smooth S"``.
    """
    threshold = 0.25
    configs = [(m, s) for s in SMOOTHS for m in ("argmax",) + OURS]
    keys = [m if not s else f"{m} smooth {s:g}" for m, s in configs]
    found_within = dict.fromkeys(keys, 0)
    found_visible = dict.fromkeys(keys, 0)
    extra = dict.fromkeys(keys, 0)
    worst = dict.fromkeys(keys, 0.0)
    true_total = visible_total = 0
    missed_prominence = dict.fromkeys(keys, 0.0)
    yy, xx = np.mgrid[:256, :256].astype(np.float64)
    for _ in range(n_maps):
        points = rng.uniform(0, 256, size=(40, 2))
        heat = sum(np.exp(-((yy - p[0]) ** 2 + (xx - p[1]) ** 2) / (2 * 33.0**2)) for p in points)
        scale = heat.max()
        heat = heat / scale
        image = np.round(heat * 255).astype(np.uint8)
        # True peaks: local maxima of the analytic map on the image rectangle above the threshold (a maximum
        # on an edge is constrained to it), started from the float64 map's local maxima.
        truth = peakloc.find_peaks(heat, num_peaks=100, min_distance=5, threshold=threshold)
        truth = np.array([_newton(points, t) for t in truth]).reshape(-1, 2)
        # In grey levels: a peak less than one level above its saddle is a sub-level bump in the 8-bit map.
        prominence = _prominence(points, truth) * 255 / scale
        visible = prominence >= 1.0
        true_total += len(truth)
        visible_total += int(visible.sum())
        for smooth in SMOOTHS:
            # As `peakloc find --smooth S` does: every method on the smoothed map.
            work = peakloc.smooth(image, smooth) if smooth else image
            found = peakloc.find_peaks(work, num_peaks=100, min_distance=10, threshold=f"{threshold * 100:g}%")
            for method, key in ((m, k) for (m, s), k in zip(configs, keys) if s == smooth):
                coords = (
                    found.astype(float)
                    if method == "argmax" or not len(found)
                    else peakloc.refine(work, found, method=method)
                )
                if not len(truth) or not len(coords):
                    extra[key] += len(coords)
                    continue
                dist = np.linalg.norm(truth[:, None] - coords[None], axis=-1)
                hit = dist.min(axis=1) <= 1.0
                found_within[key] += int(np.sum(hit))
                found_visible[key] += int(np.sum(hit & visible))
                if (~hit).any():
                    missed_prominence[key] = max(missed_prominence[key], float(prominence[~hit].max()))
                extra[key] += int(np.sum(dist.min(axis=0) > 1.0))
                worst[key] = max(worst[key], float(dist.min(axis=1).max()))
    return {
        k: {
            "maps": n_maps,
            "true_peaks": true_total,
            "found_within_1px": found_within[k],
            "visible_peaks": visible_total,
            "visible_found_within_1px": found_visible[k],
            "largest_missed_prominence_grey_levels": round(missed_prominence[k], 3),
            "extra_peaks": extra[k],
            "worst_distance_px": round(worst[k], 3),
        }
        for k in keys
    }


def _prominence(points: np.ndarray, peaks: np.ndarray, sigma: float = 33.0) -> np.ndarray:
    """Height of each peak above its saddle towards a higher peak, in the analytic map's units (un-normalised).

    The saddle is taken as the lowest point on the straight line to each higher peak, the highest of those:
    an upper bound on the true prominence. The highest peak gets its own height.
    """

    def heat(p):
        return sum(np.exp(-((p[..., 0] - q[0]) ** 2 + (p[..., 1] - q[1]) ** 2) / (2 * sigma**2)) for q in points)

    height = heat(peaks)
    out = height.copy()
    steps = np.linspace(0, 1, 513)[:, None]
    for i, p in enumerate(peaks):
        saddles = [heat(p + (q - p) * steps).min() for j, q in enumerate(peaks) if height[j] > height[i]]
        if saddles:
            out[i] = height[i] - max(saddles)
    return out


def _newton(points: np.ndarray, start: np.ndarray, sigma: float = 33.0, size: int = 256) -> np.ndarray:
    """Maximum of the sum of Gaussians near ``start`` within [0, size - 1]^2; coordinates on an edge stay there."""
    p = start.astype(np.float64)
    free = (p > 0) & (p < size - 1)
    for _ in range(100):
        if not free.any():
            break
        d = p - points
        w = np.exp(-np.sum(d**2, axis=1) / (2 * sigma**2))
        grad = -(w[:, None] * d).sum(0) / sigma**2
        hess = (w[:, None, None] * (d[:, :, None] * d[:, None, :] / sigma**4 - np.eye(2) / sigma**2)).sum(0)
        step = np.zeros(2)
        idx = np.flatnonzero(free)
        step[idx] = np.linalg.solve(hess[np.ix_(idx, idx)], grad[idx])
        p = np.clip(p - step, 0, size - 1)
        free &= (p > 0) & (p < size - 1)  # a maximum pushed onto an edge is constrained to it
        if np.abs(step).max() < 1e-10:
            break
    return p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=200, help="maps per condition (default 200)")
    parser.add_argument("--quick", action="store_true", help="40 maps per condition, fewer fixation maps")
    parser.add_argument(
        "--calibration-maps",
        type=int,
        default=1000,
        help="maps per condition of the calibration table (default 1000: the SD of error/uncertainty is then "
        "known to about 2%%, against the bar's 10%%)",
    )
    args = parser.parse_args()
    n = 40 if args.quick else args.maps
    calibration_maps = 100 if args.quick else args.calibration_maps
    rng = np.random.default_rng(2026)
    rows, failures = [], []
    names = ("argmax", "seed softargmax", "mmpose dark") + OURS
    print(f"{'condition':42s} " + " ".join(f"{m:>15s}" for m in names) + f" {'CRB':>7s}  bar")
    for cond in conditions():
        maps, centres = draw(cond, n, rng)
        results = run_methods(maps, cond)
        crb = cramer_rao(cond, centres) if cond.noise else float("nan")
        stats = {}
        for method in names:
            err = np.linalg.norm(results[method] - centres, axis=1)
            stats[method] = (float(np.sqrt(np.mean(err**2))), float(np.percentile(err, 95)))
        best = min(OURS, key=lambda m: stats[m][0])
        if cond.noise:
            # Paired comparison on the same maps: z of the mean squared-error difference (ours - DARK). The bar
            # is "not significantly worse than DARK" (z < 2): at the bound both tie, and the sign of the
            # difference is the draw's, not the method's.
            diff = (
                np.linalg.norm(results[best] - centres, axis=1) ** 2
                - np.linalg.norm(results["mmpose dark"] - centres, axis=1) ** 2
            )
            z = float(diff.mean() / (diff.std(ddof=1) / np.sqrt(len(diff)))) if diff.std() > 0 else 0.0
            ok = stats[best][0] <= 1.1 * crb and z < 2
            bar = (
                f"{best} {stats[best][0] / crb:.3f}x CRB, {stats[best][0] / stats['mmpose dark'][0]:.3f}x DARK "
                f"(paired z {z:+.1f})"
            )
        else:
            ok = stats[best][0] <= 0.005
            bar = f"{best} {stats[best][0]:.4f} px"
        verdict = "PASS" if ok else "FAIL"
        if ok and cond.noise and stats[best][0] > stats["mmpose dark"][0]:
            verdict = "PASS (tie with DARK: not significantly worse)"
        if not ok:
            failures.append(cond.name)
        cells = " ".join(f"{stats[m][0]:7.4f}/{stats[m][1]:7.4f}" for m in names)
        print(f"{cond.name:42s} {cells} {crb:7.4f}  {verdict} {bar}", flush=True)
        for method in names:
            rows.append(
                {
                    "condition": cond.name,
                    "dims": len(cond.shape),
                    "shape": "x".join(map(str, cond.shape)),
                    "sigma": "x".join(f"{s:g}" for s in cond.sigma),
                    "noise": cond.noise,
                    "background": cond.background,
                    "saturate": cond.saturate or "",
                    "eight_bit": cond.eight_bit,
                    "maps": n,
                    "method": method,
                    "rmse_px": round(stats[method][0], 6),
                    "p95_px": round(stats[method][1], 6),
                    "crb_px": round(crb, 6) if cond.noise else "",
                    "best_of_ours": method == best,
                    "bar_met": ok,
                }
            )
    peaks = several_peaks(5 if args.quick else 20, rng)
    print("\nseveral peaks, seed demo fixation maps (256x256, sigma 33, 8-bit; --threshold 25% --min-distance 10):")
    for method, result in peaks.items():
        print(
            f"  {method:19s} {result['found_within_1px']}/{result['true_peaks']} true peaks within 1 px, "
            f"{result['extra_peaks']} extra, worst distance {result['worst_distance_px']} px; "
            f"{result['visible_found_within_1px']}/{result['visible_peaks']} of prominence >= 1 grey level, "
            f"largest missed prominence {result['largest_missed_prominence_grey_levels']:.2f}"
        )
    best = max(
        (k for k in peaks if not k.startswith("argmax")),  # argmax rows are the integer peaks themselves
        key=lambda k: (peaks[k]["found_within_1px"], -peaks[k]["extra_peaks"]),
    )
    peaks_ok = peaks[best]["found_within_1px"] == peaks[best]["true_peaks"] and peaks[best]["extra_peaks"] == 0
    b = peaks[best]
    print(
        f"  best: {best}: {'PASS' if peaks_ok else 'FAIL'} (every true peak within 1 px, no extra); peaks of "
        f"prominence >= 1 grey level: {b['visible_found_within_1px']}/{b['visible_peaks']} within 1 px"
    )
    if not peaks_ok:
        failures.append("several peaks")
    calibrated, uncalibrated = calibration(calibration_maps, rng)
    failures += [f"calibration: {name}" for name in uncalibrated]
    _common.write("calibration", calibrated, {"failed_conditions": uncalibrated})
    realistic, realistic_failures = realistic_calibration(n, rng)
    failures += realistic_failures
    _common.write("calibration-realistic", realistic, {"failed_conditions": realistic_failures})
    pairs, pair_failures = crowded(n, rng)
    singles, split_failures = false_splits(5 * n, rng)  # 1000 maps: 200 cannot tell 0.5% from 1%
    failures += pair_failures + split_failures
    _common.write("crowded", pairs + singles, {"failed_conditions": pair_failures + split_failures})
    csv_path, _ = _common.write("accuracy", rows, {"several_peaks": peaks, "failed_conditions": failures})
    print(f"\nRMSE/p95 in pixels; {len(failures)} condition(s) below the bar: {failures or 'none'}")
    print(f"written: {csv_path} (and .json)")


if __name__ == "__main__":
    main()
