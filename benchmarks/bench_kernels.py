"""The decoding round's two Triton kernels against their torch references, in one process.

    python benchmarks/bench_kernels.py [--batch-sizes 1,8,64] [--slots 32,71,128,256] [--shots 512,1909,4096]
                                       [--repeats 10] [--check-trailers N]

For every (B, J, I), D = 1024 (ImageBind), on random unit movies and predictions, half the slots
locked as mid-way through a trailer:

- scoring: `score_slots_ref` (the J×I matrix, then its reductions), the bare `B×J×D · D×I` product
  the kernel fuses (a lower bound), and `score_candidates` (the streamed kernel);
- select + re-mask, paper and topk (a round's worth of locks, J/8): the unfused torch sequence
  (`select_remask_ref` on a prepared `round_scorer`: q, draws, conflicts, commit, the slot-input
  gather; topk's re-scoring passes) against `select_remask_triton` (one launch). The kernel updates
  its state in place, so every timed call first restores it (five small copies, counted against it).

Ratios are the reference's time over the kernel's, measured in the same run. On a machine without
CUDA only the torch timings are taken (the interpreter's speed means nothing): the Triton columns
need a GPU. `--check-trailers N` also decodes N CMTD-sized synthetic movies (I 1909, J 71) with the
bundled model on both paths in both modes and reports whether the shots agree (on the CPU in the
interpreter: set TRITON_INTERPRET=1). The last line printed is the whole result as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

from ssmp_infer.bench import machine, measure, parse_list
from ssmp_infer.data import slot_inputs
from ssmp_infer.kernels import HAS_TRITON, INTERPRETED, round_scorer, score_slots_ref
from ssmp_infer.kernels.select_remask import select_remask_ref

FEATURE_DIM = 1024
TAU = 0.05


def inputs(B: int, J: int, I: int, device: torch.device, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    movie = F.normalize(torch.randn(B, I, FEATURE_DIM, generator=g), dim=-1)
    pred = torch.randn(B, J, FEATURE_DIM, generator=g)
    prior = 0.5 * torch.randn(B, I, generator=g)
    locked = torch.rand(B, J, generator=g) < 0.5
    shots = torch.zeros(B, J, dtype=torch.int64)
    used = torch.zeros(B, I, dtype=torch.bool)
    for b in range(B):  # locked slots sit on distinct shots, which are used
        taken = torch.randperm(I, generator=g)[:J]
        shots[b] = torch.where(locked[b], taken, 0)
        used[b, taken[locked[b]]] = True
    q = torch.rand(B, J, generator=g) * 0.5 * ~locked
    t = dict(pred=pred, movie=movie, valid=torch.ones(B, I, dtype=torch.bool), used=used, prior=prior,
             shots=shots, confidence=locked.float(), locked=locked, q=q)
    t = {k: v.to(device) for k, v in t.items()}
    t["need"] = torch.clamp((~t["locked"]).sum(dim=1), max=max(1, J // 8))  # a topk round's worth of locks
    return t


def time_case(B: int, J: int, I: int, device: torch.device, repeats: int, fused: bool) -> dict:
    t = inputs(B, J, I, device)
    row = {"B": B, "J": J, "I": I, "D": FEATURE_DIM}

    def timed(name, fn):
        fn()  # warm-up (and the kernels' compilation)
        row[f"{name}_ms"] = measure(fn, device, repeats)["median_ms"]

    timed("score_ref", lambda: score_slots_ref(t["pred"], t["movie"], t["valid"], t["used"], TAU, t["prior"]))
    timed("product", lambda: torch.bmm(t["pred"], t["movie"].transpose(1, 2)))
    score = round_scorer(t["pred"], t["movie"], t["valid"], TAU, t["prior"])
    for mode in ("paper", "topk"):
        timed(f"select_{mode}_unfused", lambda mode=mode: select_remask_ref(
            score, t["shots"], t["confidence"], t["locked"], t["used"], t["q"], t["movie"],
            mode=mode, need=t["need"], seed=1, round_index=3))
    if not fused:
        return row
    from ssmp_infer.kernels import score_candidates, select_remask_triton

    timed("score_triton", lambda: score_candidates(t["pred"], t["movie"], t["valid"], t["used"], TAU, t["prior"]))
    c = score_candidates(t["pred"], t["movie"], t["valid"], t["used"], TAU, t["prior"])
    state = {k: t[k].clone() for k in ("shots", "confidence", "locked", "used", "q")}
    slots = slot_inputs(t["movie"], t["shots"])

    def fused_round(mode):
        for k, v in state.items():
            v.copy_(t[k])
        select_remask_triton(c, state["shots"], state["confidence"], state["locked"], state["used"], state["q"], slots,
                             mode=mode, need=t["need"], seed=1, round_index=3)

    restore = lambda: [v.copy_(t[k]) for k, v in state.items()]  # noqa: E731
    timed("restore", restore)
    for mode in ("paper", "topk"):
        timed(f"select_{mode}_triton", lambda mode=mode: fused_round(mode))
        row[f"select_{mode}_speedup"] = row[f"select_{mode}_unfused_ms"] / row[f"select_{mode}_triton_ms"]
    row["score_speedup"] = row["score_ref_ms"] / row["score_triton_ms"]
    row["score_over_product"] = row["score_triton_ms"] / row["product_ms"]
    return row


def check_trailers(count: int, device: torch.device) -> list[dict]:
    """CMTD-sized movies through the bundled model on both paths: do the shots agree?"""
    from ssmp_infer import DecodeConfig, Engine
    from ssmp_infer.bench import synthetic_movies
    from ssmp_infer.data import default_trailer_length

    engine = Engine.load(device=str(device))
    movies = synthetic_movies(count, 1909, engine.feature_dim, seed=1)
    rows = []
    for mode in ("paper", "topk"):
        runs = {}
        for kernels in ("torch", "triton"):
            start = time.perf_counter()
            runs[kernels] = engine.generate_batch(movies, [default_trailer_length(1909)] * count,
                                                  DecodeConfig(mode=mode, kernels=kernels, seed=7))
            runs[f"{kernels}_s"] = time.perf_counter() - start
        same = [a.shots == b.shots for a, b in zip(runs["torch"], runs["triton"])]
        worst = max(max(abs(x - y) for x, y in zip(a.confidence, b.confidence)) for a, b in zip(runs["torch"], runs["triton"]))
        rows.append({"mode": mode, "movies": count, "same_shots": sum(same), "max_confidence_diff": worst,
                     "steps": [t.steps for t in runs["torch"]], "torch_s": runs["torch_s"], "triton_s": runs["triton_s"]})
        print(f"trailers {mode}: {sum(same)}/{count} the same shots; max |confidence diff| {worst:.2e}; "
              f"torch {runs['torch_s']:.1f} s, triton {runs['triton_s']:.1f} s", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default=None, help="default 1,8,32,64 on CUDA (32: the scoring target's); 1,8 on the CPU")
    p.add_argument("--slots", default=None, help="J values; default 32,71,128,256 on CUDA; 32,71,128 on the CPU")
    p.add_argument("--shots", default=None, help="I values; default 512,1909,4096 on CUDA; 512,1909 on the CPU")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per figure (default 20 on CUDA, 3 on the CPU)")
    p.add_argument("--check-trailers", type=int, default=0, help="decode N CMTD-sized movies on both paths")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    fused = gpu and HAS_TRITON and not INTERPRETED
    sizes = {
        "B": parse_list(args.batch_sizes or ("1,8,32,64" if gpu else "1,8"), "--batch-sizes", int),
        "J": parse_list(args.slots or ("32,71,128,256" if gpu else "32,71,128"), "--slots", int),
        "I": parse_list(args.shots or ("512,1909,4096" if gpu else "512,1909"), "--shots", int),
    }
    repeats = args.repeats or (20 if gpu else 3)
    rows = []
    for B in sizes["B"]:
        for J in sizes["J"]:
            for I in sizes["I"]:
                row = time_case(B, J, I, device, repeats, fused)
                rows.append(row)
                print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    trailers = check_trailers(args.check_trailers, device) if args.check_trailers else []
    note = None if fused else (
        "no Triton timings: they need a CUDA device (on the CPU the kernels run only in Triton's interpreter, "
        "whose speed means nothing); the torch columns are the references' timings on this machine")
    targets = None
    if fused:  # the targets (>= 10x, >= 3x, <= 2x), where the grid holds their shapes
        select_at = next((r for r in rows if r["B"] == 64 and r["J"] == 128), {})
        score_at = next((r for r in rows if (r["B"], r["J"], r["I"]) == (32, 128, 4096)), {})
        targets = {"select_paper_speedup_B64_J128": select_at.get("select_paper_speedup"),
                   "select_topk_speedup_B64_J128": select_at.get("select_topk_speedup"),
                   "score_speedup_B32_J128_I4096": score_at.get("score_speedup"),
                   "score_over_product_B32_J128_I4096": score_at.get("score_over_product")}
    print(json.dumps({"benchmark": "bench_kernels", "machine": machine(device), "triton_timed": fused, "note": note,
                      "repeats": repeats, "rows": rows, "targets": targets, "trailers": trailers,
                      "geomean_select_topk_speedup": _geomean([r.get("select_topk_speedup") for r in rows])}))


def _geomean(values) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


if __name__ == "__main__":
    main()
