"""Memory of `peakloc find` on inputs that would not fit: decompression bombs and, later, big volumes.

Usage: python benchmarks/bench_memory.py [--budget 1GiB] [--quick]

"Memory" is what the run spends: the peak of the anonymous resident memory (RssAnon, /proc/PID/status)
summed over the process and its children, polled every 5 ms. ru_maxrss (what `/usr/bin/time -v` reports,
file-backed pages included) is printed beside it. Every run passes `--max-memory BUDGET`; the baseline
measured in the same run is `python -c "import numpy, cv2, tifffile"`, the interpreter and libraries alone.

Bombs: 30000^2 and 60000^2 8-bit PNG and tiled zlib TIFF (a few MB on disk, 0.8 and 3.4 GiB decoded),
with and without --overlay. Each must fail alone, with its size in the message, within the budget.
Noise: a 512 MiB uniform-noise volume (millions of local maxima) and a 256 MiB uint16 Poisson-noise volume
(ties and one-level bumps everywhere) with --peaks 50 in a quarter of the budget.
Fits: the smFISH-like volume of make bench (48x512x512, 5000 spots) at the default threshold, whose 80 000
local maxima (noise among them) each take a Gaussian fit, with --extra, in 300 MiB.
HDF5 (#25): a 2 GiB float32 volume as a chunked gzip dataset with --peaks 100 in 512 MiB, against its NPY copy.

Writes benchmarks/results/memory.{csv,json} with the machine's description.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common  # noqa: E402

from peakloc.run.budget import describe, parse_size  # noqa: E402

PEAKLOC = [sys.executable, "-m", "peakloc"]


def _anon_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """The process and its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            with open(f"/proc/{current}/task/{current}/children") as handle:
                todo += [int(c) for c in handle.read().split()]
        except OSError:
            pass
    return found


def measure(command: list[str]) -> dict:
    """Run a command; its peak summed RssAnon (polled), ru_maxrss, wall time, exit status and stderr."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        peak = 0
        while process.poll() is None:
            peak = max(peak, sum(_anon_kib(p) for p in _tree(process.pid)))
            time.sleep(0.005)
        seconds = time.perf_counter() - started
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "rc": process.returncode,
        "anon_bytes": peak * 1024,
        "maxrss_bytes": usage.ru_maxrss * 1024,  # the largest child so far: a bound, not this run's own
        "seconds": round(seconds, 3),
        "stderr": stderr.strip().splitlines()[0] if stderr.strip() else "",
    }


def row(name: str, got: dict, budget: int, baseline: dict) -> dict:
    """One result row: the run's memory against its budget and the baseline."""
    return {
        "case": name,
        "exit_status": got["rc"],
        "anon_bytes": got["anon_bytes"],
        "budget_bytes": budget,
        "share_of_budget": round(got["anon_bytes"] / budget, 4),
        "vs_baseline_anon": round(got["anon_bytes"] / max(1, baseline["anon_bytes"]), 3),
        "maxrss_bytes_bound": got["maxrss_bytes"],
        "seconds": got["seconds"],
        "within_budget": got["anon_bytes"] <= budget,
        "message": got["stderr"],
    }


