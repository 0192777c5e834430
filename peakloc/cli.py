"""The command line: ``peakloc find``. Options in, library calls, one-line errors out.

Heavy modules (torch, OpenCV, tifffile, rich) are imported only on the paths that need them, so that
``--help``, ``--version`` and ``find x.npy`` start fast.
"""

from __future__ import annotations

import gc
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import click

from . import __version__
from .errors import MissingTorchError, PeaklocError
from .ops.normalize import DEFAULT_BETA, DEFAULT_NORMALIZE, NORMALIZE_MODES
from .ops.smoothing import MIN_SMOOTH
from .output.table import COLUMNS, EXTRA_COLUMNS, FORMATS, TableWriter, infer_format
from .run.budget import DEFAULT_MAX_MEMORY, describe, parse_size
from .run.settings import COORDS, METHOD_ALIASES, METHODS, SPLIT_THRESHOLD, Settings, parse_methods

#: Show a progress bar from this many inputs on (when stderr is a terminal).
PROGRESS_MIN_INPUTS = 5


#: Library parameter (as library messages name it, in backticks) -> the option that sets it.
FLAGS = {
    "axes": "--axes",
    "device": "--device",
    "background": "--background",
    "folder": "--overlay folder",
    "threshold": "--threshold",
    "beta": "--beta",
    "max_memory": "--max-memory",
    "colormap": "--decode-colormap",
}
#: Phrases whose parameter has another option's name on the command line.
PHRASES = {"`sigma` of the smoothing": "--smooth"}
_PARAMETER = re.compile(r"`(\w+)`(?:='([^']*)')?")


def as_flags(message: str) -> str:
    """A library message in the command line's words: parameters become the options that set them.

    Examples
    --------
    >>> as_flags("cannot tell the axes of a 4-d array: pass `axes` with 4 letters")
    'cannot tell the axes of a 4-d array: pass --axes with 4 letters'
    >>> as_flags("pass `colormap`='jet' to decode them")
    'pass --decode-colormap jet to decode them'
    """
    for phrase, flag in PHRASES.items():
        message = message.replace(phrase, flag)

    def flag(match: re.Match) -> str:
        name, value = match.groups()
        if name not in FLAGS:
            return match.group(0)
        return FLAGS[name] + (f" {value}" if value is not None else "")

    return _PARAMETER.sub(flag, message)


def _error(message: str) -> None:
    click.echo(f"peakloc: error: {as_flags(message)}", err=True)


def _warning(path: str, message: str) -> None:
    click.echo(f"peakloc: warning: {path}: {as_flags(message)}", err=True)


class MethodList(click.ParamType):
    """A comma-separated list of methods, e.g. ``argmax,softargmax`` or ``both``."""

    name = "METHOD[,METHOD...]"

    def convert(self, value, param, ctx):
        """Parse the list; a bad name is a usage error."""
        if isinstance(value, tuple):
            return value
        try:
            return parse_methods(value)
        except PeaklocError as exc:
            self.fail(str(exc), param, ctx)


