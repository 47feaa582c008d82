"""Synthetic movies and trailers in the CMTD layout, with structure a model can learn from features alone.

The world (fixed for every data set, so models and data sets made with different seeds fit together):
a 1024-d feature space with two shared directions, `salience` (how trailer-worthy a shot looks: faces,
action, spectacle) and `intensity` (how tense it is), and 32 shared theme directions scenes draw from.

A movie (I shots, I uniform in [min_shots, max_shots]):
- is a run of scenes of 3-12 shots; each scene has a content vector (a mix of themes plus its own
  direction) that all its shots share, so shots of one scene look alike;
- follows a narrative arc: a scene's intensity is sin(π · x^1.6) at its relative position x (a slow rise
  to a climax late in the movie, then a fall) plus scene noise; a shot adds its own noise;
- gives every shot a salience (scene level + shot level, standard normal);
- shot feature = scene content + 0.6 · own noise direction + 0.6 · salience · u_sal + 0.6 · intensity · u_int.

Its trailer (J = max(4, round(3.7% of I)) shots, jittered by ±15%), chosen and ordered by rules on
the features:
1. Selection: each scene offers its most salient shot; the J offers with the highest salience are taken.
2. Order: shots from the first act (x < 0.35) open the trailer in movie order (the set-up); the rest
   follow by rising intensity (the build-up), so the climax comes last.
3. A trailer shot's feature is its movie shot re-encoded: the same vector plus small noise (5% of its
   norm), so g_j = argmax_i cos(v_j, m_i) recovers the source shot.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from .config import DEFAULT_TRAILER_FRACTION
from .data import MOVIE_DIR, SPLITS, TRAILER_DIR, unit_rows
from .errors import InputError

WORLD_SEED = 2512_04426
FEATURE_DIM = 1024
NUM_THEMES = 32
FIRST_ACT = 0.35
SHOT_NOISE, SALIENCE_GAIN, INTENSITY_GAIN, REENCODE_NOISE = 0.6, 0.6, 0.6, 0.05


class World:
    """The directions every synthetic movie shares."""

    def __init__(self, feature_dim: int = FEATURE_DIM):
        rng = np.random.default_rng(WORLD_SEED)
        q, _ = np.linalg.qr(rng.standard_normal((feature_dim, 2 + NUM_THEMES)))
        self.salience, self.intensity, self.themes = q[:, 0], q[:, 1], q[:, 2:].T  # (D,), (D,), (K, D)
        self.feature_dim = feature_dim


def make_movie(rng: np.random.Generator, world: World, num_shots: int):
    """(features (I, D) float32, trailer shot indices in trailer order (J,) int64)."""
    D = world.feature_dim
    bounds = [0]
    while bounds[-1] < num_shots:
        bounds.append(min(num_shots, bounds[-1] + int(rng.integers(3, 13))))
    feats = np.empty((num_shots, D))
    salience = np.empty(num_shots)
    intensity = np.empty(num_shots)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        n = stop - start
        mix = rng.dirichlet(np.full(NUM_THEMES, 0.3)) @ world.themes
        content = unit_rows(unit_rows(mix) + 0.7 * unit_rows(rng.standard_normal(D)))
        x = (start + stop) / 2 / num_shots
        arc = math.sin(math.pi * x**1.6) + 0.3 * rng.standard_normal()
        intensity[start:stop] = arc + 0.15 * rng.standard_normal(n)
        salience[start:stop] = rng.standard_normal() + rng.standard_normal(n)
        feats[start:stop] = content + SHOT_NOISE * unit_rows(rng.standard_normal((n, D)))
    feats += SALIENCE_GAIN * salience[:, None] * world.salience + INTENSITY_GAIN * intensity[:, None] * world.intensity

    # 1. each scene offers its most salient shot; the most salient offers make the trailer
    offers = np.array([start + int(np.argmax(salience[start:stop])) for start, stop in zip(bounds[:-1], bounds[1:])])
    length = max(4, round(DEFAULT_TRAILER_FRACTION * num_shots * rng.uniform(0.85, 1.15)))
    length = min(length, len(offers))
    chosen = offers[np.argsort(-salience[offers], kind="stable")[:length]]
    # 2. set-up shots in movie order, then the rest by rising intensity
    setup = np.sort(chosen[chosen < FIRST_ACT * num_shots])
    rest = chosen[chosen >= FIRST_ACT * num_shots]
    order = np.concatenate([setup, rest[np.argsort(intensity[rest], kind="stable")]])
    return feats.astype(np.float32), order.astype(np.int64)


def reencode(rng: np.random.Generator, shots: np.ndarray) -> np.ndarray:
    """A trailer shot's feature: its movie shot's, plus noise of 5% of its norm."""
    noise = unit_rows(rng.standard_normal(shots.shape)) * np.linalg.norm(shots, axis=1, keepdims=True)
    return (shots + REENCODE_NOISE * noise).astype(np.float32)


def write_dataset(
    root: str | Path,
    movies: int = 200,
    seed: int = 0,
    test_fraction: float = 0.2,
    min_shots: int = 160,
    max_shots: int = 480,
    force: bool = False,
    dtype=np.float16,
) -> dict:
    """Write `movies` synthetic movie/trailer pairs under ROOT in the CMTD layout; return a summary."""
    if movies < 2:
        raise InputError(f"--movies must be at least 2 (one train, one test), got {movies}")
    if not 0 < test_fraction < 1:
        raise InputError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    if not 8 <= min_shots <= max_shots:
        raise InputError(f"need 8 <= --min-shots <= --max-shots, got {min_shots}, {max_shots}")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        if not force:
            raise InputError(f"{root} is not empty; pass --force to replace the synthetic data in it")
        for split in SPLITS:  # replace only what synth itself writes
            shutil.rmtree(root / split, ignore_errors=True)
    world = World()
    rng = np.random.default_rng(seed)
    num_test = max(1, round(movies * test_fraction))
    counts = {"train": movies - num_test, "test": num_test}
    index = 0
    for split in SPLITS:
        for sub in (MOVIE_DIR, TRAILER_DIR):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for _ in range(counts[split]):
            feats, order = make_movie(rng, world, int(rng.integers(min_shots, max_shots + 1)))
            name = f"movie_{index:04d}"
            np.save(root / split / MOVIE_DIR / f"{name}.npy", feats.astype(dtype))
            np.save(root / split / TRAILER_DIR / f"{name}.npy", reencode(rng, feats[order]).astype(dtype))
            index += 1
    return {"root": str(root), "train": counts["train"], "test": counts["test"], "seed": seed}
