"""Movie states kept across calls: an editor who tries ten variations of one movie pays its encoder pass once.

`prepare` (the movie's pass through the encoder: ~18 GFLOP for 1909 shots) is most of a trailer's cost,
and it depends on the movie alone, not on the seed, length, pins, bans, mode or candidates. A
`StateCache` keeps prepared `MovieState`s of single movies under a key of everything that changes them:
the movie's content (its checked float32 features, hashed), `refresh_every`, and the engine's identity
(model weights, backend, precision, device). It is bounded in bytes (what the states' tensors hold) and
evicts the least recently used state first; a limit of 0 keeps nothing.

A state is handed out as a shallow copy: decoding replaces fields of its copy (room for the slots' keys
and values, a captured step, the step count), never the kept state's tensors, so a second trailer of a
movie is the trailer a cold call gives, bit for bit (tests/test_state_cache.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch


@dataclasses.dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    bytes: int = 0
    entries: int = 0


class StateCache:
    def __init__(self, limit_bytes: int, identity: tuple):
        self.limit_bytes = max(int(limit_bytes), 0)
        self.identity = repr(identity).encode()
        self.stats = CacheStats()
        self._states: OrderedDict[str, tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()  # a server's threads share one engine

    def key(self, movie: np.ndarray, refresh_every: int | None) -> str:
        """The key of a checked (I, D) float32 movie prepared with `refresh_every`."""
        return content_digest(self.identity + f"|{refresh_every}|".encode(), movie, 32)

    def get(self, key: str):
        """A copy of the kept state (the most recently used from now on), or None."""
        with self._lock:
            if key not in self._states:
                self.stats.misses += 1
                return None
            self._states.move_to_end(key)
            self.stats.hits += 1
            return handout(self._states[key][0])

    def put(self, key: str, state) -> None:
        """Keep `state` (as prepared, before any step), evicting the least recently used to make room; a
        state larger than the whole limit is not kept."""
        size = state_bytes(state)
        with self._lock:
            if size > self.limit_bytes or key in self._states:
                return
            while self.stats.bytes + size > self.limit_bytes:
                _, (_, freed) = self._states.popitem(last=False)
                self.stats.bytes -= freed
                self.stats.evictions += 1
            self._states[key] = (handout(state), size)
            self.stats.bytes += size
            self.stats.entries = len(self._states)

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: str) -> bool:
        return key in self._states


# The features are hashed in parts of this many bytes, side by side: hashlib lets go of the GIL while it
# hashes, so a 7.8 MB movie (1909 × 1024 float32) takes about half the time on 2 cores. The parts are
# fixed by the bytes alone, never by the machine, so every replica of a server names a movie alike.
HASH_PART_BYTES = 1 << 20
_hash_pool: tuple[int, ThreadPoolExecutor] | None = None  # (the process that made it, the pool)
_hash_pool_lock = threading.Lock()


def hash_pool() -> ThreadPoolExecutor:
    """The digest's threads, made on first use in this process (a forked child makes its own: the
    parent's threads do not live in it)."""
    global _hash_pool
    with _hash_pool_lock:
        if _hash_pool is None or _hash_pool[0] != os.getpid():
            _hash_pool = (os.getpid(), ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1),
                                                          thread_name_prefix="digest"))
        return _hash_pool[1]


def content_digest(header: bytes, features: np.ndarray, hex_digits: int) -> str:
    """`hex_digits` of the SHA-256 of `header`, the features' shape and dtype, and the SHA-256 of each
    HASH_PART_BYTES of their bytes in turn (a two-level hash: the parts are hashed in parallel).

    Why SHA-256: x86 and ARM CPUs of the last years hash it in hardware, about twice as fast as BLAKE2b
    in software (measured on a Xeon of this project: 4.7 ms against 9.2 ms for a 1909-shot movie, in one
    thread), and a warm trailer pays the hash on every call.
    """
    data = memoryview(np.ascontiguousarray(features)).cast("B")
    parts = [data[at: at + HASH_PART_BYTES] for at in range(0, len(data), HASH_PART_BYTES)]
    sha = lambda part: hashlib.sha256(part).digest()  # noqa: E731
    digests = list(hash_pool().map(sha, parts)) if len(parts) > 1 else [sha(part) for part in parts]
    h = hashlib.sha256(header)
    h.update(f"|{features.shape}|{features.dtype}|".encode())
    for digest in digests:
        h.update(digest)
    return h.hexdigest()[:hex_digits]


def handout(state):
    """A shallow copy that shares the tensors and owns its fields; no captured step travels with it."""
    return dataclasses.replace(state, step_graph=None, steps_since_prepare=0)


def state_bytes(state) -> int:
    """Bytes of every tensor a state holds (each storage once); the backend's own `output_basis` is not the
    movie's and is not counted."""
    seen: set[int] = set()

    def walk(value) -> int:
        if isinstance(value, torch.Tensor):
            if value.data_ptr() in seen:
                return 0
            seen.add(value.data_ptr())
            return value.nbytes
        if isinstance(value, (list, tuple)):
            return sum(walk(v) for v in value)
        if dataclasses.is_dataclass(value):
            return sum(walk(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "output_basis")
        return 0

    return walk(state)
