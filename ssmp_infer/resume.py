"""`run MANY... --out trailers.jsonl --resume`: go on from the records a stopped run already wrote.

A many-movie run writes one JSON record per movie, in input order, each line whole and flushed as its
movie is done (with --resume the file is written in place, not renamed into place at the end, so a
killed run leaves what it finished). Resuming reads the file back:

- the complete lines must be this run's first records: the same movies in the same order (a file of
  other inputs, or not written by `run`, is refused in one sentence);
- every trailer record must come from the same model and decoding options (model, backend, mode, seed,
  and the length when --length is given): a trailer of another model is not one of this run's;
- a last line cut off by the kill (the start of a record, without its newline) is dropped: the file is
  cut back to the last whole record, and that movie is made again. Anything else that is not a whole
  record refuses the file, so a file that is not a `run` output is never cut.

Error records are complete records: a bad movie stays failed, as it would in an uninterrupted run, and
counts toward the run's exit status.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import InputError

# Fields of a trailer record set by the run's options (see Engine.generate_batch): a record that differs
# in one of them was made by another run.
SIGNATURE = ("model", "backend", "mode", "seed")
RECORD_START = b'{"name": '  # how every record begins (MovieResult.to_dict puts the name first)


@dataclass
class Done:
    records: int  # whole records kept: the first `records` inputs are done
    failed: int  # of them, error records
    size: int  # bytes of the whole records; the file is cut back to this before appending


def read_done(path: str | Path, names: list[str], signature: dict) -> Done:
    """What a stopped run left in `path` for inputs `names` (in order); `signature`: the fields every
    trailer record must carry with these values. A missing or empty file: nothing done."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Done(0, 0, 0)
    except OSError as e:
        raise InputError(f"--resume: cannot read {path} ({e.strerror or e})") from None
    *lines, torn = data.split(b"\n")  # each record is written whole with its newline: a piece after the
    if torn and not torn.startswith(RECORD_START[: len(torn)]):  # last newline is a record cut off by a kill
        raise InputError(f"--resume: {path} ends with text that is not a record; is this a `run` output?")
    records = failed = size = 0
    for line in lines:
        where = f"--resume: {path} line {records + 1}"
        try:
            record = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            raise InputError(f"{where} is not a JSON record; is this a `run` output?") from None
        if not isinstance(record, dict) or not isinstance(record.get("name"), str) or not (
                "error" in record or "shots" in record):
            raise InputError(f"{where} is not a trailer or error record; is this a `run` output?")
        if records >= len(names) or record["name"] != names[records]:
            expected = names[records] if records < len(names) else "nothing (all inputs are done before it)"
            raise InputError(f"{where} is movie {record['name']!r} where this run's inputs have {expected!r}: "
                             "it was written for other inputs (or another order)")
        if "error" in record:
            failed += 1
        else:
            for key, value in signature.items():
                if record.get(key) != value:
                    raise InputError(f"{where} was made with {key} {record.get(key)!r}, this run uses {value!r}: "
                                     "resume with the same options, or write to another --out")
        records += 1
        size += len(line) + 1
    return Done(records, failed, size)


def append_records(path: str | Path, done: Done, write: Callable[[object], None]) -> None:
    """Call `write(out)` with `out.write(line)` appending to `path` after its whole records (a torn last
    line cut off first). Each line reaches the file as it is written; if writing fails (a full disk,
    Ctrl-C), the file is cut back to its last whole record, so no reader meets half of one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        os.ftruncate(fd, done.size)
        out = _Appender(fd, done.size)
        try:
            write(out)
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, out.whole)  # cutting frees space: this works on a full disk too
            raise
    finally:
        os.close(fd)


class _Appender:
    """Unbuffered: a record is on the file once `write` returns, and `whole` counts only whole ones."""

    def __init__(self, fd: int, at: int):
        self.fd, self.whole = fd, at
        os.lseek(fd, at, os.SEEK_SET)

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        left = memoryview(data)
        while left:
            left = left[os.write(self.fd, left):]
        self.whole += len(data)

    def flush(self) -> None:  # nothing is held back
        pass
