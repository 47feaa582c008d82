"""Does pinning part of the true trailer help the decoder fill the rest?

For every test movie, pin k of the true trailer's shots in their true slots (k = 0, 10%, 30% of the
slots, chosen at random per movie) and decode the others around them. Score only the slots left open,
twice: in the pinned run, and in the unpinned run at the same slots. The difference is what the
bidirectional context of the pins gives (a slot-by-slot decoder that ignored context would show none;
removing the pinned shots from the choice alone also helps a little, which the `bans only` column
separates: the same shots banned instead of pinned, so they are out of the choice but give no context).

    python benchmarks/pin_sweep.py --data ROOT [--model DIR] [--modes paper,topk] [--fractions 0,0.1,0.3]

Prints a Markdown table; metrics come from ssmp_infer.metrics (the ones `ssmp-infer eval` reports).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from ssmp_infer import DecodeConfig, Engine
from ssmp_infer.controls import EditorControls
from ssmp_infer.data import load_split
from ssmp_infer.metrics import score_trailer, summarise


def open_slot_scores(pred: list[int], truth: list[int], open_slots: list[int], tolerance: int):
    return score_trailer([pred[s] for s in open_slots], [truth[s] for s in open_slots], tolerance)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default=None)
    ap.add_argument("--modes", default="paper,topk")
    ap.add_argument("--fractions", default="0,0.1,0.3")
    ap.add_argument("--tolerance", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="which slots are pinned")
    args = ap.parse_args()

    engine = Engine.load(args.model, device="cpu")
    examples = load_split(args.data, "test", engine.feature_dim)
    fractions = [float(f) for f in args.fractions.split(",")]
    start = time.time()
    print(f"{len(examples)} test movies of {args.data}; model {engine.source}; {platform.processor() or platform.machine()}")
    print()
    print("| mode | pinned | open slots | F1 open, unpinned run | F1 open, pinned | F1 open, same shots banned | "
          "AA open, unpinned run | AA open, pinned |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        decode = DecodeConfig(mode=mode, seed=0)
        free = engine.generate_batch([e.movie for e in examples], [len(e.targets) for e in examples], decode)
        for fraction in fractions:
            rng = np.random.default_rng(args.seed)
            unpinned, pinned, banned_only, slots_open = [], [], [], 0
            for e, free_trailer in zip(examples, free):
                truth = [int(g) for g in e.targets]
                J = len(truth)
                chosen = sorted(rng.choice(J, size=round(fraction * J), replace=False).tolist())
                open_slots = [s for s in range(J) if s not in chosen]
                slots_open += len(open_slots)
                unpinned.append(open_slot_scores(free_trailer.shots, truth, open_slots, args.tolerance))
                if not chosen:
                    pinned.append(unpinned[-1])
                    banned_only.append(unpinned[-1])
                    continue
                pins = {s: truth[s] for s in chosen}
                with_pins = engine.generate(e.movie, J, decode, EditorControls(pins=pins))
                pinned.append(open_slot_scores(with_pins.shots, truth, open_slots, args.tolerance))
                with_bans = engine.generate(e.movie, J, decode, EditorControls(bans=frozenset(pins.values())))
                # the banned run fills all J slots; score the same open slots
                banned_only.append(open_slot_scores(with_bans.shots, truth, open_slots, args.tolerance))
            u, p, b = summarise(unpinned), summarise(pinned), summarise(banned_only)
            print(f"| {mode} | {fraction:.0%} | {slots_open} | {u['f1']:.3f} | {p['f1']:.3f} | {b['f1']:.3f} | "
                  f"{u['aa']:.3f} | {p['aa']:.3f} |", flush=True)
    print(f"\n{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
