#!/usr/bin/env python
"""More lookalikes of the learning issue's held-out data, each a `synth` world changed in one way the
held-out data may differ, and the issue's kind of reference scorer to place a world beside it
(`benchmarks/RESULTS.md`, 2026-12-07, sessions 15 to 18):

    python benchmarks/heldout_lookalikes.py offset SRC DST [--scale 1.0]
    python benchmarks/heldout_lookalikes.py clean --taste 0.3 -- --out DST --movies 150 ...(synth's options)
    python benchmarks/heldout_lookalikes.py weaken SRC DST [--keep 0.25]
    python benchmarks/heldout_lookalikes.py film-look SRC DST [--scale 1.0]
    python benchmarks/heldout_lookalikes.py order --noise 100 -- --out DST --movies 150 ...(synth's options)
    python benchmarks/heldout_lookalikes.py rank --noise 0.5 -- --out DST --movies 150 ...(synth's options)
    python benchmarks/heldout_lookalikes.py shuffled -- --out DST --movies 150 ...(synth's options)
    python benchmarks/heldout_lookalikes.py openings --share 0.6 -- --out DST --movies 150 ...(synth's options)
    python benchmarks/heldout_lookalikes.py cards SRC DST [--share 0.2] [--spread 0.5]
    python benchmarks/heldout_lookalikes.py setups --repeat 0.4 -- --out DST --movies 150 ...(synth's options)
    python benchmarks/heldout_lookalikes.py reference ROOT [--open-share S]

- `offset`: a copy of data root SRC with every feature, movie and trailer shots alike, moved by one
  fixed random vector of `scale` times the median shot norm. Image embeddings share a large common
  component (two unrelated frames have cosines well above 0); synth's features do not (~0).
- `clean`: `ssmp-infer synth` with the editor's taste temperature (`synth.TASTE`, 0.45) set to `--taste`:
  less label noise, so the world's rule scores higher. The held-out data's own figure (a linear scorer
  reaching F1 0.70) is above what synth's rule reaches at 0.45 (~0.61).
- `weaken`: a copy of direction world SRC whose features keep only `keep` of their component along the
  world's hidden direction (rebuilt from `ceiling.json`'s seed), trailer shots alike: the same labels,
  and the reference scorer below ranks the same way, but a learner sees the direction less.
- `film-look`: as `offset`, but each movie (its trailer shots alike) moved by a vector of its own: a
  film's look, shared by its shots and no other film's, which a model could learn to recognise films by.
- `order`: `ssmp-infer synth` with the arc order's noise (`synth.ORDER_NOISE`, 0.35) set to `--noise`:
  the scenes after the opening act in an order of little or no rule (the opening act and each scene's own
  shots stay in movie order).
- `rank`: `ssmp-infer synth` with each trailer ordered by the rule's own worthiness, rising, plus normal
  noise of sd `--noise` (worthiness is standardised): an order that builds up, set by what selects the
  shots rather than by where they are.
- `shuffled`: `ssmp-infer synth` with every trailer in a random order, the opening act too: which shots
  a trailer holds follows the world's rule, where they stand follows nothing a model can read, so the
  slots' targets can only be memorised (the rule's own guess, which `ceiling.json` scores, is in movie
  order).
- `openings`: `ssmp-infer synth` with a direction world's share of scene openings in worthiness
  (`synth.OPEN_SHARE`, drawn in 0.15-0.35) set to `--share`: a rule that rests mostly on where scenes
  change, which a model reads only from neighbouring shots, and less on the hidden direction.
- `cards`: a copy of data root SRC whose trailers hold shots their movies do not: title cards, about
  `share` of each trailer's length more, inserted at random places. A card is one look shared by every
  film's cards (a random direction at the median shot norm) plus isotropic noise of `spread` of that norm
  (its own text). Real trailers hold such shots, and eval's labels (each trailer shot's most similar
  movie shot) then name a movie shot the rule never chose, often the same one for several cards.
- `setups`: `ssmp-infer synth` with the chance that a shot returns to the camera set-up of the shot two
  before it (`synth.REPEAT_SETUP`, 0.1) set to `--repeat`: dialogue cut as shot / reverse shot, as films
  are, so many shots have a near-twin in their scene that the editor did not take (one per set-up), and
  eval's labels now and then name the twin.
- `reference`: the held-out figure's kind of scorer on a direction world's test split, to place a world
  beside that 0.70. It knows the world's hidden direction (it rebuilds the world from `ceiling.json`'s
  seed) and guesses scene openings from the features: a shot unlike the two before it and like the next.
  Each movie's top-J shots by sqrt(1 - s)·z(feature · direction) + sqrt(s)·z(opening), with s the
  world's share of openings (`--open-share` for an `openings` world, whose share its seed does not
  give); F1 against the labels eval uses.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np

from ssmp_infer import synth
from ssmp_infer.cli import main as cli_main
from ssmp_infer.data import MOVIE_DIR, TRAILER_DIR, load_split, unit_rows
from ssmp_infer.metrics import score_trailer


def transformed_copy(src: Path, dst: Path, transform) -> None:
    """Copy data root SRC to DST with every feature array (movie and trailer shots alike) passed through
    `transform` ((n, D) float32, the file's stem and whether it is a trailer's -> (n', D) float32; a movie's
    file and its trailer's share the stem), stored as float16 as synth stores them. The .json files (the
    rule's ceiling) are copied as they are: a change to trailer shots (`cards`) leaves the ceiling scored
    against the labels of before."""
    for f in sorted(src.rglob("*.npy")):
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        trailer = f.parent.name == TRAILER_DIR
        np.save(out, transform(np.load(f).astype(np.float32), f.stem, trailer).astype(np.float16))
    for f in src.glob("*.json"):
        shutil.copy(f, dst / f.name)


def feature_scale(src: Path) -> tuple[int, float]:
    """(feature width, median shot norm) of data root SRC, read from its first feature file."""
    files = sorted(src.rglob("*.npy"))
    if not files:
        sys.exit(f"{src} holds no .npy files")
    first = np.load(files[0]).astype(np.float32)
    return first.shape[1], float(np.median(np.linalg.norm(first, axis=1)))


def offset_copy(src: Path, dst: Path, scale: float, seed: int = 1234, per_film: bool = False) -> float:
    """Write the moved copy (one vector, or with `per_film` one per movie, drawn from its files' stem);
    returns the mean cosine between two shots of the first training movie."""
    width, norm = feature_scale(src)
    length = scale * norm

    # The two scale their draws in a different order, float32 rounding included: each rebuilds the world
    # it made first (Fo in session 15, M in 16) byte for byte.
    if per_film:
        def film_look(name: str) -> np.ndarray:
            v = np.random.default_rng(zlib.crc32(name.encode())).standard_normal(width).astype(np.float32)
            v *= length / np.linalg.norm(v)
            return v

        transformed_copy(src, dst, lambda x, name, trailer: x + film_look(name))
    else:
        shift = np.random.default_rng(seed).standard_normal(width).astype(np.float32)
        shift /= np.linalg.norm(shift)
        shift *= length
        transformed_copy(src, dst, lambda x, name, trailer: x + shift)
    unit = unit_rows(np.load(sorted((dst / "train" / MOVIE_DIR).glob("*.npy"))[0]).astype(np.float32))
    n = len(unit)
    return float(((unit @ unit.T).sum() - n) / (n * n - n))


def weaken_copy(src: Path, dst: Path, keep: float) -> None:
    """Write the copy whose features keep `keep` of their component along the world's hidden direction."""
    hidden = world_of(src).hidden.astype(np.float32)
    transformed_copy(src, dst, lambda x, name, trailer: x - (1 - keep) * np.outer(x @ hidden, hidden))


def order_by_worth(noise: float) -> None:
    """Make synth order each trailer by the rule's worthiness, rising, plus N(0, noise²) (the `rank` world).

    `make_movie` selects twice (the editor's sample, then the rule's noise-free top J, by worthiness
    itself) before it orders either; the order reads the worthiness the last selection was given."""
    select, seen = synth.select, {}

    def remembering(keys, scene, setup, length):
        seen["worth"] = keys
        return select(keys, scene, setup, length)

    def by_worth(chosen, x, scene, intensity, opening, draw):
        key = seen["worth"][chosen] + (noise * draw(len(chosen)) if draw is not None else 0.0)
        return np.asarray(chosen)[np.argsort(key, kind="stable")].astype(np.int64)

    synth.select, synth.arrange = remembering, by_worth


def shuffled_order() -> None:
    """Make synth put each trailer's shots in a random order (the `shuffled` world): the shots in movie order,
    permuted by the ranks of one normal draw a shot; the rule's guess (no draws) stays in movie order."""

    def shuffled(chosen, x, scene, intensity, opening, draw):
        chosen = np.sort(chosen)
        return (chosen if draw is None else chosen[np.argsort(draw(len(chosen)), kind="stable")]).astype(np.int64)

    synth.arrange = shuffled


def cards_copy(src: Path, dst: Path, share: float, spread: float, seed: int = 4321) -> int:
    """Write the copy whose trailers hold title cards (module docstring); returns how many were inserted."""
    width, norm = feature_scale(src)
    look = np.random.default_rng(seed).standard_normal(width)
    look *= norm / np.linalg.norm(look)
    inserted = 0

    def with_cards(x: np.ndarray, name: str) -> np.ndarray:
        nonlocal inserted
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        count = int(rng.binomial(len(x), share))
        noise = rng.standard_normal((count, x.shape[1]))
        cards = look + spread * norm * noise / np.linalg.norm(noise, axis=1, keepdims=True)
        places = np.sort(rng.integers(0, len(x) + 1, size=count))  # before which trailer shot each goes
        inserted += count
        return np.insert(x, places, cards.astype(np.float32), axis=0)

    transformed_copy(src, dst, lambda x, name, trailer: with_cards(x, name) if trailer else x)
    return inserted


def run_synth(synth_args: list[str]) -> None:
    sys.argv = ["ssmp-infer", "synth"] + [a for a in synth_args if a != "--"]
    cli_main()


def world_of(root: Path) -> synth.World:
    """The direction world a synth data root was drawn from."""
    if not (root / synth.CEILING_FILE).is_file():
        sys.exit(f"{root} has no {synth.CEILING_FILE}: not a synth world, whose hidden direction this needs")
    meta = json.loads((root / synth.CEILING_FILE).read_text())
    return synth.World(meta["world_seed"], meta["feature_dim"], worth="direction", order=meta["order"],
                       trailer_fraction=meta["trailer_fraction"])


def reference_f1(root: Path, open_share: float | None = None) -> float:
    """Mean test F1 of the reference scorer (module docstring) on a synth direction world; `open_share`: the
    world's share of scene openings where its seed does not give it (an `openings` world)."""
    world = world_of(root)
    if open_share is not None:
        world.open_share = open_share
    scores = []
    for example in load_split(root, "test"):
        x = example.movie.astype(np.float64)
        unit = np.pad(unit_rows(x), ((2, 2), (0, 0)), mode="edge")
        n = len(x)
        before, after = unit[0:n] + unit[1:n + 1], unit[2:n + 2] + unit[3:n + 3]  # 2 shots before; this and the next
        change = -(before * after).sum(1) / np.linalg.norm(before, axis=1) / np.linalg.norm(after, axis=1)
        change[0] = -1.0  # the first shot has nothing before it
        worth = (np.sqrt(1 - world.open_share) * synth._standardise(x @ world.hidden)
                 + np.sqrt(world.open_share) * synth._standardise(change))
        truth = example.targets.tolist()
        scores.append(score_trailer(np.argsort(-worth)[:len(truth)].tolist(), truth).f1)
    return float(np.mean(scores))


def share(text: str) -> float:
    """argparse's type for a share (of scene openings, of repeated set-ups, of title cards): a number in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a share is a number in [0, 1], got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kinds = parser.add_subparsers(dest="kind", required=True)

    def copying(name: str, run, **options) -> None:  # a copy of data root SRC made by `run(args)`: options' (type, default)
        kind = kinds.add_parser(name)
        kind.add_argument("src", type=Path)
        kind.add_argument("dst", type=Path)
        for option, (kind_of, default) in options.items():
            kind.add_argument(f"--{option}", type=kind_of, default=default)
        kind.set_defaults(run=run)

    def drawing(name: str, change, option: str | None = None, kind_of=float) -> None:
        """A synth world drawn after `change(value of --option)`, or `change()` for a kind with no option."""
        kind = kinds.add_parser(name)
        if option is not None:
            kind.add_argument(f"--{option}", type=kind_of, required=True)
        kind.add_argument("synth_args", nargs=argparse.REMAINDER)

        def run(args) -> None:
            change(*([getattr(args, option)] if option is not None else []))
            run_synth(args.synth_args)

        kind.set_defaults(run=run)

    def moved(args) -> None:
        cosine = offset_copy(args.src, args.dst, args.scale, per_film=args.kind == "film-look")
        print(f"mean cosine between two shots of one movie: {cosine:.3f}")

    copying("offset", moved, scale=(float, 1.0))
    copying("weaken", lambda args: weaken_copy(args.src, args.dst, args.keep), keep=(float, 0.25))
    copying("film-look", moved, scale=(float, 1.0))
    copying("cards", lambda args: print(f"title cards inserted: {cards_copy(args.src, args.dst, args.share, args.spread)}"),
            share=(share, 0.2), spread=(float, 0.5))
    # synth reads TASTE, REPEAT_SETUP (make_movie) and ORDER_NOISE (arrange) at each draw, OPEN_SHARE when the
    # world is drawn (one draw of (s, s), as before)
    drawing("clean", lambda v: setattr(synth, "TASTE", v), "taste")
    drawing("order", lambda v: setattr(synth, "ORDER_NOISE", v), "noise")
    drawing("rank", order_by_worth, "noise")
    drawing("shuffled", shuffled_order)
    drawing("openings", lambda v: setattr(synth, "OPEN_SHARE", (v, v)), "share", share)
    drawing("setups", lambda v: setattr(synth, "REPEAT_SETUP", v), "repeat", share)
    reference = kinds.add_parser("reference")
    reference.add_argument("root", type=Path)
    reference.add_argument("--open-share", type=share, default=None)
    reference.set_defaults(run=lambda args: print(f"reference scorer, test F1: {reference_f1(args.root, args.open_share):.3f}"))
    args = parser.parse_args()
    source = getattr(args, "src", None) or getattr(args, "root", None)  # the data root a command reads
    if source is not None and not source.is_dir():
        sys.exit(f"{source} is not a directory; expected a data root")
    if getattr(args, "dst", None) is not None and args.dst.exists():  # every command that copies a data root
        sys.exit(f"{args.dst} exists; choose a new directory")
    args.run(args)


if __name__ == "__main__":
    main()