class PositiveFloat(click.ParamType):
    """A finite float > 0."""

    name = "FLOAT"

    def convert(self, value, param, ctx):
        """Parse the number; non-numbers, zero, negatives, NaN and inf are usage errors."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not (math.isfinite(number) and number > 0):
            self.fail(f"must be > 0 and finite. Got: {value}", param, ctx)
        return number


def _validate_axes(ctx, param, value):
    if value is None:
        return None
    from .io.axes import validate_axes

    try:
        return validate_axes(value)
    except PeaklocError as exc:
        raise click.BadParameter(as_flags(str(exc))) from None


def _validate_threshold(ctx, param, value):
    if value is None:
        return None
    from .ops.peaks import parse_threshold

    try:
        parse_threshold(value)
    except (ValueError, PeaklocError):
        raise click.BadParameter(
            f"{value!r} is not a number, a percentage like '50%' or noise deviations like '5sd'"
        ) from None
    return value


def _validate_colormap(ctx, param, value):
    if value == "jet":  # the default needs no OpenCV import at start-up
        return value
    from .io.colormaps import names as colormap_names

    names = colormap_names()
    if value.lower() not in names:
        raise click.BadParameter(f"{value!r} is not an OpenCV colour map; choose from {', '.join(names)}")
    return value.lower()


def _validate_overlay_range(ctx, param, value):
    if value is None:
        return None
    from .output.overlay import ColourRange

    try:
        return ColourRange.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _validate_spacing(ctx, param, value):
    if value is None:
        return None
    parts = value.split(",")
    try:
        sizes = tuple(float(p) for p in parts)
    except ValueError:
        sizes = ()
    if len(sizes) not in (2, 3) or not all(0 < s < float("inf") for s in sizes):
        raise click.BadParameter(f"{value!r} is not Z,Y,X or Y,X: two or three positive numbers")
    return sizes


def _validate_decode_colormap(ctx, param, value):
    if value is None:
        return None
    from .io.colormaps import names

    if value.lower() not in names():
        raise click.BadParameter(f"{value!r} is not an OpenCV colour map; choose from {', '.join(names())}")
    return value.lower()


def _validate_max_memory(ctx, param, value):
    try:
        return parse_size(value)
    except PeaklocError as exc:
        raise click.BadParameter(as_flags(str(exc))) from None


def _validate_smooth(ctx, param, value):
    if value is not None and value != 0 and not value >= MIN_SMOOTH:
        raise click.BadParameter(f"must be 0 (off) or at least {MIN_SMOOTH} px. Got: {value}")
    return value


def _resolve_device(device: str) -> str:
    """``cpu`` stays NumPy; ``cuda`` needs torch and a GPU; ``auto`` takes the GPU when there is one."""
    if device == "cpu":
        return "cpu"
    try:
        from .backends import load_torch

        available = load_torch("`device`='cuda'").cuda_available()
    except MissingTorchError as exc:
        if device == "auto":
            return "cpu"
        raise click.BadParameter(as_flags(str(exc)), param_hint="'--device'") from None
    if available:
        return "cuda"
    if device == "auto":
        return "cpu"
    raise click.BadParameter("CUDA is not available on this machine (torch sees no GPU)", param_hint="'--device'")


def option_group(*options: Callable) -> Callable:
    """Several Click options as one decorator, listed in ``--help`` in the order given."""

    def apply(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


#: Which methods run, and the sub-pixel methods' settings.
method_options = option_group(
    click.option(
        "-m",
        "--method",
        "methods",
        type=MethodList(),
        default="both",
        show_default=True,
        help=f"Methods, comma-separated: {', '.join(METHODS)}; 'both' = {','.join(METHOD_ALIASES['both'])}; "
        "'all' = every method.",
    ),
    click.option(
        "--window",
        type=click.IntRange(min=1),
        metavar="PIXELS",
        help="local: half-width of the soft-argmax window. Default: twice the peak's estimated sigma (>= 2).",
    ),
    click.option(
        "--sigma",
        type=PositiveFloat(),
        metavar="PIXELS",
        help="dark: sigma of the blur, the heatmaps' Gaussian width. Default: estimated per peak.",
    ),
    click.option(
        "--smooth",
        type=click.FloatRange(min=0),
        default=0.0,
        callback=_validate_smooth,
        metavar="PIXELS",
        help="Before every method, replace each heatmap by a local quadratic fit with Gaussian weights of this "
        "sigma (a Savitzky-Golay filter): it keeps broad peaks in place and separates peaks that 8-bit rounding "
        "merged into one plateau. About 1/8 of the peak's sigma, at least 0.5; values stay the raw heatmap's. "
        "Default: 0, off.",
    ),
)
#: How many peaks per heatmap, and which count.
peak_options = option_group(
    click.option(
        "--peaks",
        "num_peaks",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        metavar="K",
        help="Find up to K local maxima per heatmap, highest first; every method refines each (softargmax is "
        "global: rank 1 only).",
    ),
    click.option(
        "--min-distance",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        metavar="PIXELS",
        help="Minimum distance between peaks (Chebyshev, pixels), as scikit-image's peak_local_max.",
    ),
    click.option(
        "--threshold",
        callback=_validate_threshold,
        metavar="VALUE[%|sd]",
        help="Peaks must be strictly above this raw value, above N% of the heatmap's maximum ('50%'), or N "
        "noise standard deviations above its background ('5sd': the median of the heatmap's values, and 1.4826 x "
        "the median of their deviations above it). Default: above the heatmap's minimum.",
    ),
    click.option(
        "--split-threshold",
        type=click.FloatRange(min=0),
        default=SPLIT_THRESHOLD,
        show_default=True,
        metavar="CHI2",
        help="With -m gaussian and --peaks above 1: a peak is split into two spots (the --extra column split) "
        "where a two-spot fit beats the one-spot fit by more than this likelihood-ratio statistic; 'inf': "
        "never split.",
    ),
)
#: The soft-argmax's sharpness and scaling.
softargmax_options = option_group(
    click.option(
        "-b",
        "--beta",
        type=PositiveFloat(),
        default=DEFAULT_BETA,
        show_default=True,
        help="Soft-argmax sharpness: weights are exp(beta * (v - max v)); > 0. kornia's temperature is 1/beta.",
    ),
    click.option(
        "--normalize",
        type=click.Choice(NORMALIZE_MODES),
        default=DEFAULT_NORMALIZE,
        show_default=True,
        help="Scaling of each heatmap before beta: minmax to [0, 1], max divides by the maximum, none raw.",
    ),
)
#: How inputs are found and read.
input_options = option_group(
    click.option(
        "--axes",
        callback=_validate_axes,
        metavar="TEXT",
        help="Axis letters of the stored array, e.g. YX, ZYX, CYX, TCZYX. Z, Y, X are spatial; others are "
        "batch axes. Default: TIFF metadata, else X / YX / ZYX by the number of axes.",
    ),
    click.option("-r", "--recursive", is_flag=True, help="Enter subfolders of directory inputs."),
    click.option(
        "--decode-colormap",
        callback=_validate_decode_colormap,
        metavar="NAME",
        help="Read colour images as heatmaps coloured by this OpenCV colour map (jet, viridis, ...): each "
        "pixel becomes the value whose colour is nearest. Default: colour becomes grey (luminance).",
    ),
)
#: The table: where, which format, which coordinates and columns.
output_options = option_group(
    click.option(
        "-o", "--output", default="-", show_default=True, metavar="PATH", help="Table file; '-' is standard output."
    ),
    click.option(
        "-f",
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        help="Table format. Default: from the output's extension (.csv .tsv .json .jsonl), else csv.",
    ),
    click.option(
        "--coords",
        type=click.Choice(COORDS),
        default="pixel",
        show_default=True,
        help="pixel: array indices (pixel centres are whole numbers); normalized: [-1, 1], centre of first "
        "pixel to centre of last.",
    ),
    click.option(
        "--extra",
        is_flag=True,
        help="Add columns after value: sigma (peak width, px), amplitude (height above background), snr "
        "(amplitude / noise, a confidence), fallback (true where a method kept the integer peak, or where "
        "gaussian kept a spot's own fit for a failed joint fit).",
    ),
)
#: Overlay pictures.
overlay_options = option_group(
    click.option(
        "--overlay",
        type=click.Path(),
        metavar="DIR",
        help="Write one PNG per heatmap into DIR (created if needed): the map in a colour map, peaks marked; and "
        "DIR/index.html, one page listing the run beside its overlays.",
    ),
    click.option(
        "--colormap",
        default="jet",
        show_default=True,
        callback=_validate_colormap,
        metavar="NAME",
        help="Overlay colour map: any OpenCV colour map name (jet, viridis, turbo, inferno, ...).",
    ),
    click.option(
        "--overlay-scale",
        type=click.IntRange(1, 64),
        metavar="N",
        help="Overlay zoom factor (nearest neighbour). Default: enough for about 256 px on the short side.",
    ),
    click.option("--overlay-sheet", is_flag=True, help="Also write one contact sheet per file of several heatmaps."),
    click.option(
        "--background",
        type=click.Path(dir_okay=False),
        metavar="IMAGE",
        help="Blend 2-D overlays over this photograph (the heatmap fitted inside it, keeping its aspect, more "
        "opaque where its values are higher) and mark the peaks there.",
    ),
    click.option(
        "--overlay-range",
        metavar="LO,HI",
        callback=_validate_overlay_range,
        help="Overlay colour range: percentiles of the values shown ('0.5%,99.5%') or raw values ('0,255'). "
        "Default: the heatmap's finite minimum and maximum.",
    ),
    click.option(
        "--spacing",
        metavar="Z,Y,X",
        callback=_validate_spacing,
        help="Voxel size for overlays, in any one unit (or Y,X): volumes are drawn with their true aspect. "
        "Default: from TIFF (OME, ImageJ) and OME-Zarr metadata, else cubic voxels.",
    ),
)
#: Where and how the run goes.
run_options = option_group(
    click.option(
        "--device",
        type=click.Choice(["cpu", "cuda", "auto"]),
        default="cpu",
        show_default=True,
        help="cpu (NumPy, no torch needed), cuda (torch on the GPU), auto (cuda if available).",
    ),
    click.option(
        "--max-memory",
        default=DEFAULT_MAX_MEMORY,
        show_default=f"{DEFAULT_MAX_MEMORY} of this machine's memory, {describe(parse_size(DEFAULT_MAX_MEMORY))}",
        callback=_validate_max_memory,
        metavar="SIZE",
        help="The run's memory budget: 512MiB, 4GiB (powers of 1024), 512MB, 4GB (powers of 1000), or 25% of "
        "the machine's memory. An input that would need more fails alone, before it is decoded.",
    ),
    click.option(
        "--dask",
        metavar="ADDRESS",
        help="Run on a Dask cluster: tcp://host:port of its scheduler, or its scheduler file (dask scheduler "
        "--scheduler-file FILE). The workers read the inputs and write the overlays themselves: inputs and "
        "--overlay DIR must be on storage they all share. --max-memory is each worker's, shared by its "
        "threads. Needs pip install 'peakloc[dask]'.",
    ),
    click.option("--fail-fast", is_flag=True, help="Stop at the first input that fails (default: keep going)."),
    click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary on stderr."),
    click.option("--debug", is_flag=True, help="Print the traceback of each input's failure (for bug reports)."),
)


def long_forms(params: list[click.Parameter], args: list[str]) -> list[str]:
    """``args`` with each short option (``-q``) that stands alone spelled long (``--quiet``); the same parse.

    Click 8.5 tries every option as a long one first. A short one fails that match by raising NoSuchOption,
    whose construction looks up a translation and imports :mod:`difflib` to rank every long option by
    likeness: 4 ms of a one-file run, spent on an option that then parses as it should. Tokens that click
    takes as an option's value, and everything after ``--``, are left as they are.

    Examples
    --------
    >>> quiet = click.Option(["-q", "--quiet"], is_flag=True)
    >>> output = click.Option(["-o", "--output"])
    >>> long_forms([quiet, output], ["a.png", "-q", "-o", "-q", "--output", "-o", "--", "-q"])
    ['a.png', '--quiet', '--output', '-q', '--output', '-o', '--', '-q']
    """
    spelled: dict[str, str] = {}
    values: dict[str, int] = {}  # option string -> how many values follow it
    for param in params:
        if not isinstance(param, click.Option):
            continue
        names = param.opts + param.secondary_opts
        follow = 0 if param.is_flag or param.count else max(1, param.nargs)
        values.update(dict.fromkeys(names, follow))
        long = next((name for name in param.opts if name.startswith("--")), None)
        if long is not None:
            spelled.update({name: long for name in param.opts if len(name) == 2 and name[0] == "-" != name[1]})
    out: list[str] = []
    skip = 0
    for k, arg in enumerate(args):
        if skip:
            skip -= 1
        elif arg == "--":
            out.extend(args[k:])
            break
        else:
            skip = values.get(arg, 0)
            arg = spelled.get(arg, arg)
        out.append(arg)
    return out


class LongFormCommand(click.Command):
    """A click command that parses its short options in their long form (:func:`long_forms`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Click's parse of :func:`long_forms` of ``args``."""
        return super().parse_args(ctx, long_forms(self.params, args))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="peakloc", message="%(prog)s %(version)s")
