"""Synthetic movies and trailers in the CMTD layout: learnable from features, never fully predictable.

Everything is drawn from seeds; nothing is shared between data sets. A data set's *world* (seed
`world_seed`, by default its `seed`) fixes, in a `feature_dim`-d space:
- 6 factor directions (what a shot shows: faces, action, spectacle, ...), one intensity direction and
  32 theme directions, orthonormal;
- 4 scene kinds, each owning 8 of the themes and its own weights over the factors;
- the trailer-worthiness rule: the kinds' weights, one interacting pair of factors, one factor that
  counts against its scene, one whose jump from the previous shot counts, a narrative-importance
  curve (three bumps at drawn places, a spoiler cut-off near the end) and how much each part weighs;
- the order rule's opening act (the first 20-35% of the movie) and the intensity arc;
- which rules it plays by (`worth`, `order`; `mixed` and `arc` unless chosen otherwise, below) and
  how large a share of its movie a trailer is (`trailer_fraction`, below). A
  `direction` world has one more unit direction u, orthogonal to all the others and drawn from a stream
  of its own, so the draws above are the same in every world of one seed.

A movie (I shots, I uniform in [min_shots, max_shots]):
- is a run of scenes of 2-14 shots; a scene has a kind, a content vector (a mix of its kind's themes
  plus its own direction) that all its shots share, a factor level and an intensity (the arc
  sin(π x^p) at its relative position x, plus noise);
- a shot's factors z (6 values) are its scene's level plus its own, its intensity its scene's plus
  noise; with probability 0.1 a shot returns to the camera set-up of the shot two before it (shot /
  reverse shot) and is then a near-duplicate of it: same factors, same look, a tiny orthogonal jitter;
- feature = content + 0.6 · own noise direction + 0.45 · z · factors + 0.45 · intensity · u_int
  (+ 0.45 · a · u in a `direction` world, a shot's latent a = 0.5 · its scene's N(0,1) + 0.85 · its own,
  copied by a repeated set-up like the rest).

Trailer-worthiness of a shot, each part standardised over the movie and weighted by the world:
- `mixed`:
    w_kind(scene) · z   +   ± z_a z_b   +   (z_c − its scene's mean z_c)   +   |z_d − z_d of the shot before|
    +   importance(x of its scene).
  No fixed projection of the features reads it: the linear part changes with the scene's kind, and the
  rest is products, contrasts against the scene and the neighbour, and position.
- `direction`: sqrt(1 − s) · a + sqrt(s) · opens, with s ~ U(0.15, 0.35) per world and opens = 1 for
  the first shot of a scene (a scene change shows in the features: a scene's shots share its content).
  A linear read of u plus a scene-change detector (the cosine to the shot before) gets most of it.

Its trailer: J = max(4, round(f · I · (1 ± 13%))) shots, never more than I, f the world's `trailer_fraction`
(in (0, 0.5], recorded in ceiling.json and the ssmp-synth.json marker; by default CMTD's 3.7%: 60-80 shots
at its 1909).
1. Selection, an editor's taste: the J best of worthiness / 0.45 + Gumbel noise (a sample without
   replacement from softmax(worthiness / 0.45)), at most 2 shots per scene and 1 per camera set-up
   while the movie has enough of them.
2. Order, `arc`: shots of scenes in the opening act open the trailer in movie order; the other scenes
   follow by rising mean intensity of their chosen shots plus noise (sd 0.35), each scene's shots
   together in movie order. `movie`: the chosen shots in movie order throughout.
3. A trailer shot's feature is its movie shot re-encoded: the same vector plus isotropic noise of 25%
   of its norm (cos ≈ 0.97). g_j = argmax_i cos(v_j, m_i) recovers the source shot except, now and then
   (about 2% of slots), when a near-duplicate set-up of the same scene wins: the labels' own noise.

The generator's own rule without its random parts (the J shots of highest worthiness under the same
caps, ordered with no noise) scored against the written test split, as `eval` scores (float16 files,
g_j by argmax, tolerance 0), is written to ROOT/ceiling.json with the rules' names: what a model can be
measured against.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .atomic import deferred_interrupts, write_text_atomic
from .config import DEFAULT_TRAILER_FRACTION, SEED_LIMIT
from .data import MOVIE_DIR, SPLITS, TRAILER_DIR, shot_targets, unit_rows
from .errors import InputError
from .inputs import FLOAT_DTYPES, dumps_json, memory_available
from .metrics import score_trailer, summarise

FEATURE_DIM = 1024
NUM_FACTORS, NUM_KINDS, THEMES_PER_KIND = 6, 4, 8
SHOT_NOISE, FACTOR_GAIN, INTENSITY_GAIN = 0.6, 0.45, 0.45
SCENE_SHOTS = (2, 14)  # inclusive
REPEAT_SETUP = 0.1  # chance a shot returns to the set-up of the shot two before it
TRAILER_JITTER = 0.13  # J = the world's trailer fraction of I, ± this share
MAX_TRAILER_FRACTION = 0.5  # a trailer of more than half its movie is no longer a selection
MIN_TRAILER = 4
TASTE = 0.45  # temperature of the editor's sample over worthiness
SCENE_CAP = 2
ORDER_NOISE = 0.35
REENCODE_NOISE = 0.25
CEILING_FILE = "ceiling.json"

MIN_SHOTS, MAX_SHOTS = 8, 100_000
MAX_MOVIES = 100_000
DEFAULT_SHOTS = (1400, 2400)  # uniform: mean 1900, CMTD's movies average 1909 shots

WORTH_RULES = ("mixed", "direction")
ORDER_RULES = ("arc", "movie")
OPEN_SHARE = (0.15, 0.35)  # a direction world's weight of scene openings, uniform in this range
HIDDEN_SCENE, HIDDEN_OWN = 0.5, 0.85  # a shot's latent along the hidden direction: scene and own parts
RULE_TEXT = {
    "mixed": "top-J shots by expected worthiness",
    "direction": "top-J shots by the hidden direction's latent and scene openings",
    "arc": "opening act in movie order, then scenes by rising mean intensity",
    "movie": "in movie order",
}


def rule(worth: str = "mixed", order: str = "arc") -> str:
    """ceiling.json's description of the noise-free rule of a world with these rules."""
    return (
        f"{RULE_TEXT[worth]} (at most 2 per scene, 1 per camera set-up), {RULE_TEXT[order]}: "
        "the generator's rule without its random parts"
    )


