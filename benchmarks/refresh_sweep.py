"""Approximate reuse for full-attention models: per `refresh_every` k, FLOPs and time per trailer, and
F1 / AA on a data set's test split against k = 1 (exact: the whole encoder every round).

    python benchmarks/refresh_sweep.py --model runs/full --data data/synth [--ks 1,2,3,4,6,0] [--shots 1909]

k > 1 recomputes the movie's states (one full pass, which sees the current slots) every k-th round and
reuses them, stale, in between (only the slot rows are computed); 0 computes them once. The last line
printed is the result as JSON.
"""

from __future__ import annotations

import argparse
import json

from ssmp_infer import DecodeConfig, Engine
from ssmp_infer.bench import machine, measure, synthetic_movies
from ssmp_infer.data import default_trailer_length, load_split
from ssmp_infer.flops import trailer_flops
from ssmp_infer.metrics import score_trailer, summarise


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="a full-attention checkpoint")
    p.add_argument("--data", required=True, help="data root; its test split is scored")
    p.add_argument("--ks", default="1,2,3,4,6,0")
    p.add_argument("--shots", type=int, default=1909, help="shots of the timed movie")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    engine = Engine.load(args.model, device=args.device)
    cfg = engine.model_config
    test = load_split(args.data, "test", cfg.feature_dim)
    movie = synthetic_movies(1, args.shots, cfg.feature_dim)[0]
    length = default_trailer_length(args.shots)
    dev = engine.backend.device
    rows = []
    for k in (int(x) for x in args.ks.split(",")):
        row = {"refresh_every": k, "shots": args.shots, "length": length}
        for mode in ("topk", "paper"):
            decode = DecodeConfig(mode=mode, refresh_every=k)
            trailers = engine.generate_batch([e.movie for e in test], [len(e.targets) for e in test], decode)
            s = summarise([score_trailer(t.shots, [int(g) for g in e.targets]) for t, e in zip(trailers, test)])
            rounds = engine.generate(movie, length, decode).steps
            timing = measure(lambda: engine.generate(movie, length, decode), dev, args.repeats)
            row[mode] = {"f1": s["f1"], "aa": s["aa"], "ld": s["ld"], "rounds": rounds,
                         "gflop_per_trailer": trailer_flops(cfg, args.shots, length, rounds, k) / 1e9,
                         "ms_per_trailer": timing["median_ms"]}
        rows.append(row)
    exact = rows[0]
    print(f"# refresh sweep on {machine(dev)}; model {args.model} ({cfg.movie_attention} attention); "
          f"test split of {args.data} ({len(test)} movies); timed movie {args.shots} shots, J {length}")
    print("k  mode   F1     AA     dF1 vs k=1  GFLOP/trailer  ms/trailer  x time vs k=1")
    for row in rows:
        for mode in ("topk", "paper"):
            r, e = row[mode], exact[mode]
            print(f"{row['refresh_every']:<2} {mode:6} {r['f1']:.3f}  {r['aa']:.3f}  {r['f1'] - e['f1']:+.3f}      "
                  f"{r['gflop_per_trailer']:8.1f}       {r['ms_per_trailer']:8.1f}    {e['ms_per_trailer'] / r['ms_per_trailer']:.2f}")
    print(json.dumps({"benchmark": "refresh_sweep", "machine": machine(dev), "model": args.model,
                      "data": args.data, "test_movies": len(test), "rows": rows}))


if __name__ == "__main__":
    main()