def main() -> None:
    """Find peaks in heatmaps: PNG, NPY and TIFF files, 2-D images and 3-D volumes."""


def entry() -> None:
    """The ``peakloc`` command: :func:`main`, ending without the interpreter's last full garbage collection.

    At exit, that collection walks every object of the modules NumPy, SciPy and OpenCV loaded: 30-40 ms of
    every run (of the SMLM movie's 1.7 s). Frozen first (``gc.freeze``), they are left out of it; the rest of
    a normal exit still happens (``atexit`` handlers, streams flushed, modules cleared, files closed).
    """
    try:
        main()
    finally:
        gc.freeze()


@main.command(cls=LongFormCommand, no_args_is_help=False)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@method_options
@peak_options
@softargmax_options
@input_options
@output_options
@overlay_options
@run_options
def find(inputs: tuple[str, ...], **options) -> None:
    """Locate the peaks of every heatmap in INPUT... and write a table.

    INPUT is a file (.png, .npy, .tif/.tiff, .jpg, .bmp, ...), a .zarr store, an HDF5 file (.h5, .hdf5,
    .hdf; FILE.h5:/group/dataset picks one of its datasets), a directory (its supported files, sorted by
    name), '-' to read paths from standard input, one per line, or a URL read through fsspec
    (s3://bucket/a.zarr, file:///data/a.npy).

    Columns: path, index, peak, method, x, y, z, value. Exit status: 0 all inputs done, 1 some failed
    (one 'peakloc: error: PATH: reason' line each), 2 usage error; after a signal 130 (SIGINT), 143
    (SIGTERM), 129 (SIGHUP), with no partial table left.
    """
    from .io.inputs import expand

    output, quiet, fail_fast = options.pop("output"), options.pop("quiet"), options.pop("fail_fast")
    debug, address = options.pop("debug"), options.pop("dask")
    fmt = infer_format(output, options.pop("fmt"))
    found = expand(inputs, options.pop("recursive"), sys.stdin)
    todo = found.inputs
    if output != "-":
        _check_output(output, [i.path for i in todo])
    settings = _settings(options)
    ctx = click.get_current_context()
    job = _job(settings, [i.path for i in todo], debug, bool((ctx.obj or {}).get("reraise")))
    columns = COLUMNS + EXTRA_COLUMNS if settings.extra else COLUMNS
    started = time.perf_counter()
    failed = heatmaps = done = 0
    writer = client = None
    page = None
    if settings.overlay is not None:
        from .output.index_page import Page

        page = Page(settings.overlay.folder)
    # The handlers come first: a signal from the moment the partial table exists removes it.
    with _signals_end_the_run(lambda: writer is not None and writer.discard()):
        try:
            writer = _open_table(output, fmt, columns)
            for where, message in found.notes:
                _warning(where, message)
            if not todo:
                _error(f"no input file: {', '.join(inputs)} name{'s' * (len(inputs) == 1)} no file to read")
                sys.exit(1)
            client = _connect(address) if address else None
            from .run.batch import outcomes

            with outcomes(job, todo, client) as results, _progress(len(todo), quiet) as advance:
                for outcome in _until_the_cluster_fails(results):
                    done += 1
                    advance()
                    for message in outcome.warnings:
                        _warning(outcome.path, message)
                    heatmaps += outcome.heatmaps
                    writer.write(outcome.rows)
                    if page is not None:
                        page.add(outcome.path, outcome.rows, outcome.overlays, outcome.errors, outcome.warnings)
                    for message in outcome.errors:
                        _error(f"{outcome.path}: {message}")
                    if outcome.traceback:
                        click.echo(outcome.traceback.rstrip(), err=True)
                    if outcome.errors:
                        failed += 1
                        if fail_fast:
                            break
            writer.close()
        except _ClusterLost as exc:
            # The rows of the inputs done stay; the others are not run.
            writer.close()
            failed += len(todo) - done
            _error(f"{exc}; {len(todo) - done} input{'s' * (len(todo) - done != 1)} not run")
        except BrokenPipeError:
            # The reader of standard output went away (`peakloc find ... | head`): stop quietly.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(1)
        except (KeyboardInterrupt, _Signalled) as exc:
            if writer is not None:
                writer.discard()
            _end_now(128 + (exc.signum if isinstance(exc, _Signalled) else signal.SIGINT))
        except BaseException:
            if writer is not None:
                writer.discard()
            raise
    if client is not None:
        client.close(timeout=CLOSE_TIMEOUT)
    if page is not None:
        try:
            page.write(job.protected)
        except PeaklocError as exc:
            _error(str(exc))
            failed += 1
    if not quiet:
        seconds = time.perf_counter() - started
        click.echo(
            f"peakloc: {len(todo)} file{'s' * (len(todo) != 1)}, {heatmaps} heatmap{'s' * (heatmaps != 1)}, "
            f"{failed} failed, {seconds:.2f} s",
            err=True,
        )
    sys.exit(1 if failed else 0)