def check_rule(value, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise InputError(f"unknown {name} {value!r}; expected one of [{', '.join(allowed)}]")
    return value


def check_trailer_fraction(value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= MAX_TRAILER_FRACTION:
        raise InputError(f"--trailer-fraction must be in (0, {MAX_TRAILER_FRACTION:g}], got {value}")
    return float(value)


class World:
    """A data set's structure: directions, scene kinds and the trailer rules, all drawn from `seed`;
    `worth` and `order` name the rules it plays by (WORTH_RULES, ORDER_RULES), `trailer_fraction` the
    share of a movie's shots its trailer holds (drawing nothing: the directions and movies stay the same)."""

    def __init__(self, seed: int = 0, feature_dim: int = FEATURE_DIM, worth: str = "mixed", order: str = "arc",
                 trailer_fraction: float = DEFAULT_TRAILER_FRACTION):
        check_seed(seed, "world seed")
        self.worth_rule = check_rule(worth, WORTH_RULES, "--worth")
        self.order_rule = check_rule(order, ORDER_RULES, "--order")
        self.trailer_fraction = check_trailer_fraction(trailer_fraction)
        num_dirs = NUM_FACTORS + 1 + NUM_KINDS * THEMES_PER_KIND
        least = num_dirs + (worth == "direction")  # room for the hidden direction too
        if feature_dim < least:
            raise InputError(f"feature_dim must be at least {least} in a {worth} world, got {feature_dim}")
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
        q, _ = np.linalg.qr(rng.standard_normal((feature_dim, num_dirs)))
        self.feature_dim = feature_dim
        self.factors = q[:, :NUM_FACTORS].T.astype(np.float32)  # (F, D)
        self.intensity = q[:, NUM_FACTORS].astype(np.float32)  # (D,)
        self.themes = q[:, NUM_FACTORS + 1 :].T.reshape(NUM_KINDS, THEMES_PER_KIND, feature_dim)  # (G, T, D)
        self.kind_probs = rng.dirichlet(np.full(NUM_KINDS, 4.0))
        self.kind_weights = unit_rows(rng.standard_normal((NUM_KINDS, NUM_FACTORS)))  # (G, F)
        self.pair = rng.choice(NUM_FACTORS, size=2, replace=False)
        self.pair_sign = rng.choice((-1.0, 1.0))
        self.contrast, self.jump = rng.choice(NUM_FACTORS, size=2, replace=False)
        # importance(x): an inciting incident, a midpoint, a late peak; no spoilers after the cut-off
        self.bumps = np.stack(
            [rng.uniform((0.05, 0.35, 0.6), (0.3, 0.6, 0.85)), rng.uniform(0.04, 0.12, 3), rng.uniform(0.5, 1.5, 3)]
        )  # (3: centre, width, height; 3 bumps)
        self.spoiler = rng.uniform(0.85, 0.93)
        # variance shares of the parts: kind-gated linear, pair, contrast, jump, importance
        self.shares = rng.dirichlet(np.array([0.3, 0.2, 0.15, 0.12, 0.23]) * 40)
        self.opening = rng.uniform(0.2, 0.35)
        self.arc_power = rng.uniform(1.3, 2.0)
        self.hidden, self.open_share = None, 0.0
        if worth == "direction":  # a stream of its own: the draws above stay those of the mixed world
            extra = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
            u = extra.standard_normal(feature_dim)
            u -= q @ (q.T @ u)
            self.hidden = (u / np.linalg.norm(u)).astype(np.float32)  # (D,)
            self.open_share = extra.uniform(*OPEN_SHARE)

    def importance(self, x: np.ndarray) -> np.ndarray:
        centre, width, height = self.bumps[:, :, None]
        bumps = (height * np.exp(-0.5 * ((x - centre) / width) ** 2)).sum(axis=0)
        return bumps - 2.0 / (1 + np.exp(-(x - self.spoiler) / 0.01))

    def arc(self, x: np.ndarray) -> np.ndarray:
        return np.sin(np.pi * x**self.arc_power)


class SynthMovie(NamedTuple):
    features: np.ndarray  # (I, D) float32, movie order
    order: np.ndarray  # (J,) int64: the trailer's movie shots, in trailer order
    guess: np.ndarray  # (J,) int64: the rule's best guess without its random parts


def movie_rng(seed: int, index: int) -> np.random.Generator:
    """Movie `index` of a data set draws from its own stream: it does not depend on how many come after it."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index)))


def check_seed(seed, name: str = "--seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < SEED_LIMIT:
        raise InputError(f"{name} must be an integer in [0, 2^63), got {seed!r}")
    return int(seed)


def trailer_length(num_shots: int, jitter: float = 0.0, fraction: float = DEFAULT_TRAILER_FRACTION) -> int:
    """J for an I-shot movie: `fraction` of I, which `jitter` in [-1, 1] moves by up to ±13% (60-80 shots at
    I = 1909 and the default 3.7%)."""
    raw = round(fraction * num_shots * (1 + TRAILER_JITTER * jitter))
    return min(num_shots, max(MIN_TRAILER, raw))


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements share its group."""
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(g)]))
    rank = np.empty(len(g), dtype=np.int64)
    rank[order] = np.arange(len(g)) - run_start
    return rank


