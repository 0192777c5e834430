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


def _log_handler(notes: list[str]):
    """Send tifffile's log records to ``notes`` instead of stderr: ``(logger, handler, propagate)``, or None.

    Without logging imported, no library has a logger yet: one that a library imported inside the capture
    creates has no handler, so its records go to logging's last resort, sys.stderr, which fd 2's capture
    collects. Importing logging only for this would cost every start a few milliseconds.
    """
    logging = sys.modules.get("logging")
    if logging is None:
        return None
    logger = logging.getLogger("tifffile")
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: notes.append(record.getMessage().strip())
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    return logger, handler, propagate


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

    def borrow(self):
        """``(fd, own)``: the sink's file descriptor, its offset at or below :data:`SINK_BYTES`.

        Where another capture holds the sink (a nested one), a new file's instead, ``own`` that file. Give it
        back with :meth:`give_back`.
        """
        if not self.lock.acquire(blocking=False):
            own = _temporary_file()
            return own.fileno(), own
        try:
            if self.pid != os.getpid():  # a forked child shares its parent's file offset: open its own
                self.file, self.pid = _temporary_file(), os.getpid()
                weakref.finalize(self, self.file.close)  # closed at exit, not left to the interpreter
            fd = self.file.fileno()
            if os.lseek(fd, 0, os.SEEK_CUR) > SINK_BYTES:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
        except BaseException:
            self.lock.release()
            raise
        return fd, None

    def give_back(self, own) -> None:
        """End a :meth:`borrow`: close its own file, or free the sink."""
        if own is not None:
            own.close()
        else:
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


def _flush_stderr() -> None:
    try:
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # closed, or None (pythonw)
        pass


class _Stderr:
    """fd 2 pointed at the sink while a capture runs; :meth:`end` gives what was written there, as lines."""

    def __init__(self) -> None:
        _flush_stderr()
        self.sink, self.own = _SINK.borrow()
        try:
            self.start = os.lseek(self.sink, 0, os.SEEK_CUR)
            self.saved = os.dup(2)
            try:
                os.dup2(self.sink, 2)
            except BaseException:
                os.close(self.saved)
                raise
        except BaseException:
            _SINK.give_back(self.own)
            raise

    def end(self) -> list[str]:
        try:
            _flush_stderr()
            os.dup2(self.saved, 2)
            os.close(self.saved)
            # fd 2 shares the sink's offset: what the block wrote lies between the two offsets.
            end = os.lseek(self.sink, 0, os.SEEK_CUR)
            text = _read_between(self.sink, self.start, end).decode("utf-8", "replace") if end > self.start else ""
        finally:
            _SINK.give_back(self.own)
        return [line.strip() for line in text.splitlines() if line.strip()]


class captured:  # noqa: N801 - used as a function: ``with captured() as notes``
    """Collect warnings, tifffile's log and raw stderr output of the block, in order of kind, deduplicated.

    ``with captured() as notes:`` gives the list, filled when the block ends. Only warnings meant for users
    (``UserWarning`` and its kind: peakloc's, tifffile's) are kept. NumPy's ``RuntimeWarning`` (overflow,
    invalid value) is dropped: peakloc's maths handles those values on purpose (masked, clamped or flagged),
    and the user has nothing to act on; so are the warnings meant for developers (deprecations, unclosed
    resources).

    A class, not three nested generator-based context managers: every input of a folder is captured as it
    is read, and the generators' machinery cost more than the system calls (84 000 instructions a capture,
    against 48 000 so, measured under callgrind).
    """

    def __enter__(self) -> list[str]:
        self.notes: list[str] = []
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        self._logging = None
        try:
            warnings.simplefilter("always")
            self._logging = _log_handler(self.notes)
            self._stderr = _Stderr()
        except BaseException:
            self._restore()
            raise
        return self.notes

    def _restore(self) -> None:
        if self._logging is not None:
            logger, handler, propagate = self._logging
            logger.removeHandler(handler)
            logger.propagate = propagate
        self._warnings.__exit__(None, None, None)

    def __exit__(self, *exc) -> None:
        try:
            raw = self._stderr.end()
        finally:
            self._restore()
        notes = self.notes
        notes[:0] = [str(w.message) for w in self._caught if issubclass(w.category, UserWarning)]
        notes.extend(raw)
        notes[:] = list(dict.fromkeys(notes))
