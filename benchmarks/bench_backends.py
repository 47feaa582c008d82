"""torch against ONNX Runtime behind the same prepare/step interface: the movie pass, one round's
step, and a whole trailer, on the bundled model (or --model), in one process.

    python benchmarks/bench_backends.py [--model DIR] [--shots 1909,400] [--repeats 5]

Ratios are ONNX Runtime's time over torch's, measured in the same run. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json

import torch

from ssmp_infer import DecodeConfig, Engine
from ssmp_infer.bench import machine, measure, synthetic_movies
from ssmp_infer.data import default_trailer_length, pad_batch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None)
    p.add_argument("--shots", default="1909,400")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    engines = {name: Engine.load(args.model, device="cpu", backend=name) for name in ("torch", "onnxruntime")}
    cfg = engines["torch"].model_config
    rows = []
    for shots in (int(s) for s in args.shots.split(",")):
        movie_np = synthetic_movies(1, shots, cfg.feature_dim)[0]
        length = default_trailer_length(shots)
        movie, valid = pad_batch([movie_np])
        slot_valid = torch.ones(1, length, dtype=torch.bool)
        slot_masked = torch.arange(length)[None] % 2 == 0  # half the slots open, as mid-decoding
        row = {"shots": shots, "length": length}
        for name, engine in engines.items():
            backend = engine.backend
            state = backend.prepare(movie, valid)
            slots = state.movie_unit[:, :length]
            timed = {
                "prepare": lambda: backend.prepare(movie, valid),
                "step": lambda: backend.step(state, slots, slot_masked, slot_valid),
                "trailer_topk": lambda: engine.generate(movie_np, length, DecodeConfig(mode="topk")),
            }
            for what, fn in timed.items():
                fn()  # warm-up
                row[f"{name}_{what}_ms"] = measure(fn, torch.device("cpu"), args.repeats)["median_ms"]
            row[f"{name}_shots"] = engine.generate(movie_np, length, DecodeConfig(mode="topk")).shots
        row["same_trailer"] = row.pop("torch_shots") == row.pop("onnxruntime_shots")
        for what in ("prepare", "step", "trailer_topk"):
            row[f"ort_over_torch_{what}"] = row[f"onnxruntime_{what}_ms"] / row[f"torch_{what}_ms"]
        rows.append(row)
        print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    print(json.dumps({"benchmark": "bench_backends", "machine": machine(torch.device("cpu")),
                      "model": engines["torch"].source, "rows": rows}))


if __name__ == "__main__":
    main()
