"""Atomic writes: a temp file in the destination's directory, then a rename. A reader never sees half a
file, and an existing file is replaced only when the caller was told to (--force), and only if it is a
regular file (see `ssmp_infer.inputs.check_output_file`)."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .inputs import check_output_file


def check_output_path(path: str | Path, force: bool) -> None:
    """Refuse, before any work is done, an output path that could not or must not be written."""
    check_output_file(path, force)


@contextmanager
def deferred_interrupts():
    """Hold Ctrl-C (and SIGTERM) off for a few renames that must happen together; delivered right after.

    Only the main thread can receive Python's signal handlers, so elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def write_files_atomic(writers: dict, force: bool = False) -> None:
    """Several files that belong together (a checkpoint's weights and config): each is written aside, then
    all are renamed into place with interrupts held off, so an interrupted save leaves the old set or
    the new one, never a mix."""
    for path in writers:  # every destination before any work
        check_output_path(path, force)
    paths = [Path(p) for p in writers]
    temps = []
    try:
        for path, write in zip(paths, writers.values()):
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            temps.append(tmp)
            write(tmp)
            os.chmod(tmp, _final_mode(path))
        for path in paths:  # again: the work took time
            check_output_path(path, force)
        with deferred_interrupts():
            for tmp, path in zip(temps, paths):
                os.replace(tmp, path)
    except BaseException:
        for tmp in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise


def write_atomic(path: str | Path, write: Callable[[str], None], force: bool = False) -> Path:
    """Call `write(tmp_path)` and rename the result onto `path`."""
    check_output_path(path, force)  # the text as given: a trailing slash is lost in a Path
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _final_mode(path))  # mkstemp makes 0600; the user expects what open() would give
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _final_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_text_atomic(path: str | Path, text: str, force: bool = False) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return write_atomic(path, write, force)