#: Seconds to wait for a clean goodbye from the Dask scheduler.
CLOSE_TIMEOUT = 5


class _ClusterLost(Exception):
    """The Dask scheduler went away mid-run."""


def _until_the_cluster_fails(results):
    """The outcomes, until the cluster (if any) is lost: then :class:`_ClusterLost` with its reason."""
    try:
        yield from results
    except PeaklocError as exc:
        from .run.cluster import ClusterError

        if isinstance(exc, ClusterError):
            raise _ClusterLost(str(exc)) from None
        raise


def _connect(address: str):
    """A client of the Dask scheduler at ``address``; a usage error (exit 2) when it cannot be had."""
    try:
        import distributed  # noqa: F401 - only to say what is missing
    except ImportError:
        raise click.BadParameter("needs Dask: pip install 'peakloc[dask]'", param_hint="'--dask'") from None
    from .run.cluster import ClusterError, connect

    try:
        return connect(address)
    except ClusterError as exc:
        raise click.BadParameter(str(exc), param_hint="'--dask'") from None


def _end_now(status: int) -> None:
    """Exit at once after a signal, streams flushed.

    No interpreter clean-up: it would join the worker pool (see :func:`peakloc.run.batch.outcomes`).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


class _Signalled(BaseException):
    """SIGTERM or SIGHUP arrived: the run ends as ^C ends it, with the partial table removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


