"""Atomic writes: a temp file in the destination's directory, then a rename. A reader never sees half a
file, and an existing file is replaced only when the caller was told to (--force)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import InputError


def check_output_path(path: str | Path, force: bool) -> None:
    """Refuse, before any work is done, an output path that could not or must not be written."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory; expected a file path")
    if path.exists() and not force:
        raise InputError(f"{path} already exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: directory {path.parent} does not exist")


def write_atomic(path: str | Path, write: Callable[[str], None], force: bool = False) -> Path:
    """Call `write(tmp_path)` and rename the result onto `path`."""
    path = Path(path)
    check_output_path(path, force)
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
