"""Trailers of fixed movies, decoded in every mode with editor controls, candidates and batches, kept in
tests/data/golden_trailers.json: a rewrite of the decoder must give them bit for bit.

    python tests/golden_trailers.py      # writes the file (only on purpose: it records what is right)

The movies: the example movie's first 160 shots, and two seeded random ones of 70 and 110 shots, so a
batch holds movies of different lengths whose trailers finish in different rounds (rows leave the batch).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "data" / "golden_trailers.json"
BACKENDS = ("torch", "onnxruntime")  # the backends that run here; each has its own trailers (its own arithmetic)

# name -> (decode options, lengths for the three movies, controls per movie or None, candidates or 0)
CASES = {
    "paper": (dict(mode="paper"), [6, 3, 5], None, 0),
    "paper, 3 rounds then the greedy fill": (dict(mode="paper", max_rounds=3, seed=4), [9, 4, 6], None, 0),
    "paper, refresh every 2 rounds": (dict(mode="paper", refresh_every=2, seed=1), [6, 3, 5], None, 0),
    "topk, 4 rounds": (dict(mode="topk", steps=4), [7, 2, 5], None, 0),
    "topk, 12 rounds": (dict(mode="topk", steps=12, seed=2), [6, 3, 5], None, 0),
    "greedy": (dict(mode="greedy"), [5, 3, 4], None, 0),
    "paper, pins and bans": (dict(mode="paper", seed=3), [6, 3, 5],
                             [dict(pins={0: 12, 4: 40}, bans=[1, 2, 3]), None, dict(bans=list(range(0, 60, 2)))], 0),
    "topk, pins and bans": (dict(mode="topk", steps=6), [6, 3, 5],
                            [dict(pins={2: 100}, bans=[5, 6]), dict(pins={0: 9}), None], 0),
    "greedy, pins": (dict(mode="greedy", seed=5), [6, 3, 5], [None, dict(pins={1: 30, 2: 31}), None], 0),
    "paper, 4 candidates": (dict(mode="paper", seed=7), [6], None, 4),
    "paper, 3 candidates with a pin": (dict(mode="paper", seed=0), [5], [dict(pins={3: 77}, bans=[10])], 3),
}


def movies() -> list[np.ndarray]:
    example = np.load(ROOT / "examples" / "movie.npy").astype(np.float32)[:160]
    rng = np.random.default_rng(2026)
    return [example] + [rng.standard_normal((n, example.shape[1])).astype(np.float32) for n in (70, 110)]


def decode_all(engine, names=None, kernels: str = "auto") -> dict[str, list[dict]]:
    """The trailers of every case (or those `names`): shots, confidences (as float32 values) and steps."""
    from ssmp_infer.config import DecodeConfig
    from ssmp_infer.controls import EditorControls

    films = movies()
    out = {}
    for name in names or CASES:
        options, lengths, controls, candidates = CASES[name]
        decode = DecodeConfig(**options, kernels=kernels)
        controls = [EditorControls(pins=c.get("pins", {}), bans=frozenset(c.get("bans", ()))) if c else None
                    for c in (controls or [None] * len(lengths))]
        if candidates:
            trailers = engine.candidates(films[0], candidates, lengths[0], decode, controls[0])
        else:
            trailers = engine.generate_batch(films[:len(lengths)], lengths, decode, controls)
        out[name] = [dict(shots=t.shots, confidence=[float(np.float32(c)) for c in t.confidence], steps=t.steps,
                          seed=t.seed) for t in trailers]
    return out


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from ssmp_infer.engine import Engine

    golden = {backend: decode_all(Engine.load(device="cpu", backend=backend)) for backend in BACKENDS}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