#: Seconds a run that a signal ended may take to unwind; past them it ends at once, its partial table removed.
SIGNAL_GRACE = 10.0


def _watchdog(signum: int, cleanup) -> None:
    """End the process ``SIGNAL_GRACE`` seconds from now, whatever the main thread is blocked on.

    The main thread unwinds and exits long before (:func:`_end_now`); this is for the rare run whose main
    thread waits on something the same signal broke (a pool's lock, a pipe nobody reads).
    """
    import threading

    def fire():
        try:
            cleanup()
        except Exception:  # noqa: BLE001 - the main thread may have removed it already
            pass
        os._exit(128 + signum)

    timer = threading.Timer(SIGNAL_GRACE, fire)
    timer.daemon = True
    timer.start()


@contextmanager
def _signals_end_the_run(cleanup=lambda: None):
    """While the block runs, SIGINT, SIGTERM and SIGHUP end it: each arms :func:`_watchdog`, then raises.

    SIGINT raises ``KeyboardInterrupt``, as Python's own handler does, the others :class:`_Signalled`. The
    watchdog is there for SIGINT too: Python raises the exception wherever the main thread is, and inside a
    finaliser it is printed and dropped ("Exception ignored in"); such a ^C, lost, had a run go on to its end
    with status 0. A signal the caller ignores (``nohup``, a job started with ``&`` by a script) stays ignored.
    """

    def end(signum, frame):
        _watchdog(signum, cleanup)
        raise KeyboardInterrupt if signum == signal.SIGINT else _Signalled(signum)

    handled = [s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if signal.getsignal(s) is not signal.SIG_IGN]
    previous = {s: signal.signal(s, end) for s in handled}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _open_table(output: str, fmt: str, columns: tuple[str, ...]) -> TableWriter:
    """The table writer, opened before any input is read: a folder that is missing or read-only is a usage error."""
    try:
        return TableWriter(output, fmt, columns)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise click.BadParameter(f"cannot write {output}: {reason}", param_hint="'--output'") from None


