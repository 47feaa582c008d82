"""Movies uploaded once (`POST /v1/movies`), kept by the frontend for later trailers by id.

The frontend keeps each uploaded movie's checked features in Ray's object store, bounded in bytes
(`--movie-store-mb`), least recently used out first; an id it no longer holds is a 404 that says to
upload again. The features travel to a generator replica only when the replica does not hold the movie
yet: requests carry the movie's id as Ray Serve's multiplexed model id, so Serve routes them to the
replica that already loaded it (and holds its prepared states in its engine's `StateCache`). Routing is
only where the speed comes from, never what makes an answer right: any replica can load any movie the
frontend still holds, so a lost replica or a request routed elsewhere costs one movie pass, not a 404.

The id is the content's hash: uploading the same features twice gives the same id and stores them once.
"""

from __future__ import annotations

from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from ..state_cache import content_digest


def movie_id(features: np.ndarray) -> str:
    """A checked (I, D) float32 movie's id: 24 hex digits of its content's hash (shape included)."""
    return content_digest(b"movie", features, 24)


@dataclass
class MovieRef:
    """A stored movie as a request carries it: the object-store reference in a box, so that Serve hands
    it to the replica as it is (a bare reference argument would be fetched before every call)."""

    ref: object  # ray.ObjectRef of the (I, D) float32 features
    shots: int


# The movie a request carries to a replica, for the replica's loader (Serve hands the loader only the
# id). Each request runs in its own task, so each sees its own. Here, not in app.py: Ray pickles the
# deployment classes by value, and a ContextVar does not pickle; this module is imported by reference.
_carried: ContextVar[MovieRef | None] = ContextVar("carried_movie", default=None)


def carry_movie(movie: MovieRef) -> None:
    _carried.set(movie)


def carried_movie() -> MovieRef:
    movie = _carried.get()
    if movie is None:
        raise RuntimeError("a movie was loaded without the request that carries it")
    return movie


@dataclass
class StoredMovie:
    movie: MovieRef
    nbytes: int


class MovieStore:
    """id -> MovieRef, bounded in bytes; `put` evicts the least recently used movies to make room."""

    def __init__(self, limit_bytes: int):
        self.limit_bytes = limit_bytes
        self._movies: OrderedDict[str, StoredMovie] = OrderedDict()
        self.held_bytes = 0
        self.uploads = 0
        self.evictions = 0

    def get(self, key: str) -> MovieRef | None:
        stored = self._movies.get(key)
        if stored is None:
            return None
        self._movies.move_to_end(key)
        return stored.movie

    def put(self, key: str, movie: MovieRef, nbytes: int) -> None:
        """Keep `movie` (dropping the oldest until it fits); a movie is refused earlier when larger than
        the whole store (`fits`)."""
        self.uploads += 1
        if key in self._movies:
            self._movies.move_to_end(key)
            return
        while self._movies and self.held_bytes + nbytes > self.limit_bytes:
            _, old = self._movies.popitem(last=False)
            self.held_bytes -= old.nbytes
            self.evictions += 1
        self._movies[key] = StoredMovie(movie, nbytes)
        self.held_bytes += nbytes

    def fits(self, nbytes: int) -> bool:
        return nbytes <= self.limit_bytes

    def remove(self, key: str) -> bool:
        stored = self._movies.pop(key, None)
        if stored is not None:
            self.held_bytes -= stored.nbytes
        return stored is not None

    def __len__(self) -> int:
        return len(self._movies)
