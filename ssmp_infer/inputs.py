"""Every check on what a user hands the engine, in one place: the CLI, `Engine` and the HTTP server call these.

The rules, each learnt from a hostile input that once crashed, hung or misled the CLI:
- Files: `stat` before `open`, then open non-blocking and `fstat` the descriptor: anything but a regular
  file (a FIFO would block for ever, /dev/zero never ends, a socket cannot be read) is refused before a
  byte is read; a symbolic-link loop is called one.
- `.npy`: the header is read and checked by hand (never `allow_pickle`, never numpy's header reader,
  whose tokenizer raises on a malformed dict): what it claims (shape × dtype) is compared with the bytes
  that follow it and with the memory available *before* the array is allocated. `npy_header` +
  `check_npy_body` validate a body from its first bytes and its length alone (an HTTP server can refuse a
  request before reading it); `features_from_npy_bytes` reads a whole body without copying it.
- Features: a 2-D float16/32/64 array, finite, no all-zero rows (see `validate_features`). Finite values
  beyond float32's range are legitimate: rows are rescaled by a power of two, exactly, before the cast.
- JSON: size and nesting depth bounded before parsing (a 100,000-deep array must not reach the parser's
  recursion), NaN/Infinity constants refused.
- Checkpoints: the safetensors header (names, dtypes, shapes, offsets) is checked against the file size
  and against the shapes the config implies (a model built on the meta device allocates nothing) before
  any weight is read; non-finite weights are refused.
- Outputs: `--force` replaces a regular file and nothing else (never a directory, a device, a FIFO or a
  symbolic link); a trailing slash names a directory; an output folder is probed for writing before the
  work that fills it.
"""

from __future__ import annotations

import ast
import errno
import json
import math
import os
import re
import stat
import struct
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import InputError

FLOAT_DTYPES = (np.float16, np.float32, np.float64)