def select(keys: np.ndarray, scene: np.ndarray, setup: np.ndarray, length: int) -> np.ndarray:
    """The `length` shots of highest key, at most SCENE_CAP per scene and one per camera set-up (greedily,
    best first); if the caps leave fewer than `length`, the best of the rest fill up, so any length up
    to I can be met."""
    by_key = np.argsort(-keys, kind="stable")
    first = _rank_within(setup[by_key]) == 0  # the best shot of its set-up
    scene_rank = np.full(len(keys), SCENE_CAP)
    scene_rank[first] = _rank_within(scene[by_key][first])  # among the shots the set-up cap lets through
    return by_key[np.argsort(scene_rank >= SCENE_CAP, kind="stable")[:length]]


def arrange(chosen: np.ndarray, x: np.ndarray, scene: np.ndarray, intensity: np.ndarray, opening: float, noise):
    """Trailer order: opening-act shots in movie order, then scenes by rising mean intensity (+ noise)."""
    chosen = np.sort(chosen)
    head, rest = chosen[x[chosen] < opening], chosen[x[chosen] >= opening]
    scenes, inverse = np.unique(scene[rest], return_inverse=True)
    key = np.bincount(inverse, weights=intensity[rest]) / np.bincount(inverse)
    if noise is not None:
        key = key + ORDER_NOISE * noise(len(scenes))
    return np.concatenate([head, rest[np.lexsort((rest, key[inverse]))]]).astype(np.int64)


