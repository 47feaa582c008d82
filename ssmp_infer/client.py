"""A client for `ssmp-infer serve`, for pipelines: one call posts a movie's features, returns its trailer.

    from ssmp_infer.client import generate_trailer
    trailer = generate_trailer("http://127.0.0.1:8000", features, length=40, seed=3)
    trailer["shots"]          # the JSON of `ssmp-infer run`, as a dict

    # an editor's session: the movie once, then as many variations as wanted (each runs only its rounds)
    movie = upload_movie("http://127.0.0.1:8000", features)
    trailer = movie_trailer("http://127.0.0.1:8000", movie, length=40, pins=["0:512"], bans=["100-140"])

Standard library only (urllib). The array goes as a .npy file's bytes (numpy.save, never a pickle); a
refusal raises ServerError carrying the server's one sentence and its HTTP status.
"""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np


class ServerError(Exception):
    """The server refused or failed a request: `status` is the HTTP code, the message its sentence."""

    def __init__(self, status: int, message: str, kind: str | None = None, retry_after: str | None = None):
        super().__init__(message)
        self.status, self.kind, self.retry_after = status, kind, retry_after


def npy_bytes(features: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(features), allow_pickle=False)  # an object array fails here, not on the server
    return buf.getvalue()


def generate_trailer(url: str, features: np.ndarray | bytes, length: int | None = None, mode: str | None = None,
                     steps: int | None = None, seed: int | None = None, pins: list[str] | None = None,
                     bans: list[str] | None = None, timeout: float = 120.0, retry_for: float = 60.0) -> dict:
    """POST `features` ((I, D) array, or a .npy file's bytes as they are) to `url`/v1/trailers; the trailer dict.

    `pins` ("SLOT:SHOT") and `bans` ("100-140,512") are the CLI's --pin and --ban. A 503 (the server busy,
    a replica lost, a restart) is retried after its Retry-After for up to `retry_for` seconds (0: never);
    past that, or on any other refusal (4xx, 5xx), raises ServerError with the server's sentence. A
    connection failure is urllib's URLError.
    """
    return _retrying(retry_for, lambda: _post_trailer(url, features, length, mode, steps, seed, pins, bans, timeout))


def upload_movie(url: str, features: np.ndarray | bytes, timeout: float = 120.0, retry_for: float = 60.0) -> str:
    """POST `features` to `url`/v1/movies once; its id, for `movie_trailer`. The same features give the same id."""
    body = features if isinstance(features, (bytes, bytearray)) else npy_bytes(features)
    return _retrying(retry_for, lambda: _request(url.rstrip("/") + "/v1/movies", bytes(body), timeout))["movie_id"]


def movie_trailer(url: str, movie_id: str, length: int | None = None, mode: str | None = None, steps: int | None = None,
                  seed: int | None = None, pins: list[str] | None = None, bans: list[str] | None = None,
                  timeout: float = 120.0, retry_for: float = 60.0) -> dict:
    """A trailer of a movie uploaded with `upload_movie`, options as in `generate_trailer`. A movie the
    server no longer holds raises ServerError with status 404 (kind "unknown_movie"): upload it again."""
    address = f"{url.rstrip('/')}/v1/movies/{urllib.parse.quote(movie_id, safe='')}/trailers{_query(length, mode, steps, seed, pins, bans)}"
    return _retrying(retry_for, lambda: _request(address, b"", timeout))


def _retrying(retry_for: float, call):
    """`call()`, again after each 503's Retry-After until `retry_for` seconds have passed."""
    deadline = time.monotonic() + retry_for
    while True:
        try:
            return call()
        except ServerError as e:
            wait = _retry_after(e)
            if e.status != 503 or time.monotonic() + wait > deadline:
                raise
            time.sleep(wait)


def _retry_after(error: "ServerError") -> float:
    try:
        return min(max(float(error.retry_after or 1), 0.1), 30.0)
    except ValueError:  # an HTTP date, or junk: a second
        return 1.0


def _query(length, mode, steps, seed, pins, bans) -> str:
    query = [(k, str(v)) for k, v in (("length", length), ("mode", mode), ("steps", steps), ("seed", seed)) if v is not None]
    query += [("pin", p) for p in pins or ()] + [("ban", b) for b in bans or ()]
    return "?" + urllib.parse.urlencode(query) if query else ""


def _post_trailer(url, features, length, mode, steps, seed, pins, bans, timeout) -> dict:
    body = features if isinstance(features, (bytes, bytearray)) else npy_bytes(features)
    return _request(url.rstrip("/") + "/v1/trailers" + _query(length, mode, steps, seed, pins, bans), bytes(body), timeout)


def _request(address: str, body: bytes, timeout: float) -> dict:
    """POST `body` to `address`; the JSON answer, or ServerError with the server's sentence."""
    request = urllib.request.Request(address, data=body, method="POST", headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        with e:
            raw = e.read()
        try:
            answer = json.loads(raw)
            message, kind = answer["error"], answer.get("kind")
        except (ValueError, KeyError, TypeError):  # not our JSON (a proxy's page): keep its start
            message, kind = f"HTTP {e.code}: {raw[:200].decode('utf-8', 'replace').strip() or e.reason}", None
        raise ServerError(e.code, message, kind, e.headers.get("Retry-After")) from None