# --------------------------------------------------------------------------------------------- files


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words (None: a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _stat_error(path: Path, e: OSError) -> InputError:
    if e.errno == errno.ELOOP:
        return InputError(f"{path} is a symbolic link loop (it never reaches a file)")
    if e.errno == errno.ENOENT and os.path.islink(path):
        return InputError(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist")
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return InputError(f"no such file: {path}")
    if e.errno == errno.EACCES:
        return InputError(f"{path} cannot be read (permission denied)")
    if e.errno == errno.ENAMETOOLONG:
        return InputError(f"the path {str(path)[:60]}... is too long")
    return InputError(f"{path} cannot be read ({e.strerror or e})")


def stat_regular(path: str | Path, expected: str) -> os.stat_result:
    """stat `path` (following links) and refuse anything but a regular file, before it is opened."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise _stat_error(path, e) from None
    except ValueError:  # an embedded NUL byte
        raise InputError(f"{str(path)!r} is not a valid path") from None
    kind = _kind(st.st_mode)
    if kind is not None:
        raise InputError(f"{path} is {kind}, not a regular file; expected {expected}")
    return st


@contextmanager
def open_regular(path: str | Path, expected: str) -> Iterator:
    """A binary file object for a regular file, and its size; refuses every other kind of file.

    stat first (names the kind), then open with O_NONBLOCK (were the path swapped for a FIFO in between,
    the open still returns at once) and fstat the descriptor, so what is read is what was checked.
    """
    path = Path(path)
    stat_regular(path, expected)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise _stat_error(path, e) from None
    try:
        st = os.fstat(fd)
        kind = _kind(st.st_mode)
        if kind is not None:
            raise InputError(f"{path} is {kind}, not a regular file; expected {expected}")
        f = os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f, st.st_size


def _read_exact(f, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = f.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _proc_kib(path: str, key: bytes) -> int | None:
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_available() -> int:
    """Bytes this process can still allocate: Linux's MemAvailable (else physical memory), and no more
    than an address-space limit (`ulimit -v`) leaves."""
    free = _proc_kib("/proc/meminfo", b"MemAvailable:")
    if free is None:
        try:
            free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            free = 1 << 62  # unknown: do not refuse on a guess
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        used = _proc_kib("/proc/self/status", b"VmSize:")
        if limit != resource.RLIM_INFINITY and used is not None:
            free = min(free, max(0, limit - used))
    except (ImportError, OSError, ValueError):
        pass
    return free


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


# -------------------------------------------------------------------------------------------- .npy

NPY_MAGIC = b"\x93NUMPY"
# numpy writes headers of ~128 bytes and reads at most 10,000; 64 KiB bounds the parse of a hostile one.
MAX_NPY_HEADER = 65536
_NPY_PREFIX = {(1, 0): (2, "latin1"), (2, 0): (4, "latin1"), (3, 0): (4, "utf8")}


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int  # bytes before the data

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # Python ints: a claim of 10^12 rows does not overflow


def npy_header(read: Callable[[int], bytes], source: str) -> NpyHeader:
    """Parse a .npy header from `read(n)` (the file's or body's first bytes); allocates nothing but the header.

    `source` names the file in messages. Refuses: a missing magic string, an unknown version, a header
    longer than 64 KiB or cut short, a header that is not a dict of exactly descr/fortran_order/shape,
    a shape that is not a tuple of non-negative integers, an unknown dtype, Python objects (pickles) and
    structured dtypes.
    """
    start = read(8)
    if len(start) < 8 or not start.startswith(NPY_MAGIC):
        what = "is empty" if not start else "does not start with the .npy magic string"
        raise InputError(f"{source} is not a .npy file: it {what}; expected an array saved with numpy.save")
    version = (start[6], start[7])
    if version not in _NPY_PREFIX:
        raise InputError(f"{source} is a .npy file of unknown format version {version[0]}.{version[1]}; expected 1.0, 2.0 or 3.0")
    size_bytes, encoding = _NPY_PREFIX[version]
    raw = read(size_bytes)
    if len(raw) < size_bytes:
        raise InputError(f"{source} is a truncated .npy file (its header is cut short)")
    length = int.from_bytes(raw, "little")
    if length > MAX_NPY_HEADER:
        raise InputError(f"{source} claims a .npy header of {length} bytes; numpy writes about 128 and reads at most 10,000")
    text = read(length)
    if len(text) < length:
        raise InputError(f"{source} is a truncated .npy file (its header claims {length} bytes, fewer follow)")
    try:
        header = ast.literal_eval(text.decode(encoding))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError):
        raise InputError(f"{source} has a malformed .npy header (not a Python dict literal)") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise InputError(f"{source} has a malformed .npy header: expected the keys descr, fortran_order and shape")
    shape, fortran, descr = header["shape"], header["fortran_order"], header["descr"]
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise InputError(f"{source} has a malformed .npy header: shape {str(shape)[:40]} is not a tuple of sizes")
    if not isinstance(fortran, bool):
        raise InputError(f"{source} has a malformed .npy header: fortran_order must be True or False")
    if not isinstance(descr, str):  # numpy writes a list for structured dtypes: never feature rows
        raise InputError(f"{source} holds a structured array (fields); expected a plain float array")
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError, SyntaxError):
        raise InputError(f"{source} has a .npy header with an unknown dtype {descr[:20]!r}") from None
    if dtype.hasobject:
        raise InputError(f"{source} holds Python objects (a pickle, never loaded); expected a numeric float array")
    if dtype.fields is not None or dtype.subdtype is not None:
        raise InputError(f"{source} holds a structured array (fields); expected a plain float array")
    return NpyHeader(tuple(shape), dtype, fortran, len(start) + size_bytes + length)


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def check_feature_layout(shape: tuple, dtype: np.dtype, source: str, feature_dim: int | None = None) -> None:
    """What any (I, D) shot-feature array must be, checked on its shape and dtype alone."""
    if dtype == object:
        raise InputError(f"{source} holds Python objects; expected a numeric float array")
    if dtype.type not in FLOAT_DTYPES:
        raise InputError(f"{source} has dtype {dtype}; expected float16, float32 or float64")
    if len(shape) != 2:
        raise InputError(f"{source} has shape {_shape_text(shape)}; expected a 2-D array (shots, features)")
    if shape[0] == 0:
        raise InputError(f"{source} has zero shots")
    if shape[1] == 0:
        raise InputError(f"{source} has zero feature columns")
    if feature_dim is not None and shape[1] != feature_dim:
        raise InputError(f"{source} has {shape[1]}-d features but the model reads {feature_dim}-d features")


def validation_bytes(shape: tuple, itemsize: int) -> int:
    """Peak memory of reading and validating an (I, D) array: the raw array, |x|, two float64 copies and
    the float32 result (see validate_features)."""
    return math.prod(shape) * (2 * itemsize + 2 * 8 + 4)


def check_npy_body(header: NpyHeader, body_size: int, source: str, feature_dim: int | None = None) -> None:
    """Check a features header against the bytes that follow it and the memory free, before allocating."""
    check_feature_layout(header.shape, header.dtype, source, feature_dim)
    if body_size < header.nbytes:
        raise InputError(
            f"{source} is truncated or lies about its size: its header claims shape {_shape_text(header.shape)} "
            f"{header.dtype} ({header.nbytes:,} bytes) but {body_size:,} bytes follow it"
        )
    need, free = validation_bytes(header.shape, header.dtype.itemsize), memory_available()
    if need > free:
        raise InputError(
            f"{source} holds {header.shape[0]:,} shots of {header.shape[1]} features: validating it needs "
            f"{_gib(need)}, more than the {_gib(free)} of memory available"
        )


def npy_header_of_bytes(data, source: str) -> NpyHeader:
    """The header of a whole .npy file held in memory (bytes, bytearray, memoryview), read in place."""
    view = memoryview(data).cast("B")
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        chunk = bytes(view[pos : pos + n])
        pos += len(chunk)
        return chunk

    return npy_header(read, source)


def features_from_npy_bytes(data, source: str = "the .npy body", feature_dim: int | None = None) -> np.ndarray:
    """A whole .npy file held in memory (bytes, bytearray, memoryview) -> validated (I, D) float32.

    The header is checked against the body's length before anything is allocated; the array is then a
    view of `data` (no copy) until validation makes the float32 result.
    """
    view = memoryview(data).cast("B")
    header = npy_header_of_bytes(view, source)
    check_npy_body(header, len(view) - header.offset, source, feature_dim)
    array = np.frombuffer(view, dtype=header.dtype, count=math.prod(header.shape), offset=header.offset)
    array = array.reshape(header.shape, order="F" if header.fortran_order else "C")
    return validate_features(array, source, feature_dim)


def read_npy_features(f, size: int, source: str, feature_dim: int | None = None) -> np.ndarray:
    """Read a .npy features array from a binary file object whose total size is `size` (a file, a zip member)."""
    header = npy_header(lambda n: _read_exact(f, n), source)
    check_npy_body(header, size - header.offset, source, feature_dim)
    array = np.empty(header.shape, dtype=header.dtype, order="F" if header.fortran_order else "C")
    buf = memoryview(array.reshape(-1, order="A")).cast("B")  # the array's own memory: one allocation
    got = 0
    while got < header.nbytes:
        n = f.readinto(buf[got:])
        if not n:
            raise InputError(f"{source} ended early: {got:,} of {header.nbytes:,} data bytes could be read")
        got += n
    return array


def load_features(path: str | Path, feature_dim: int | None = None) -> np.ndarray:
    """Load and validate one movie's (I, D) shot features from a `.npy` file."""
    path = Path(path)
    if path.suffix != ".npy":
        stat_regular(path, "a .npy file of shot features")  # a missing file or a directory is named as such
        raise InputError(f"{path} is not a .npy file; expected a NumPy array saved with numpy.save")
    with open_regular(path, "a .npy file of shot features") as (f, size):
        try:
            array = read_npy_features(f, size, str(path), feature_dim)
        except OSError as e:  # EIO, a file that refuses reads (/proc/self/mem)
            raise InputError(f"{path} could not be read ({e.strerror or e})") from None
    return validate_features(array, str(path), feature_dim)


class CheckedFeatures(np.ndarray):
    """Shot features `validate_features` returned: float32, finite, no zero row, each row scaled by a power
    of two. The engine takes them as they are; any other array it checks itself. So a movie read by the
    CLI is checked (and copied) once on its way to the encoder."""


def checked(array: np.ndarray, source: str, feature_dim: int) -> np.ndarray:
    """`array` as a plain float32 ndarray (a view, no copy) if `validate_features` made it for this feature
    size, else `validate_features(array, ...)`: the boundary's one check."""
    if isinstance(array, CheckedFeatures) and array.ndim == 2 and array.shape[1] == feature_dim:
        return array.view(np.ndarray)
    return validate_features(array, source, feature_dim).view(np.ndarray)


def validate_features(array: np.ndarray, source: str, feature_dim: int | None = None) -> CheckedFeatures:
    """Check a (I, D) shot-feature array; return it as float32, each row scaled by a power of two.

    Only directions matter (cosine is scale-free, and the model reads unit rows), but a float32 norm
    overflows for rows near 1e20 and underflows for rows near 1e-20. Scaling each row so its largest
    entry lies in [0.5, 1) keeps its float32 norm in [0.5, sqrt(D)]; a power of two is exact, so the
    unit row is the one the unscaled row would give wherever that one was representable.
    """
    if not isinstance(array, np.ndarray):
        raise InputError(f"{source}: expected a numpy array of shot features, got {type(array).__name__}")
    check_feature_layout(array.shape, array.dtype, source, feature_dim)
    # row by row reductions, no temporary of the movie's size: the one copy is the float32 result below
    finite = np.isfinite(array.max(axis=1)) & np.isfinite(array.min(axis=1))  # NaN propagates, Inf is an extreme
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise InputError(f"{source} contains NaN or Inf values (first in shot {row})")
    largest = np.maximum(array.max(axis=1), -array.min(axis=1)).astype(np.float64)  # (I,) the largest |x| per row
    zero_rows = np.flatnonzero(largest == 0)
    if zero_rows.size:
        raise InputError(f"shot {int(zero_rows[0])} of {source} is all zeros; cosine similarity is undefined for it")
    _, exponent = np.frexp(largest)  # largest = m · 2^exponent, m in [0.5, 1)
    if array.dtype == np.float32:  # the usual input: scaled in place of a float64 round trip (6x faster,
        # the same bits: a power-of-two scale is exact, and ldexpf rounds a subnormal result as the cast does)
        scaled = np.ldexp(array.view(np.ndarray), (-exponent[:, None]).astype(np.int32))
    else:
        scaled = np.ldexp(array.astype(np.float64), -exponent[:, None]).astype(np.float32)
    return scaled.view(CheckedFeatures)


def npz_members(path: str | Path) -> tuple[list[str], Callable[[str], np.ndarray]]:
    """(array names, load(name) -> raw array) of an `.npz`; each member's header is checked against the
    member's declared size before its array is allocated (zipfile never yields more than that size)."""
    import zipfile
    import zlib

    path = Path(path)
    try:
        with open_regular(path, "a .npz archive of shot features") as (f, _):
            with zipfile.ZipFile(f) as z:
                infos = {i.filename[: -len(".npy")]: i for i in z.infolist() if i.filename.endswith(".npy")}
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, NotImplementedError) as e:
        raise InputError(f"{path} could not be read as a .npz archive ({e})") from None

    def load(key: str) -> np.ndarray:
        source = f"{path.name}:{key}"
        try:
            with open_regular(path, "a .npz archive of shot features") as (f, _):
                with zipfile.ZipFile(f) as z, z.open(infos[key]) as member:
                    return read_npy_features(member, infos[key].file_size, source)
        except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, NotImplementedError, OSError) as e:
            if isinstance(e, InputError):
                raise
            raise InputError(f"{source} could not be read from {path} ({e})") from None

    return list(infos), load


