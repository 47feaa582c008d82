"""A second trailer of a movie already seen: the engine with its kept states against the same engine
without them, on one CMTD-sized synthetic movie, alternating, in one process.

    python benchmarks/state_cache.py [--shots 1909] [--repeats 5] [--mode paper] [--steps T] [--model DIR] [--edits]

Each timed call asks for another variation (seed s, the default length + s - 1), as an editor does; the warm engine
has seen the movie once before the timing starts. With `--edits` each pair is the interactive issue's own
check instead: the default length, another seed, a slot pinned and a shot banned (both taken from a trailer
of the movie), the cold call first. The last line is JSON: the medians and their ratio, the worst and best
pair's ratio, and whether every warm trailer equals its cold one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from ssmp_infer import DecodeConfig, EditorControls, Engine
from ssmp_infer.bench import machine, synthetic_movies
from ssmp_infer.data import default_trailer_length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=1909)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", default="paper", choices=("paper", "topk"))
    parser.add_argument("--steps", type=int, default=None, help="topk: rounds; paper: round cap (default: the decoder's)")
    parser.add_argument("--model", default=None, help="a checkpoint directory of 1024-d features (default: the bundled model)")
    parser.add_argument("--edits", action="store_true", help="each pair pins a slot and bans a shot, cold call first")
    args = parser.parse_args()
    if args.edits and default_trailer_length(args.shots) < 2:
        parser.error(f"--edits pins one shot and bans another: {args.shots} shots give a trailer of one")
    (movie,) = synthetic_movies(1, args.shots, 1024, seed=0)
    warm, cold = Engine.load(args.model, device="cpu"), Engine.load(args.model, device="cpu", state_cache_mb=0)
    warm.generate(movie, decode=DecodeConfig.from_options(args.mode, args.steps))  # the movie seen once
    times = {"warm": [], "cold": []}
    same = True
    for k in range(args.repeats):
        decode = DecodeConfig.from_options(args.mode, args.steps, seed=k + 1)
        if args.edits:  # a slot pinned on one of a trailer's shots, its first shot banned
            shown = warm.generate(movie, decode=DecodeConfig.from_options(args.mode, args.steps, seed=k)).shots
            length = len(shown)
            controls = EditorControls(pins={k % min(5, length): shown[1 + k % (length - 1)]}, bans=frozenset({shown[0]}))
        else:
            length, controls = default_trailer_length(args.shots) + k, None
        got = {}
        order = (("cold", cold), ("warm", warm)) if k % 2 or args.edits else (("warm", warm), ("cold", cold))
        for name, engine in order:
            start = time.perf_counter()
            got[name] = engine.generate(movie, length, decode, controls)
            times[name].append((time.perf_counter() - start) * 1e3)
        same &= got["warm"].shots == got["cold"].shots and got["warm"].confidence == got["cold"].confidence
    warm_ms, cold_ms = statistics.median(times["warm"]), statistics.median(times["cold"])
    pairs = [c / w for c, w in zip(times["cold"], times["warm"])]
    print(f"{args.shots} shots, {args.mode}{', a pin and a ban' if args.edits else ''}: cold {cold_ms:.0f} ms, warm "
          f"{warm_ms:.1f} ms per trailer ({cold_ms / warm_ms:.1f}x; pairs {min(pairs):.1f}x to {max(pairs):.1f}x); "
          f"same trailers: {same}")
    print(json.dumps({"benchmark": "state_cache", "machine": machine(warm.backend.device), "shots": args.shots,
                      "mode": args.mode, "steps": decode.rounds_cap, "repeats": args.repeats, "cold_ms": cold_ms, "warm_ms": warm_ms,
                      "speedup": cold_ms / warm_ms, "worst_pair": min(pairs), "best_pair": max(pairs),
                      "edits": args.edits, "same_trailers": same, "hits": warm.states.stats.hits}))


if __name__ == "__main__":
    main()
