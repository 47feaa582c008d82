"""Trailer generation end to end on the bundled model: per-mode cost, and batching against one-by-one.

    python benchmarks/bench_decode.py [--movies 4] [--shots 1909] [--device auto]

Ratios are against the one-by-one paper-mode run measured in the same process.
"""

from __future__ import annotations

import argparse

import numpy as np

from ssmp_infer import DecodeConfig, Engine
from ssmp_infer.data import default_trailer_length
from ssmp_infer.synth import World, make_movie

from harness import measure, report


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--movies", type=int, default=4)
    p.add_argument("--shots", type=int, default=1909, help="shots per movie (CMTD average: 1909)")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    engine = Engine.load(device=args.device)
    rng = np.random.default_rng(0)
    world = World()
    movies = [make_movie(rng, world, args.shots)[0] for _ in range(args.movies)]
    device = engine.backend.device

    rows = []
    for mode in ("paper", "topk"):
        config = DecodeConfig(mode=mode)
        one = measure(lambda: [engine.generate(m, decode=config) for m in movies], device, repeats=args.repeats)
        batch = measure(lambda: engine.generate_batch(movies, decode=config), device, repeats=args.repeats)
        rounds = sum(t.steps for t in engine.generate_batch(movies, decode=config)) / len(movies)
        rows.append({"mode": mode, "batched": False, "rounds": rounds, **one})
        rows.append({"mode": mode, "batched": True, "rounds": rounds, **batch})
    base = rows[0]["median_ms"]
    for row in rows:
        row["speedup_vs_paper_one_by_one"] = base / row["median_ms"]
    report("decode", rows, device, movies=args.movies, shots=args.shots, length=default_trailer_length(args.shots))


if __name__ == "__main__":
    main()