def _settings(options: dict) -> Settings:
    """The one settings object from the options that describe the work (the rest are consumed by ``find``)."""
    overlay = _overlay_settings(
        options.pop("overlay"),
        options.pop("colormap"),
        options.pop("overlay_scale"),
        options.pop("overlay_sheet"),
        options.pop("background"),
        options.pop("overlay_range"),
        options.pop("spacing"),
    )
    options["device"] = _resolve_device(options["device"])
    options["peaks"] = options.pop("num_peaks")
    return Settings(**options, overlay=overlay)


def _job(settings: Settings, paths: list[str], debug: bool, reraise: bool):
    """The run's job: settings, for overlays one unique file name per input and the inputs to protect.

    ``reraise`` comes from Click's context object, which only the test suite sets (``obj={"reraise": True}``):
    there peakloc's own bugs raise instead of becoming an input's error line.
    """
    from .run.batch import Job

    if settings.overlay is None:
        return Job(settings, debug=debug, reraise=reraise)
    from .io.hdf5 import split_selector
    from .output.overlay_files import base_names

    names = base_names(paths)
    files = frozenset(os.path.realpath(split_selector(p)[0]) for p in paths)  # an HDF5 file, not its dataset
    return Job(settings, names, files, debug, reraise)


def _overlay_settings(folder, colormap, scale, sheet, background, value_range, spacing):
    """Overlay settings, or None without --overlay (its companion options then make no sense)."""
    ctx = click.get_current_context()
    if folder is None:
        given = [
            f"--{n.replace('_', '-')}"
            for n in ("colormap", "overlay_scale", "overlay_sheet", "background", "overlay_range", "spacing")
            if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise click.UsageError(f"{', '.join(given)} needs --overlay DIR")
        return None
    from .output.overlay_files import OverlaySettings, read_background

    photo = None
    if background is not None:
        try:
            photo = read_background(background)
        except PeaklocError as exc:
            raise click.BadParameter(as_flags(str(exc)), param_hint="'--background'") from None
    return OverlaySettings(folder, colormap, scale, sheet, photo, value_range, spacing)


def _check_output(output: str, inputs: list[str]) -> None:
    """Refuse an output path that is one of the inputs (never write over an input) or sits in no folder."""
    target = Path(output)
    if target.is_dir():
        raise click.BadParameter(f"{output} is a directory", param_hint="'--output'")
    if not target.parent.is_dir() and str(target.parent) != "":
        raise click.BadParameter(f"folder {target.parent} does not exist", param_hint="'--output'")
    try:
        status = os.stat(target)
    except OSError:  # nothing there yet: no input is it
        return
    for path in inputs:  # os.path.samefile, with the output's side stat'ed once
        try:
            found = os.stat(path)
        except (OSError, ValueError):
            continue
        if (found.st_ino, found.st_dev) == (status.st_ino, status.st_dev):
            raise click.BadParameter(
                f"{output} is one of the inputs; peakloc never writes over an input", param_hint="'--output'"
            )


class _NoProgress:
    def __enter__(self):
        return lambda: None

    def __exit__(self, *exc):
        return False


class _RichProgress:
    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("peakloc"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            # Its own copy of stderr: while an input is read, fd 2 goes to a capture file (run/capture.py),
            # and the bar's refreshes from its thread must not land there.
            console=Console(file=os.fdopen(os.dup(2), "w"), force_terminal=True),
            transient=True,
        )
        self._task = self._progress.add_task("find", total=total)

    def __enter__(self):
        self._progress.__enter__()
        return lambda: self._progress.advance(self._task)

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)


def _progress(total: int, quiet: bool):
    """A rich progress bar on stderr for more than a few inputs when stderr is a terminal."""
    if quiet or total < PROGRESS_MIN_INPUTS or not sys.stderr.isatty():
        return _NoProgress()
    return _RichProgress(total)
