"""Everything an input makes a library say, caught while it is read and located, as that input's lines.

Python warnings, tifffile's log records and what C libraries write to the process's stderr themselves
(``libpng error: IDAT: incorrect data check``, libjpeg's ``Corrupt JPEG data``) are collected while one input
is processed, so that standard error carries only ``peakloc:`` lines: the run layer turns these notes into
``peakloc: warning: PATH: ...`` lines, or drops them where the input fails anyway.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def _log_records(notes: list[str], name: str = "tifffile") -> Iterator[None]:
    # Without logging imported, no library has a logger yet: one that a library imported inside the block
    # creates has no handler, so its records go to logging's last resort, sys.stderr, which fd 2's capture
    # collects. Importing logging only for this would cost every start a few milliseconds.
    logging = sys.modules.get("logging")
    if logging is None:
        yield
        return
    logger = logging.getLogger(name)
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: notes.append(record.getMessage().strip())
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _temporary_file():
    """An anonymous file: in memory where Linux offers it (``memfd_create``), else a temporary file.

    The memory file needs no disk and no import of :mod:`tempfile` (a few milliseconds of every start).
    """
    if hasattr(os, "memfd_create"):
        try:
            return os.fdopen(os.memfd_create("peakloc-stderr", getattr(os, "MFD_CLOEXEC", 0)), "w+b")
        except OSError:  # a kernel or sandbox without it
            pass
    import tempfile

    return tempfile.TemporaryFile()


#: A reused sink is emptied once it holds this many bytes (not at every capture: a capture that caught
#: nothing, the usual case, then costs no system call beyond the redirection).
SINK_BYTES = 1 << 16


class _Sink:
    """One anonymous file per process, which captures reuse.

    Creating one per input cost a sixth of the time of locating a small PNG. A capture that finds it in
    use (another thread's) gets a file of its own. Captures read what was written after their own start.
    """

    def __init__(self) -> None:
        self.pid = -1
        self.file = None
        self.lock = threading.Lock()

    @contextmanager
    def borrowed(self) -> Iterator[int]:
        """The sink's file descriptor, its offset at or below :data:`SINK_BYTES`."""
        if not self.lock.acquire(blocking=False):
            with _temporary_file() as own:
                yield own.fileno()
            return
        try:
            if self.pid != os.getpid():  # a forked child shares its parent's file offset: open its own
                self.file, self.pid = _temporary_file(), os.getpid()
                weakref.finalize(self, self.file.close)  # closed at exit, not left to the interpreter
            fd = self.file.fileno()
            if os.lseek(fd, 0, os.SEEK_CUR) > SINK_BYTES:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
            yield fd
        finally:
            self.lock.release()


_SINK = _Sink()


def _read_between(fd: int, start: int, end: int) -> bytes:
    """Bytes ``start:end`` of the file, its offset left at ``end``."""
    chunks = []
    while start < end:
        if hasattr(os, "pread"):
            chunk = os.pread(fd, end - start, start)
        else:  # Windows
            os.lseek(fd, start, os.SEEK_SET)
            chunk = os.read(fd, end - start)
        if not chunk:
            break
        chunks.append(chunk)
        start += len(chunk)
    os.lseek(fd, end, os.SEEK_SET)
    return b"".join(chunks)


@contextmanager
def _file_descriptor_2(notes: list[str]) -> Iterator[None]:
    """Point fd 2 at a temporary file while the block runs; its text becomes notes, one per line."""
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    with _SINK.borrowed() as sink:
        start = os.lseek(sink, 0, os.SEEK_CUR)
        saved = os.dup(2)
        os.dup2(sink, 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            # fd 2 shares the sink's offset: what the block wrote lies between the two offsets.
            end = os.lseek(sink, 0, os.SEEK_CUR)
            text = _read_between(sink, start, end).decode("utf-8", "replace")
    notes.extend(line.strip() for line in text.splitlines() if line.strip())


@contextmanager
def captured() -> Iterator[list[str]]:
    """Collect warnings, tifffile's log and raw stderr output of the block, in order of kind, deduplicated.

    Only warnings meant for users (``UserWarning`` and its kind: peakloc's, tifffile's) are kept. NumPy's
    ``RuntimeWarning`` (overflow, invalid value) is dropped: peakloc's maths handles those values on purpose
    (masked, clamped or flagged), and the user has nothing to act on; so are the warnings meant for
    developers (deprecations, unclosed resources).
    """
    notes: list[str] = []
    raw: list[str] = []
    with warnings.catch_warnings(record=True) as caught, _log_records(notes), _file_descriptor_2(raw):
        warnings.simplefilter("always")
        yield notes
    notes[:0] = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    notes.extend(raw)
    notes[:] = list(dict.fromkeys(notes))
