"""Many movies per run, streamed: expand inputs lazily, batch them, one result per input in input order.

    from ssmp_infer import Engine
    from ssmp_infer.many import generate_many, iter_inputs
    engine = Engine.load()
    for result in generate_many(engine, iter_inputs(["movies/", "more.npz", "one.npy"])):
        print(result.to_dict())      # {"name": ..., **trailer} or {"name": ..., "error": ...}

At most `batch_movies` movies are held at a time: a directory of 10,000 movies is listed up front (its
names, sorted) but each movie is read only when its batch is being filled. A bad movie becomes an error
result in its place; it never sinks the movies batched with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Union

import numpy as np

from .config import DecodeConfig
from .data import check_trailer_length, default_trailer_length, load_features, validate_features
from .engine import Trailer
from .errors import InputError
from .inputs import npz_members

Loader = Callable[[], np.ndarray]
Features = Union[np.ndarray, Loader]



@dataclass
class MovieResult:
    """One input's outcome: its trailer, or the one-sentence reason it has none (which may call the
    movie "the movie": the name is beside it)."""

    name: str
    trailer: Trailer | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"name": self.name, "error": self.error}
        return {"name": self.name, **self.trailer.to_dict()}


def _fail(message: str) -> Loader:
    """A loader for an input that could not even be opened: it fails when its turn comes."""

    def load() -> np.ndarray:
        raise InputError(message)

    return load


def _npz_members(path: Path) -> Iterator[tuple[str, Loader]]:
    """One item per array of an .npz, read lazily; `inputs.npz_members` checks each member's header
    against its size before allocating (an archive cannot claim a 10^12-row array over a tiny member)."""
    try:
        keys, load = npz_members(path)  # reads the zip directory only
    except InputError as e:
        yield path.name, _fail(str(e))
        return
    if not keys:
        yield path.name, _fail(f"{path} holds no arrays; expected one (shots, features) array per movie")
        return
    for key in keys:
        yield f"{path.name}:{key}", (lambda key=key: load(key))


def iter_inputs(paths: Iterable[str | Path]) -> Iterator[tuple[str, Loader]]:
    """(name, loader) per movie, in order: a `.npy` file (named by its stem), each `.npy` of a directory
    (sorted by file name; other entries are ignored), each array of an `.npz` (named `file.npz:key`).

    Nothing is read until a loader is called; it returns the raw array or raises InputError naming the
    file. A path that cannot be expanded (missing, an empty directory, another suffix, a broken .npz)
    yields one item whose loader raises, so the problem is reported in that input's place.
    """
    for path in map(Path, paths):
        if path.is_dir():
            try:
                files = sorted(p for p in path.iterdir() if p.suffix == ".npy" and p.is_file())
            except OSError as e:
                yield path.name, _fail(f"directory {path} could not be listed ({e.strerror or e})")
                continue
            if not files:
                yield path.name, _fail(f"directory {path} holds no .npy files")
            for file in files:
                yield file.stem, (lambda file=file: load_features(file))
        elif path.suffix == ".npz":
            if not path.exists():
                yield path.name, _fail(f"no such file: {path}")
            else:
                yield from _npz_members(path)
        else:  # load_features names a missing file or a wrong suffix in its turn
            yield path.stem, (lambda path=path: load_features(path))


def generate_many(
    engine,
    items: Iterable[tuple[str, Features]],
    length: int | None = None,
    decode: DecodeConfig | None = None,
    batch_movies: int = 8,
) -> Iterator[MovieResult]:
    """One MovieResult per (name, features-or-loader) item, in input order, generated `batch_movies`
    consecutive good movies at a time.

    Each movie is loaded (if a loader) and validated as its item is reached, so at most `batch_movies`
    movies are held and `items` is consumed only as far as the results asked for need. `length` applies
    to every movie (default: ~3.7% of its shots). A movie that fails to load, to validate or to fit
    `length` becomes an error result; if a whole batch still raises InputError, its movies are retried
    one by one so only the bad one fails. The trailers are those each movie gets alone.
    """
    if batch_movies < 1:  # checked here, at the call, not at the first next()
        raise InputError(f"batch_movies must be at least 1, got {batch_movies}")
    if length is not None and length <= 0:
        raise InputError(f"--length must be positive, got {length}")
    return _generate_many(engine, items, length, decode or DecodeConfig(), batch_movies)


def _generate_many(engine, items, length: int | None, decode: DecodeConfig, batch_movies: int) -> Iterator[MovieResult]:
    pending: list[MovieResult | tuple[str, np.ndarray, int]] = []  # in input order; tuples await a batch
    good = 0
    for name, features in items:
        try:
            array = features() if callable(features) else features
            movie = validate_features(array, "the movie", engine.feature_dim)  # the result carries its name
            num_shots = movie.shape[0]
            n = default_trailer_length(num_shots) if length is None else check_trailer_length(length, num_shots)
        except InputError as e:
            failed = MovieResult(name, error=str(e))
            if good:
                pending.append(failed)
            else:  # nothing ahead of it is waiting: report it now
                yield failed
            continue
        pending.append((name, movie, n))
        good += 1
        if good == batch_movies:
            yield from _flush(engine, pending, decode)
            pending, good = [], 0
    if pending:
        yield from _flush(engine, pending, decode)


def _flush(engine, pending: list, decode: DecodeConfig) -> Iterator[MovieResult]:
    batch = [p for p in pending if not isinstance(p, MovieResult)]
    try:
        trailers = engine.generate_batch([m for _, m, _ in batch], [n for _, _, n in batch], decode)
    except InputError:  # validated already, so rare: find the movie that raises, keep the others
        trailers = [_generate_one(engine, name, movie, n, decode) for name, movie, n in batch]
    done = iter(trailers)
    for p in pending:
        if isinstance(p, MovieResult):
            yield p
            continue
        trailer = next(done)
        yield trailer if isinstance(trailer, MovieResult) else MovieResult(p[0], trailer=trailer)


def _generate_one(engine, name: str, movie: np.ndarray, n: int, decode: DecodeConfig) -> Trailer | MovieResult:
    try:
        return engine.generate(movie, length=n, decode=decode)
    except InputError as e:
        return MovieResult(name, error=str(e))
