"""What a request may be, and the HTTP answer when it is not: one sentence in JSON, never a crash.

Every check on the body itself (the .npy format, dtype, shape, finite values) is `ssmp_infer.inputs`'s,
the CLI's own; this module adds only what an always-on server needs on top: caps on size and work, the
query parameters, and the status code each refusal gets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import InputError

# Query parameter -> how many times it may appear. `pin` and `ban` repeat as their CLI flags do.
QUERY_PARAMS = {"length": 1, "mode": 1, "steps": 1, "seed": 1, "pin": 64, "ban": 64}


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 64 << 20  # 16,384 shots of 1024 float32 features
    max_shots: int = 16384  # ~8 times CMTD's mean movie: more is a mistake or an attack
    # Requests admitted (reading, validating, queued or generating) at once; more get 503. Enough for a
    # few hundred clients at once; memory is bounded by max_held_bytes, not by this count.
    max_queue: int = 512
    max_held_bytes: int = 1 << 30  # request bodies held at once, summed; a body that would pass it gets 503
    timeout_s: float = 300.0  # per request, from admission to answer (queueing included); past it, 504
    retry_after_s: int = 1  # the 503's Retry-After
    # Uploaded movies kept for trailers by id (POST /v1/movies), summed; the least recently used go first.
    max_movie_store_bytes: int = 2048 << 20  # ~260 CMTD-sized movies

    def __post_init__(self):
        for name in ("max_body_bytes", "max_shots", "max_queue", "max_held_bytes", "max_movie_store_bytes"):
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise InputError(f"the request timeout must be a positive number of seconds, got {self.timeout_s}")


@dataclass
class HttpError(Exception):
    """A refusal: status, a kind for the error counter, one sentence, extra headers."""

    status: int
    kind: str
    message: str
    headers: dict = field(default_factory=dict)


def bad_request(e: InputError) -> HttpError:
    return HttpError(400, "bad_input", str(e))


@dataclass(frozen=True)
class Options:
    """A request's options, parsed: what `ssmp-infer run` would get from the same flags."""

    length: int | None = None
    mode: str = "paper"
    steps: int | None = None
    seed: int = 0
    pins: tuple = ()  # "SLOT:SHOT" texts, parsed by ssmp_infer.controls
    bans: tuple = ()


def _one_integer(name: str, text: str) -> int:
    # int() takes "1_000" and " 7 "; a URL should hold digits (a leading minus is kept for the range check)
    body = text[1:] if text.startswith("-") else text
    if not body.isdigit() or len(body) > 19 or not body.isascii():
        raise InputError(f"query parameter {name}={text[:40]!r} is not an integer")
    return int(text)


def parse_query(items: list[tuple[str, str]]) -> Options:
    """(name, value) pairs of the URL's query -> Options; unknown or repeated names are refused, not ignored."""
    from ..config import SEED_LIMIT
    from ..config import MODES

    seen: dict[str, list[str]] = {}
    for name, value in items:
        if name not in QUERY_PARAMS:
            raise InputError(f"unknown query parameter {name[:40]!r}; expected some of {', '.join(QUERY_PARAMS)}")
        seen.setdefault(name, []).append(value)
        if len(seen[name]) > QUERY_PARAMS[name]:
            raise InputError(f"query parameter {name} is given more than {QUERY_PARAMS[name]} time(s)")
    one = {name: values[0] for name, values in seen.items() if QUERY_PARAMS[name] == 1}
    length = _one_integer("length", one["length"]) if "length" in one else None
    if length is not None and length <= 0:
        raise InputError(f"query parameter length must be positive, got {length}")
    mode = one.get("mode", "paper")
    if mode not in MODES:
        raise InputError(f"query parameter mode={mode[:40]!r} is unknown; expected one of {', '.join(MODES)}")
    steps = _one_integer("steps", one["steps"]) if "steps" in one else None
    seed = _one_integer("seed", one["seed"]) if "seed" in one else 0
    if not 0 <= seed < SEED_LIMIT:
        raise InputError(f"query parameter seed={seed} is out of range; expected an integer from 0 to 2^63 - 1")
    return Options(length, mode, steps, seed, tuple(seen.get("pin", ())), tuple(seen.get("ban", ())))


def content_length(header: str | None, limits: Limits) -> int | None:
    """The declared body size, refused (413) before a byte is read when it is over the cap."""
    if header is None:
        return None
    if not header.isdigit():
        raise HttpError(400, "bad_input", f"Content-Length {header[:40]!r} is not a byte count")
    size = int(header)
    if size > limits.max_body_bytes:
        raise body_too_large(limits)
    return size


def body_too_large(limits: Limits) -> HttpError:
    return HttpError(413, "too_large", f"the request body is larger than the server's cap of {limits.max_body_bytes:,} bytes")


def check_shots(num_shots: int, limits: Limits) -> None:
    if num_shots > limits.max_shots:
        raise HttpError(413, "too_large", f"the movie has {num_shots:,} shots; this server takes at most {limits.max_shots:,}")


def queue_full(limits: Limits) -> HttpError:
    return HttpError(503, "queue_full", f"the server is busy ({limits.max_queue} requests in progress); retry shortly",
                     {"Retry-After": str(limits.retry_after_s)})


def memory_full(limits: Limits) -> HttpError:
    return HttpError(503, "queue_full", f"the server holds {limits.max_held_bytes:,} bytes of requests already; retry shortly",
                     {"Retry-After": str(limits.retry_after_s)})


def draining(limits: Limits) -> HttpError:
    return HttpError(503, "shutting_down", "the server is shutting down and takes no new requests",
                     {"Retry-After": str(limits.retry_after_s)})


def replica_lost(limits: Limits) -> HttpError:
    return HttpError(503, "replica_lost", "the replica making this trailer was lost (Ray is starting another); retry",
                     {"Retry-After": str(limits.retry_after_s)})


def timed_out(limits: Limits) -> HttpError:
    return HttpError(504, "timeout", f"the trailer was not ready within the server's {limits.timeout_s:g} s limit")


def unknown_movie(key: str, movies_path: str) -> HttpError:
    return HttpError(404, "unknown_movie", f"this server holds no movie {key[:40]!r} (never uploaded, or dropped to make "
                                           f"room for newer ones); upload it again with POST {movies_path}")


def movie_store_too_small(nbytes: int, limits: Limits) -> HttpError:
    return HttpError(413, "too_large", f"the movie's {nbytes:,} bytes are more than the server keeps for uploaded movies "
                                       f"({limits.max_movie_store_bytes:,}); POST it to /v1/trailers instead")
