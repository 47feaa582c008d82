#!/usr/bin/env python
"""Two more lookalikes of the learning issue's held-out data, each a `synth` world changed in one way
the held-out data may differ (`benchmarks/RESULTS.md`, 2026-12-07, session 15):

    python benchmarks/heldout_lookalikes.py offset SRC DST [--scale 1.0]
    python benchmarks/heldout_lookalikes.py clean --taste 0.3 -- --out DST --movies 150 ...(synth's options)

- `offset`: a copy of data root SRC with every feature, movie and trailer shots alike, moved by one
  fixed random vector of `scale` times the median shot norm. Image embeddings share a large common
  component (two unrelated frames have cosines well above 0); synth's features do not (~0).
- `clean`: `ssmp-infer synth` with the editor's taste temperature (`synth.TASTE`, 0.45) set to `--taste`:
  less label noise, so the world's rule scores higher. The held-out data's own figure (a linear scorer
  reaching F1 0.70) is above what synth's rule reaches at 0.45 (~0.61).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from ssmp_infer import synth
from ssmp_infer.cli import main as cli_main


def offset_copy(src: Path, dst: Path, scale: float, seed: int = 1234) -> float:
    """Write the moved copy; returns the mean cosine between two shots of the first training movie."""
    files = sorted(src.rglob("*.npy"))
    if not files:
        sys.exit(f"{src} holds no .npy files")
    first = np.load(files[0]).astype(np.float32)
    shift = np.random.default_rng(seed).standard_normal(first.shape[1]).astype(np.float32)
    shift /= np.linalg.norm(shift)
    shift *= scale * float(np.median(np.linalg.norm(first, axis=1)))
    for f in files:
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, (np.load(f).astype(np.float32) + shift).astype(np.float16))
    for f in src.glob("*.json"):  # the rule's ceiling: the labels are unchanged
        shutil.copy(f, dst / f.name)
    movie = np.load(sorted((dst / "train" / "movie_shot_embs").glob("*.npy"))[0]).astype(np.float32)
    unit = movie / np.linalg.norm(movie, axis=1, keepdims=True)
    n = len(unit)
    return float(((unit @ unit.T).sum() - n) / (n * n - n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    offset = kinds.add_parser("offset")
    offset.add_argument("src", type=Path)
    offset.add_argument("dst", type=Path)
    offset.add_argument("--scale", type=float, default=1.0)
    clean = kinds.add_parser("clean")
    clean.add_argument("--taste", type=float, required=True)
    clean.add_argument("synth_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.kind == "offset":
        if args.dst.exists():
            sys.exit(f"{args.dst} exists; choose a new directory")
        print(f"mean cosine between two shots of one movie: {offset_copy(args.src, args.dst, args.scale):.3f}")
    else:
        synth.TASTE = args.taste  # read by synth.make_movie at each draw
        sys.argv = ["ssmp-infer", "synth"] + [a for a in args.synth_args if a != "--"]
        cli_main()


if __name__ == "__main__":
    main()
