"""The plain baseline on its own: one movie, the plain top-k loop against the engine's topk mode.

    python benchmarks/plain_loop.py [--shots 1909] [--length J] [--device auto] [--repeats 3]

The loop itself is `ssmp_infer.bench.plain_generate` (fp32, a full encoder pass over [movie ; slots]
every round, the whole J×I score matrix, a Python loop for MaskGIT top-k locking, one movie at a
time): it lives in the package because `ssmp-infer bench` times it, installed or not. This script
prints both trailers' times, whether their shots agree, and the result as a JSON last line.
"""

from __future__ import annotations

import argparse
import json

from ssmp_infer import DecodeConfig, Engine
from ssmp_infer.bench import PLAIN_STEPS, machine, measure, plain_generate, synthetic_movies
from ssmp_infer.data import default_trailer_length


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shots", type=int, default=1909, help="shots in the synthetic movie (CMTD average: 1909)")
    p.add_argument("--length", type=int, default=None, help="trailer slots (default: 3.7%% of the shots)")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    engine = Engine.load(device=args.device)
    device, model = engine.backend.device, engine.backend.model
    movie = synthetic_movies(1, args.shots, engine.feature_dim)[0]
    length = args.length or default_trailer_length(args.shots)
    decode = DecodeConfig(mode="topk", steps=PLAIN_STEPS)

    plain_shots, passes = plain_generate(model, movie, length)  # warm-up, and the trailer
    trailer = engine.generate(movie, length, decode)
    plain = measure(lambda: plain_generate(model, movie, length), device, args.repeats)
    fast = measure(lambda: engine.generate(movie, length, decode), device, args.repeats)
    result = {
        "benchmark": "plain_loop",
        "machine": machine(device),
        "shapes": {"shots": args.shots, "length": length, "rounds": PLAIN_STEPS},
        "plain": {**plain, "passes": passes},
        "engine": {**fast, "passes": trailer.steps},
        "speedup": plain["median_ms"] / fast["median_ms"],
        "same_shots": plain_shots == trailer.shots,
    }
    print(f"# plain loop vs engine topk, {args.shots} shots, {length} slots, on {result['machine']}")
    print(f"plain  {plain['median_ms']:.1f} ms ({passes} passes)")
    print(f"engine {fast['median_ms']:.1f} ms ({trailer.steps} passes), {result['speedup']:.2f}x, "
          f"same shots: {result['same_shots']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