# -------------------------------------------------------------------------------------------- JSON

MAX_JSON_BYTES = 16 << 20  # a checkpoint's config.json is ~2 KB; its training provenance stays far below
MAX_JSON_DEPTH = 64  # config.json nests 4 deep; the parser's recursion limit is ~1000


def _refuse_constant(name: str):
    raise InputError(f"{name} is not a JSON number")


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text` (strings skipped), counted without parsing."""
    depth = deepest = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(text: str, source: str, max_depth: int = MAX_JSON_DEPTH):
    """json.loads with the nesting depth bounded first (no RecursionError) and NaN/Infinity refused."""
    depth = json_depth(text)
    if depth > max_depth:
        raise InputError(f"{source} nests arrays or objects {depth} deep; at most {max_depth} levels are read")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except InputError as e:
        raise InputError(f"{source} is not valid JSON ({e})") from None
    except (json.JSONDecodeError, ValueError, RecursionError) as e:  # ValueError: an integer of 4300+ digits
        raise InputError(f"{source} is not valid JSON ({str(e)[:80]})") from None


def load_json_file(path: str | Path, expected: str, max_bytes: int = MAX_JSON_BYTES):
    path = Path(path)
    with open_regular(path, expected) as (f, size):
        if size > max_bytes:
            raise InputError(f"{path} is {_gib(size)}; {expected} is at most {_gib(max_bytes)}")
        try:
            raw = _read_exact(f, size)
        except OSError as e:
            raise InputError(f"{path} could not be read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text; expected {expected}") from None
    return parse_json(text, str(path))


def dumps_json(obj, **kwargs) -> str:
    """JSON out of the engine: a NaN or Inf is a bug upstream, never text that other parsers reject."""
    return json.dumps(obj, allow_nan=False, **kwargs)


# ------------------------------------------------------------------------------------- safetensors

# dtype name -> bytes per element. Weights are floating point; any other dtype is refused.
_SAFETENSORS_FLOATS = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
_SAFETENSORS_ALL = {**_SAFETENSORS_FLOATS, "I8": 1, "U8": 1, "BOOL": 1, "I16": 2, "U16": 2, "I32": 4, "U32": 4,
                    "I64": 8, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
MAX_SAFETENSORS_HEADER = 100 << 20  # the format's own limit


def safetensors_header(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{tensor name: (dtype, shape)} from a .safetensors file's header, every entry checked against the
    file's size (offsets inside the data, sizes that match dtype × shape); reads the header only."""
    path = Path(path)
    with open_regular(path, "a .safetensors weights file") as (f, size):
        start = _read_exact(f, 8)
        if len(start) < 8:
            raise InputError(f"{path} is not a safetensors file (it is only {size} bytes)")
        (length,) = struct.unpack("<Q", start)
        if length > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise InputError(f"{path} is not a safetensors file (its header claims {length:,} bytes of a {size:,}-byte file)")
        raw = _read_exact(f, length)
    try:
        header = parse_json(raw.decode("utf-8"), f"{path}'s header")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a safetensors file (its header is not UTF-8 JSON)") from None
    if not isinstance(header, dict):
        raise InputError(f"{path} is not a safetensors file (its header is not a JSON object)")
    data_size = size - 8 - length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        ok = isinstance(entry, dict) and isinstance(entry.get("shape"), list) and isinstance(entry.get("data_offsets"), list)
        ok = ok and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in entry["shape"] + entry["data_offsets"])
        ok = ok and entry.get("dtype") in _SAFETENSORS_ALL and len(entry["data_offsets"]) == 2
        if ok:
            begin, end = entry["data_offsets"]
            ok = begin <= end <= data_size and end - begin == math.prod(entry["shape"]) * _SAFETENSORS_ALL[entry["dtype"]]
        if not ok:
            raise InputError(f"{path} is damaged: its entry for tensor {str(name)[:60]!r} does not fit the file")
        tensors[name] = (entry["dtype"], tuple(entry["shape"]))
    return tensors


def check_weights_match(path: str | Path, expected: dict[str, tuple[int, ...]], config_path: str | Path) -> None:
    """Refuse weights whose tensors are not exactly those a model of `expected` shapes holds (read from
    the header: nothing is allocated for a config that claims a model 10,000 times the file's size)."""
    found = safetensors_header(path)
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        what = f"lacks tensor {missing[0]}" if missing else f"holds tensor {extra[0]}, which the model has not"
        n = len(missing) + len(extra)
        raise InputError(f"{path} does not match {config_path}: it {what}" + (f" (and {n - 1} more differences)" if n > 1 else ""))
    for name, shape in expected.items():
        dtype, got = found[name]
        if dtype not in _SAFETENSORS_FLOATS:
            raise InputError(f"{path}: tensor {name} has dtype {dtype}; weights must be floating point")
        if got != tuple(shape):
            raise InputError(
                f"{path} does not match {config_path}: tensor {name} has shape {list(got)}, the config implies {list(shape)}"
            )


def check_finite_weights(state: dict, source: str) -> None:
    """Nothing non-finite leaves the engine: a model with a NaN or Inf weight would output NaN."""
    import torch

    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InputError(f"{source} holds NaN or Inf values (in tensor {name}); such a model outputs NaN")


# ------------------------------------------------------------------------------------------ outputs


def check_output_file(path: str | Path, force: bool) -> None:
    """Refuse, before any work, an output file that cannot or must not be written.

    `--force` replaces a regular file only. A symbolic link is refused even with --force: replacing it
    would destroy the link, writing through it would change a file the user did not name.
    """
    text = str(path)
    if text.endswith(("/", os.sep)):
        raise InputError(f"{text} ends in '/', which names a directory; expected a file path")
    path = Path(path)
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # the parent is checked below
        st = None
    except OSError as e:
        raise _stat_error(path, e) from None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise InputError(
                f"{path} is a symbolic link (to {os.readlink(path)}); --force replaces regular files only, "
                "so name the file itself"
            )
        kind = _kind(st.st_mode)
        if kind == "a directory":
            raise InputError(f"{path} is a directory; expected a file path")
        if kind is not None:
            raise InputError(f"{path} is {kind}, not a regular file; --force replaces regular files only")
        if not force:
            raise InputError(f"{path} already exists; pass --force to overwrite it")
    parent = path.parent
    try:
        if not stat.S_ISDIR(os.stat(parent).st_mode):
            raise InputError(f"cannot write {path}: {parent} is not a directory")
    except FileNotFoundError:
        raise InputError(f"cannot write {path}: directory {parent} does not exist") from None
    except OSError as e:
        raise _stat_error(parent, e) from None
    probe_writable(parent, f"cannot write {path}")  # before the work, not when its result is ready


def check_output_dir(directory: str | Path, names: tuple[str, ...], force: bool) -> None:
    """Refuse an output folder that is not one, whose `names` exist without --force (or are not regular
    files), or that cannot be written: all before the work that fills it (training can take hours)."""
    text = str(directory)
    if text == "-":
        raise InputError("--out - (standard output) cannot hold a folder; name a directory")
    directory = Path(directory)
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise _stat_error(directory, e) from None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{directory} exists and is not a directory")
    if st is not None:
        for name in names:
            check_output_file(directory / name, force)
    probe_writable(directory)


def probe_writable(directory: Path, failure: str | None = None) -> None:
    """Create and remove a temporary folder in `directory` (or, if it does not exist yet, in its nearest
    existing ancestor): the only test that holds as root, on read-only mounts and in /proc alike."""
    failure = failure or f"cannot write to {directory}"
    target = Path(directory)
    while not target.exists():
        if target.parent == target:
            break
        target = target.parent
    if not target.is_dir():
        raise InputError(f"cannot create {directory}: {target} is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ssmp-probe.", dir=target))
    except OSError as e:
        raise InputError(f"{failure} ({e.strerror or e} in {target})") from None