def png_bomb(path: Path, side: int) -> None:
    """An all-zero 8-bit grey PNG of side x side, streamed through zlib (never held in memory)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)))
        compressor = zlib.compressobj(9)
        row = bytes(side + 1)  # filter byte 0, then the row
        block = row * max(1, (1 << 24) // len(row))
        rows_per_block = len(block) // len(row)
        done = 0
        while done < side:
            count = min(rows_per_block, side - done)
            data = compressor.compress(block[: count * len(row)])
            if data:
                handle.write(chunk(b"IDAT", data))
            done += count
        handle.write(chunk(b"IDAT", compressor.flush()) + chunk(b"IEND", b""))


def tiff_bomb(path: Path, side: int) -> None:
    """An all-zero 8-bit TIFF of side x side in zlib-compressed 1024 px tiles, written tile by tile."""
    import tifffile

    tile = np.zeros((1024, 1024), np.uint8)
    count = (-(-side // 1024)) ** 2
    tifffile.imwrite(
        path, (tile for _ in range(count)), shape=(side, side), dtype=np.uint8, tile=(1024, 1024), compression="zlib"
    )


def volume_npy(path: Path, side: int, depth: int | None = None) -> None:
    """A float32 ``depth x side x side`` volume (noise and Gaussian spots, 300 in a cube), written slab by slab."""
    depth = side if depth is None else depth
    rng = np.random.default_rng(0)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(depth, side, side))
    spots = rng.uniform(8, side - 8, (300, 3))
    spots = spots[spots[:, 0] < depth - 8]
    y, x = np.mgrid[:side, :side]
    for z0 in range(0, depth, 16):
        slab = rng.random((min(16, depth - z0), side, side), dtype=np.float32) * 0.1
        for c in spots[np.abs(spots[:, 0] - (z0 + 8)) < 16]:
            for k in range(len(slab)):
                dz = z0 + k - c[0]
                if abs(dz) < 8:
                    box = (slice(int(c[1]) - 8, int(c[1]) + 9), slice(int(c[2]) - 8, int(c[2]) + 9))
                    slab[k][box] += np.exp(-(dz**2 + (y[box] - c[1]) ** 2 + (x[box] - c[2]) ** 2) / 8).astype(
                        np.float32
                    )
        out[z0 : z0 + len(slab)] = slab
    out.flush()
    del out


def as_tiff(source: Path, path: Path) -> None:
    """The same volume as a tiled, zlib-compressed TIFF, written tile by tile."""
    import tifffile

    data = np.load(source, mmap_mode="r")
    tifffile.imwrite(
        path, data, tile=(256, 256), compression="zlib", photometric="minisblack", metadata={"axes": "ZYX"}
    )


def as_ome_zarr(source: Path, path: Path) -> None:
    """The same volume as an OME-Zarr (NGFF 0.4, Zarr v2) store, written by zarr slab by slab."""
    import zarr

    data = np.load(source, mmap_mode="r")
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = group.create_array("0", shape=data.shape, chunks=(64, 256, 256), dtype="f4")
    for z0 in range(0, data.shape[0], 64):
        array[z0 : z0 + 64] = data[z0 : z0 + 64]
    axes = [{"name": n, "type": "space"} for n in "zyx"]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [{"path": "0"}]}]


def _table_run(command: list[str], table: Path, case: str, limit: int, baseline: dict, rows: list) -> list[str]:
    """Run ``command`` (a ``peakloc find`` writing ``table``), record and print its row against ``limit`` bytes.

    Returns the table's lines less the header and the ``path`` column (empty if none was written), for
    comparing the tables of one volume stored in several formats.
    """
    got = measure(command)
    lines = [line.split(",", 1)[1] for line in table.read_text().splitlines()[1:]] if table.exists() else []
    rows.append(row(case, got, limit, baseline))
    print(
        f"{case}: exit {got['rc']}, RssAnon {describe(got['anon_bytes'])} ({got['anon_bytes'] / limit:.1%} of "
        f"{describe(limit)}), {got['seconds']} s, {len(lines)} rows, "
        f"{'PASS' if got['rc'] == 0 and got['anon_bytes'] <= limit else 'FAIL'}"
    )
    return lines


def hdf5_volume(folder: Path, budget: str, baseline: dict, side: int, rows: list) -> None:
    """#25: a ``side/2 x side x side`` volume (1024: 2 GiB) as a chunked gzip HDF5 dataset, ``--peaks 100`` in
    a ``budget`` (512 MiB), against its NPY copy: memory within the budget, and the same table."""
    import h5py

    limit = parse_size(budget)
    volume = folder / "half.npy"
    volume_npy(volume, side, side // 2)
    data = np.load(volume, mmap_mode="r")
    path = folder / "half.h5"
    with h5py.File(path, "w") as f:
        # h5py's own chunks, as a user who asks for gzip gets them: (16, 32, 64) here.
        out = f.create_dataset("exported_data", data.shape, "f4", compression="gzip", compression_opts=1)
        for z0 in range(0, data.shape[0], 32):
            out[z0 : z0 + 32] = data[z0 : z0 + 32]
    del data
    tables = {}
    for name, source in (("NPY", volume), ("HDF5 (chunked, gzip)", path)):
        table = folder / "hdf5.csv"
        command = [*PEAKLOC, "find", str(source), "--peaks", "100", "--max-memory", budget, "-q", "-o", str(table)]
        case = f"{side // 2}x{side}x{side} float32 volume as {name}, --peaks 100, --max-memory {budget}"
        tables[name] = _table_run(command, table, case, limit, baseline, rows)
    same = len(set(map(tuple, tables.values()))) == 1 and bool(tables["NPY"])
    print(f"  the HDF5 table is the NPY's: {same}, {'PASS' if same else 'FAIL'}")
    rows[-1]["identical_to_npy"] = same
    volume.unlink()
    path.unlink()


def pose_npy(path: Path, count: int) -> None:
    """``count`` x 17 x 64 x 48 float32 pose heatmaps (a Gaussian keypoint per map), written in groups."""
    rng = np.random.default_rng(1)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(count, 17, 64, 48))
    y, x = np.mgrid[:64, :48]
    for t0 in range(0, count, 500):
        n = min(500, count - t0)
        centres = rng.uniform(4, [60, 44], (n, 17, 2))
        out[t0 : t0 + n] = np.exp(-((y - centres[..., :1, None]) ** 2 + (x - centres[..., 1:, None]) ** 2) / 8).astype(
            np.float32
        )
    out.flush()
    del out


def volume_formats(folder: Path, budget: str, baseline: dict, side: int, rows: list) -> None:
    """A ``side``^3 volume (1024: 4 GiB) as NPY, tiled zlib TIFF and OME-Zarr: memory, and one table for all three.

    Time too (#24): the NPY run against NumPy's max over the same file's memory map (warm page cache; bar 25x),
    the TIFF and OME-Zarr runs against the NPY run (bar 2x).
    """
    limit = parse_size(budget)
    volume = folder / "big.npy"
    volume_npy(volume, side)
    numpy_max = [sys.executable, "-c", f"import numpy as np; np.load({str(volume)!r}, mmap_mode='r').max()"]
    measure(numpy_max)  # warm the page cache
    base = min(measure(numpy_max)["seconds"] for _ in range(3))
    print(f"NumPy's max over the {side}^3 NPY's memory map: {base} s")
    options = ["--peaks", "100", "--min-distance", "3", "-m", "all", "--overlay", str(folder / "ov"), "-q"]
    tables, seconds = {}, {}
    for name, make in (("npy", None), ("tif", as_tiff), ("ome.zarr", as_ome_zarr)):
        path = volume if make is None else folder / f"big.{name}"
        if make is not None:
            make(volume, path)
        table = folder / f"{name}.csv"
        command = [*PEAKLOC, "find", str(path), *options, "--max-memory", budget, "-o", str(table)]
        case = f"{side}^3 float32 volume as {name.upper()}, --peaks 100 --min-distance 3 -m all --overlay"
        tables[name] = _table_run(command, table, case, limit, baseline, rows)
        seconds[name] = rows[-1]["seconds"]
        if make is None:
            ratio, bar, against = seconds[name] / base, 25, "NumPy's max over its memory map"
            rows[-1].update(numpy_max_seconds=base, time_vs_numpy_max=round(ratio, 3))
        else:
            ratio, bar, against = seconds[name] / seconds["npy"], 2, "the NPY run"
            rows[-1].update(time_vs_npy_run=round(ratio, 3))
        print(f"  {seconds[name]} s = {ratio:.2f}x {against} (bar {bar}x): {'PASS' if ratio <= bar else 'FAIL'}")
        if make is not None:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    print(f"  the three tables are identical: {tables['npy'] == tables['tif'] == tables['ome.zarr']}")
    volume.unlink()


def noise_volume(folder: Path, budget: str, baseline: dict, side: int, rows: list) -> None:
    """Noise volumes ``side/8 x side x side``, with ``--peaks 50`` in a quarter budget.

    The worst case for peak finding: one voxel in 27 is a local maximum, millions of candidates, which a
    map read in pieces must not hold all at once. Float32 uniform noise (512 MiB at 1024) with ``-m all``,
    and uint16 Poisson noise around 100 (256 MiB at 1024), whose ties and one-level bumps are labelled slab
    by slab (issue #21).
    """
    limit = parse_size(budget) // 4
    depth = max(side // 8, 8)
    for dtype, methods in ((np.float32, ["-m", "all"]), (np.uint16, [])):
        path = folder / "noise.npy"
        rng = np.random.default_rng(0)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(depth, side, side))
        for z in range(0, depth, 16):
            shape = (min(16, depth - z), side, side)
            out[z : z + 16] = rng.random(shape, dtype=np.float32) if dtype == np.float32 else rng.poisson(100, shape)
        out.flush()
        del out
        got = measure([*PEAKLOC, "find", str(path), "--peaks", "50", *methods, "--max-memory", str(limit), "-q"])
        kind = "float32 uniform" if dtype == np.float32 else "uint16 Poisson"
        case = f"{depth}x{side}x{side} {kind} noise, --peaks 50 {' '.join(methods)}".rstrip()
        rows.append(row(case, got, limit, baseline))
        verdict = "PASS" if got["rc"] == 0 and got["anon_bytes"] <= limit else "FAIL"
        print(
            f"{case}: exit {got['rc']}, RssAnon {describe(got['anon_bytes'])} ({got['anon_bytes'] / limit:.1%} of "
            f"{describe(limit)}), {got['seconds']} s, {verdict}"
        )
        path.unlink()


def many_fits(folder: Path, budget: str, baseline: dict, quick: bool, rows: list) -> None:
    """Every local maximum of a noisy spot volume fitted (``-m gaussian --extra``) within ``budget``.

    At the default threshold, the noise's local maxima count too: 80 000 peaks in make bench's 5000-spot
    volume, 6.5 million pairs of them within a fit window's reach, which must not all be held at once.
    """
    import workloads

    limit = parse_size(budget)
    shape = (16 if quick else 48, 512, 512)
    volume, _ = workloads.spot_volume(shape, 5000 * shape[0] // 48)
    path = folder / "spots.npy"
    np.save(path, volume)
    options = ["--peaks", "100000", "--min-distance", "2", "-m", "gaussian", "--extra"]
    table = folder / "spots.csv"
    got = measure([*PEAKLOC, "find", str(path), *options, "--max-memory", budget, "-q", "-o", str(table)])
    peaks = sum(1 for _ in open(table)) - 1 if table.exists() else 0
    case = f"{'x'.join(map(str, shape))} uint16 spot volume, {peaks} peaks, {' '.join(options)}"
    rows.append({**row(case, got, limit, baseline), "peaks": peaks})
    verdict = "PASS" if got["rc"] == 0 and got["anon_bytes"] <= limit else "FAIL"
    print(
        f"{case}: exit {got['rc']}, RssAnon {describe(got['anon_bytes'])} ({got['anon_bytes'] / limit:.1%} of "
        f"{describe(limit)}), {got['seconds']} s, {verdict}"
    )
    path.unlink()


def timing(folder: Path, budget: str, baseline: dict, side: int, rows: list) -> None:
    """A ``side/2 x side x side`` volume (1024: 2 GiB), default methods, against NumPy's max over its memory map."""
    limit = parse_size(budget)
    # 2 GiB: the default methods against one read of the data by NumPy, warm page cache.
    half = folder / "half.npy"
    volume_npy(half, side, side // 2)
    numpy_max = [sys.executable, "-c", f"import numpy as np; np.load({str(half)!r}, mmap_mode='r').max()"]
    measure(numpy_max)  # warm the page cache
    base = min(measure(numpy_max)["seconds"] for _ in range(3))
    runs = [
        measure([*PEAKLOC, "find", str(half), "--max-memory", budget, "-q", "-o", str(folder / "h.csv")])
        for _ in range(3)
    ]
    got = min(runs, key=lambda r: r["seconds"])
    case = f"{side // 2}x{side}x{side} float32 (argmax, softargmax)"
    rows.append(
        {
            **row(case, got, limit, baseline),
            "numpy_max_seconds": base,
            "time_vs_numpy_max": round(got["seconds"] / base, 3),
        }
    )
    print(
        f"{case}: {got['seconds']} s = {got['seconds'] / base:.2f}x NumPy's max over the memmap ({base} s), "
        f"RssAnon {describe(got['anon_bytes'])} ({got['anon_bytes'] / limit:.1%}), "
        f"{'PASS' if got['rc'] == 0 and got['anon_bytes'] <= limit and got['seconds'] <= 2 * base else 'FAIL'}"
    )
    half.unlink()


def pose_batch(folder: Path, budget: str, baseline: dict, poses: int, rows: list) -> None:
    """``poses`` x 17 x 64 x 48 pose heatmaps (10000: 2 GiB) streamed in groups, against the in-memory table."""
    limit = parse_size(budget)
    pose = folder / "pose.npy"
    pose_npy(pose, poses)
    in_memory = folder / "pose_mem.csv"
    streamed = folder / "pose_streamed.csv"
    measure([*PEAKLOC, "find", str(pose), "--axes", "TCYX", "-q", "-o", str(in_memory), "--max-memory", "100%"])
    got = measure([*PEAKLOC, "find", str(pose), "--axes", "TCYX", "-q", "-o", str(streamed), "--max-memory", budget])
    same = in_memory.read_bytes() == streamed.read_bytes()
    case = f"{poses}x17x64x48 float32 pose heatmaps --axes TCYX"
    rows.append({**row(case, got, limit, baseline), "identical_to_in_memory": same})
    print(
        f"{case}: RssAnon {describe(got['anon_bytes'])} ({got['anon_bytes'] / limit:.1%}), {got['seconds']} s, "
        f"table identical to the in-memory run: {same}, {'PASS' if same and got['anon_bytes'] <= limit else 'FAIL'}"
    )


#: The benchmark's parts, in the order they run.
PARTS = ("bombs", "volume", "noise", "fits", "timing", "pose", "hdf5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="1GiB")
    parser.add_argument("--quick", action="store_true", help="30000^2 bombs and small big inputs only")
    parser.add_argument("--bomb-sides", default="30000,60000", help="sides of the bombs, comma-separated")
    parser.add_argument("--side", type=int, default=1024, help="the big volume's side (1024: 4 GiB)")
    parser.add_argument("--poses", type=int, default=10000, help="pose frames (10000: 2 GiB)")
    parser.add_argument("--hdf5-budget", default="512MiB", help="budget of the HDF5 volume's run (#25)")
    parser.add_argument("--fits-budget", default="300MiB", help="budget of the fitted spot volume's run")
    parser.add_argument("--only", default=",".join(PARTS), help=f"parts to run, comma-separated: {','.join(PARTS)}")
    args = parser.parse_args()
    parts = [p for p in args.only.split(",") if p]
    if unknown := sorted(set(parts) - set(PARTS)):
        parser.error(f"unknown parts {unknown}; choose from {PARTS}")
    budget = parse_size(args.budget)
    _common.compile_package()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        baseline = measure([sys.executable, "-c", "import numpy, cv2, tifffile"])
        print(f"baseline (python -c 'import numpy, cv2, tifffile'): RssAnon {describe(baseline['anon_bytes'])}")
        sides = [30000] if args.quick else [int(v) for v in args.bomb_sides.split(",") if v]
        sides = sides if "bombs" in parts else []
        for side in sides:
            for kind, make in (("png", png_bomb), ("tif", tiff_bomb)):
                path = folder / f"bomb{side}.{kind}"
                make(path, side)
                for overlay in (False, True):
                    command = [*PEAKLOC, "find", str(path), "--max-memory", args.budget, "-q"]
                    if overlay:
                        command += ["--overlay", str(folder / "ov")]
                    got = measure(command)
                    within = got["anon_bytes"] <= budget
                    name = f"{side}^2 {kind.upper()} bomb ({describe(path.stat().st_size)} on disk)" + (
                        " --overlay" if overlay else ""
                    )
                    rows.append(row(name, got, budget, baseline))
                    print(
                        f"{name}: exit {got['rc']}, RssAnon {describe(got['anon_bytes'])} "
                        f"({got['anon_bytes'] / budget:.1%} of the {describe(budget)} budget, "
                        f"{got['anon_bytes'] / max(1, baseline['anon_bytes']):.2f}x the baseline), "
                        # A bomb passes when the run stays within its budget: refused before decoding (exit 1,
                        # sizes in the message), or, for a TIFF, read in pieces (exit 0).
                        f"{'PASS' if within and got['rc'] in (0, 1) and 'Traceback' not in got['stderr'] else 'FAIL'}"
                        f"\n    {got['stderr']}"
                    )
                if side == 30000 and kind == "tif":
                    # The same image within a budget it fits: decoded, located, an overlay drawn from a pooled
                    # picture; memory must stay within that budget too.
                    fits = "6GiB"
                    for overlay in (False, True):
                        command = [*PEAKLOC, "find", str(path), "--max-memory", fits, "-q"]
                        command += ["--overlay", str(folder / "ov")] if overlay else []
                        got = measure(command)
                        limit = parse_size(fits)
                        name = f"{side}^2 TIF within a {fits} budget" + (" --overlay" if overlay else "")
                        rows.append(row(name, got, limit, baseline))
                        verdict = "PASS" if got["anon_bytes"] <= limit and got["rc"] == 0 else "FAIL"
                        print(
                            f"{name}: exit {got['rc']}, RssAnon {describe(got['anon_bytes'])} "
                            f"({got['anon_bytes'] / limit:.1%} of {describe(limit)}), {got['seconds']} s, {verdict}"
                        )
                path.unlink()
        side = 256 if args.quick else args.side
        if "volume" in parts:
            volume_formats(folder, args.budget, baseline, side, rows)
        if "noise" in parts:
            noise_volume(folder, args.budget, baseline, side, rows)
        if "fits" in parts:
            many_fits(folder, args.fits_budget, baseline, args.quick, rows)
        if "timing" in parts:
            timing(folder, args.budget, baseline, side, rows)
        if "pose" in parts:
            pose_batch(folder, args.budget, baseline, 500 if args.quick else args.poses, rows)
        if "hdf5" in parts:
            hdf5_volume(folder, args.hdf5_budget, baseline, side, rows)
    # A partial run writes its own files, beside the full run's.
    name = "memory" if parts == list(PARTS) else "memory-" + "-".join(parts)
    out = _common.write(name, rows, {"budget": args.budget, "baseline_anon_bytes": baseline["anon_bytes"]})
    print(f"wrote {out[0]} and {out[1]}")


if __name__ == "__main__":
    main()