def directions(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Random unit rows, float32. Centred uniform coordinates, five times cheaper to draw than normal
    ones: in hundreds of dimensions their inner products with any fixed vector are as good as normal."""
    x = rng.random(shape, dtype=np.float32)
    x -= 0.5
    x /= np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    return x


def _standardise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    return x / max(float(x.std()), 1e-6)


def make_movie(rng: np.random.Generator, world: World, num_shots: int) -> SynthMovie:
    """One movie of `num_shots` shots in `world`, its trailer's shots and the rule's noise-free guess."""
    I, D, F = num_shots, world.feature_dim, NUM_FACTORS
    lengths = rng.integers(SCENE_SHOTS[0], SCENE_SHOTS[1] + 1, size=I // SCENE_SHOTS[0] + 1)
    bounds = np.r_[0, np.cumsum(lengths)]
    S = int(np.searchsorted(bounds, I))  # scenes [bounds[s], bounds[s+1]); the last one is cut at I
    bounds = np.r_[bounds[:S], I]
    scene = np.repeat(np.arange(S), np.diff(bounds))  # (I,)
    x_scene = (bounds[:-1] + bounds[1:]) / 2 / I  # (S,) relative position of each scene's middle
    x = x_scene[scene]
    first = bounds[:-1][scene]  # (I,) first shot of each shot's scene

    # scenes: kind, content, factor level, intensity
    kind = rng.choice(NUM_KINDS, size=S, p=world.kind_probs)
    mix = np.zeros((S, NUM_KINDS, THEMES_PER_KIND))
    mix[np.arange(S), kind] = rng.dirichlet(np.full(THEMES_PER_KIND, 0.5), size=S)  # its kind's themes only
    mix = mix.reshape(S, -1) @ world.themes.reshape(-1, D)
    content = unit_rows(unit_rows(mix) + 0.7 * directions(rng, (S, D))).astype(np.float32)
    scene_z = rng.standard_normal((S, F))
    scene_int = world.arc(x_scene) + 0.35 * rng.standard_normal(S)

    # shots; a repeated set-up copies the shot two before it (chains resolve to the chain's first shot)
    z = 0.6 * scene_z[scene] + 0.8 * rng.standard_normal((I, F))
    intensity = scene_int[scene] + 0.25 * rng.standard_normal(I)
    feats = directions(rng, (I, D))  # (I, D) float32, the shot's own look
    feats *= SHOT_NOISE
    idx = np.arange(I)
    repeat = (rng.random(I) < REPEAT_SETUP) & (idx - first >= 2)
    setup = idx.copy()
    for i in np.flatnonzero(repeat):  # ascending, so the shot two before is already resolved
        setup[i] = setup[i - 2]
    direction = world.worth_rule == "direction"
    shot_latents = [z, intensity, feats]
    if direction:  # drawn after the mixed world's draws, which stay the same
        a = HIDDEN_SCENE * rng.standard_normal(S)[scene] + HIDDEN_OWN * rng.standard_normal(I)  # (I,)
        shot_latents.append(a)
    for values in shot_latents:
        values[repeat] = values[setup[repeat]]
    feats += content[scene]
    latent = np.c_[FACTOR_GAIN * z, INTENSITY_GAIN * intensity].astype(np.float32)
    feats += latent @ np.vstack([world.factors, world.intensity])
    if direction:
        feats += (FACTOR_GAIN * a).astype(np.float32)[:, None] * world.hidden
    if repeat.any():
        # near-duplicate: a jitter orthogonal to the shot, sized so that re-encoding noise picks it over the
        # original with probability P(N(0,1) > t), t ~ U(0.3, 1.5)
        base = feats[repeat]
        jitter = directions(rng, base.shape)
        jitter -= (jitter * base).sum(1, keepdims=True) / (base * base).sum(1, keepdims=True) * base
        t = rng.uniform(0.3, 1.5, size=(len(base), 1))
        size = 2 * REENCODE_NOISE * t / math.sqrt(D) * np.linalg.norm(base, axis=1, keepdims=True)
        feats[repeat] = base + (size * unit_rows(jitter)).astype(np.float32)

    if direction:
        opens = np.sqrt(world.open_share) * _standardise((idx == first).astype(np.float64))
        worth = np.sqrt(1 - world.open_share) * _standardise(a) + opens
    else:
        worth = mixed_worth(world, z, kind[scene], scene, x)

    length = trailer_length(I, rng.uniform(-1, 1), world.trailer_fraction)
    taste = rng.gumbel(size=I)
    chosen = select(worth / TASTE + taste, scene, setup, length)
    best = select(worth, scene, setup, length)
    if world.order_rule == "movie":
        return SynthMovie(feats, np.sort(chosen), np.sort(best))
    order = arrange(chosen, x, scene, intensity, world.opening, lambda n: rng.standard_normal(n))
    return SynthMovie(feats, order, arrange(best, x, scene, intensity, world.opening, None))


def mixed_worth(world: World, z: np.ndarray, kind: np.ndarray, scene: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The mixed rule's worthiness of each shot (factors z, its scene's kind, scene and position x): the
    world's parts, each standardised over the movie."""
    c, j = world.contrast, world.jump
    contrast = z[:, c] - (np.bincount(scene, weights=z[:, c]) / np.bincount(scene))[scene]
    parts = np.stack(
        [
            (world.kind_weights[kind] * z).sum(axis=1),
            world.pair_sign * z[:, world.pair[0]] * z[:, world.pair[1]],
            contrast,
            np.abs(np.diff(z[:, j], prepend=z[0, j])),
            world.importance(x),
        ]
    )
    return np.sqrt(world.shares) @ np.stack([_standardise(p) for p in parts])  # (I,)


def reencode(rng: np.random.Generator, shots: np.ndarray) -> np.ndarray:
    """A trailer shot's feature: its movie shot's, plus isotropic noise of 25% of its norm."""
    noise = directions(rng, shots.shape) * np.linalg.norm(shots, axis=1, keepdims=True)
    return (shots + REENCODE_NOISE * noise).astype(np.float32)


def shot_range(shots: str | None, min_shots: int | None = None, max_shots: int | None = None) -> tuple[int, int]:
    """The CLI's movie sizes: `--shots LO-HI` (or N), or `--min-shots`/`--max-shots`, else the default."""
    if shots is None:
        lo, hi = DEFAULT_SHOTS
        return (lo if min_shots is None else min_shots, hi if max_shots is None else max_shots)
    if min_shots is not None or max_shots is not None:
        raise InputError("give --shots or --min-shots/--max-shots, not both")
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", shots, flags=re.ASCII)
    if match is None:
        raise InputError(f"--shots must be LO-HI or N (whole numbers of shots, e.g. 1400-2400), got {shots!r}")
    lo = int(match[1])
    return lo, lo if match[2] is None else int(match[2])


def check_options(movies, seed, test_fraction, min_shots, max_shots, dtype, world_seed) -> dict[str, int]:
    """Validate every option before anything is created; return the movies per split."""
    for name, value in (("--movies", movies), ("--min-shots", min_shots), ("--max-shots", max_shots)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputError(f"{name} must be an integer, got {value!r}")
    if not 2 <= movies <= MAX_MOVIES:
        raise InputError(f"--movies must be in [2, {MAX_MOVIES}] (at least one train and one test movie), got {movies}")
    check_seed(seed)
    check_seed(world_seed, "--world-seed")
    if not (isinstance(test_fraction, numbers.Real) and 0 < test_fraction < 1):
        raise InputError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    if not MIN_SHOTS <= min_shots <= max_shots <= MAX_SHOTS:
        raise InputError(
            f"need {MIN_SHOTS} <= --min-shots <= --max-shots <= {MAX_SHOTS} shots per movie "
            f"(--shots LO-HI sets both), got {min_shots} and {max_shots}"
        )
    if np.dtype(dtype).type not in FLOAT_DTYPES:
        raise InputError(f"dtype must be float16, float32 or float64, got {np.dtype(dtype)}")
    num_test = min(movies - 1, max(1, round(movies * test_fraction)))  # every split gets a movie
    return {"train": movies - num_test, "test": num_test}


MARKER = "ssmp-synth.json"  # in every data root synth writes: `--force` replaces only such roots


def check_root(root: Path, force: bool) -> None:
    """Refuse a root that is a file, non-empty without --force, or (with --force) not synth's own: no
    marker, or anything in train/ and test/ that synth did not write (a notes.txt, a real feature file)."""
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} exists and is not a directory")
    if str(root) == "-":
        raise InputError("--out - (standard output) cannot hold a data set; name a directory")
    if not root.is_dir() or not any(root.iterdir()):
        return
    if not force:
        raise InputError(f"{root} is not empty; pass --force to replace the synthetic data in it")
    if not (root / MARKER).is_file() or (root / MARKER).is_symlink():
        raise InputError(
            f"{root} was not written by synth (it has no {MARKER} marker); --force replaces only synth's own "
            "data sets, so remove it yourself or choose another --out"
        )
    for name in (CEILING_FILE, MARKER):
        if os.path.lexists(root / name) and (not (root / name).is_file() or (root / name).is_symlink()):
            raise InputError(f"{root / name} is not a regular file; --force will not replace it")
    for split in SPLITS:
        for path in _foreign(root / split):
            raise InputError(f"{path} was not written by synth; --force will not delete it (move it out first)")


_OWN_FILE = re.compile(r"movie_\d+\.npy")


def _foreign(split_dir: Path):
    """Entries under a split folder that synth would not have written (each yielded; empty if none)."""
    if not os.path.lexists(split_dir):
        return
    if split_dir.is_symlink() or not split_dir.is_dir():
        yield split_dir
        return
    for sub in split_dir.iterdir():
        if sub.name not in (MOVIE_DIR, TRAILER_DIR) or sub.is_symlink() or not sub.is_dir():
            yield sub
            continue
        for f in sub.iterdir():
            if not _OWN_FILE.fullmatch(f.name) or f.is_symlink() or not f.is_file():
                yield f


def check_room(root: Path, movies: int, min_shots: int, max_shots: int, itemsize: int, feature_dim: int,
               trailer_fraction: float = DEFAULT_TRAILER_FRACTION) -> None:
    """Refuse sizes the disk or the memory cannot hold, before any work (the new set is built beside the
    old one, so the disk must hold it whole)."""
    mean_shots = (min_shots + max_shots) / 2
    trailer_share = trailer_fraction * (1 + TRAILER_JITTER)
    disk = movies * mean_shots * (1 + trailer_share) * feature_dim * itemsize
    target = root
    while not target.exists() and target.parent != target:
        target = target.parent
    free = shutil.disk_usage(target).free
    if disk > free:
        raise InputError(
            f"{movies} movies of {min_shots}-{max_shots} shots need about {disk / 2**30:.3g} GiB on disk; "
            f"{target} has {free / 2**30:.3g} GiB free"
        )
    # make_movie holds about eight (I, D) float32 arrays at its peak, and the ceiling a (J, I) score matrix
    peak = max_shots * feature_dim * 4 * 8 + trailer_length(max_shots, 1.0, trailer_fraction) * max_shots * 8
    available = memory_available()
    if peak > available:
        raise InputError(
            f"a movie of {max_shots} shots needs about {peak / 2**30:.3g} GiB of memory to make; "
            f"{available / 2**30:.3g} GiB are available"
        )


def write_dataset(
    root: str | Path,
    movies: int = 200,
    seed: int = 0,
    test_fraction: float = 0.2,
    min_shots: int = DEFAULT_SHOTS[0],
    max_shots: int = DEFAULT_SHOTS[1],
    force: bool = False,
    dtype=np.float16,
    world_seed: int | None = None,
    feature_dim: int = FEATURE_DIM,
    worth: str = "mixed",
    order: str = "arc",
    trailer_fraction: float = DEFAULT_TRAILER_FRACTION,
) -> dict:
    """Write `movies` synthetic movie/trailer pairs under ROOT in the CMTD layout, and ROOT/ceiling.json.

    The data are built in a temporary folder inside ROOT and moved into place at the end, so an
    interrupted run leaves the previous data (or nothing) behind, never half a data set. ROOT gets a
    `ssmp-synth.json` marker: `force` replaces train/, test/ and ceiling.json only in a marked ROOT and only
    if they hold nothing synth did not write; every option is checked before anything is touched. `world_seed`
    (default: `seed`) draws the structure; `seed` the movies, so fresh movies of a known world can be made.
    `worth` and `order` choose the world's rules (WORTH_RULES, ORDER_RULES; the module docstring describes them),
    `trailer_fraction` the share of a movie's shots its trailer holds (CMTD's 3.7% by default).
    """
    world_seed = seed if world_seed is None else world_seed
    counts = check_options(movies, seed, test_fraction, min_shots, max_shots, dtype, world_seed)
    world = World(world_seed, feature_dim, worth=worth, order=order, trailer_fraction=trailer_fraction)
    root = Path(root)
    check_root(root, force)  # every argument and the folder itself before anything is created or removed
    check_room(root, movies, min_shots, max_shots, np.dtype(dtype).itemsize, feature_dim, world.trailer_fraction)

    created = root  # the outermost folder this run makes (None: ROOT existed), removed if it is interrupted
    while not created.parent.exists():
        created = created.parent
    created = None if root.exists() else created
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".synth.", dir=root))
    completed = False
    try:
        scores, shots, lengths = [], [], []
        width = max(4, len(str(movies - 1)))
        index = 0
        for split in SPLITS:
            for sub in (MOVIE_DIR, TRAILER_DIR):
                (work / split / sub).mkdir(parents=True)
            for _ in range(counts[split]):
                rng = movie_rng(seed, index)
                movie = make_movie(rng, world, int(rng.integers(min_shots, max_shots + 1)))
                feats = movie.features.astype(dtype)
                trailer = reencode(rng, movie.features[movie.order]).astype(dtype)
                name = f"movie_{index:0{width}d}"
                np.save(work / split / MOVIE_DIR / f"{name}.npy", feats)
                np.save(work / split / TRAILER_DIR / f"{name}.npy", trailer)
                if split == "test":  # the ground truth exactly as eval computes it from the files
                    truth = shot_targets(feats.astype(np.float32), trailer.astype(np.float32))
                    scores.append(score_trailer(movie.guess.tolist(), truth.tolist(), 0))
                shots.append(len(feats))
                lengths.append(len(trailer))
                index += 1
        ceiling = {
            **summarise(scores),
            "split": "test",
            "tolerance": 0,
            "rule": rule(worth, order),
            "worth": worth,
            "order": order,
            "trailer_fraction": world.trailer_fraction,
            "chance_f1": float(np.mean([j / i for i, j in zip(shots[-counts["test"] :], lengths[-counts["test"] :])])),
            "seed": seed,
            "world_seed": world_seed,
            "train_movies": counts["train"],
            "test_movies": counts["test"],
            "shots": [min_shots, max_shots],
            "mean_shots": float(np.mean(shots)),
            "mean_trailer_shots": float(np.mean(lengths)),
            "feature_dim": feature_dim,
            "dtype": np.dtype(dtype).name,
        }
        write_text_atomic(work / CEILING_FILE, dumps_json(ceiling, indent=2) + "\n")
        marker = {"written_by": "ssmp-infer synth", "seed": seed, "worth": worth, "order": order,
                  "trailer_fraction": world.trailer_fraction}
        write_text_atomic(work / MARKER, dumps_json(marker) + "\n")
        # The swap: the old data set (checked above to be synth's own) moves into the work folder, the new
        # one out of it: renames within one folder, with Ctrl-C held off so no mix of the two is left.
        with deferred_interrupts():
            for name in (*SPLITS, CEILING_FILE, MARKER):
                if os.path.lexists(root / name):
                    (root / name).rename(work / f"old.{name}")
                (work / name).rename(root / name)
        completed = True
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the old data set, or an interrupted new one
        if created is not None and not completed:
            shutil.rmtree(created, ignore_errors=True)  # folders this run made, holding nothing else
    return {
        "root": str(root),
        "train": counts["train"],
        "test": counts["test"],
        "seed": seed,
        "world_seed": world_seed,
        "worth": worth,
        "order": order,
        "trailer_fraction": world.trailer_fraction,
        "ceiling_f1": ceiling["f1"],
    }
