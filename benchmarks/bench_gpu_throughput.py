"""The runtime issue's GPU targets in one process: trailers per second and one movie's latency, with
and without CUDA-graph replay, against a bf16 matrix product measured in the same run (MFU).

    python benchmarks/bench_gpu_throughput.py [--presets demo,paper] [--batch-sizes 1,16,64]
                                              [--precisions bf16,fp32] [--modes topk,paper] [--movies 64]

Movies: CMTD-average synthetic movies (1909 shots, 71-slot trailers). demo is the bundled model;
paper is the paper's size with random weights (timing only). Kernels: Triton when it imports on
CUDA (the fused round), torch otherwise. "mfu": the encoder FLOPs of the trailers that ran
(`ssmp_infer.flops`, the rounds each movie took) per second, over the bf16 product's FLOP/s.

Written for a GPU session and never run on one. On a CPU it runs as a smoke test (`--quick`: small
movies, no graphs, no MFU).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ssmp_infer import DecodeConfig, Engine
from ssmp_infer.backends import TorchBackend
from ssmp_infer.bench import machine, parse_list, synchronize, synthetic_movies
from ssmp_infer.checkpoint import load_checkpoint
from ssmp_infer.config import model_preset
from ssmp_infer.data import default_trailer_length
from ssmp_infer.flops import trailer_flops
from ssmp_infer.model import SSMPEncoder


def matmul_flops_per_s(device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    """A dense bf16 n×n×n product's FLOP/s on random data: the roofline the MFU is read against."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def preset_model(preset: str) -> SSMPEncoder:
    if preset == "demo":
        return load_checkpoint()[0]
    torch.manual_seed(0)
    return SSMPEncoder(model_preset(preset))


def timed_run(engine: Engine, movies, batch: int, decode: DecodeConfig, device: torch.device) -> tuple[float, list]:
    """Seconds for all `movies`, `batch` at a time (each call one padded batch: CMTD-sized movies fit
    Engine's CUDA bucket up to ~130 at once), after one warm-up batch (Triton compiles, graphs capture)."""
    chunks = [movies[k : k + batch] for k in range(0, len(movies), batch)]
    engine.generate_batch(chunks[0], decode=decode)
    synchronize(device)
    start = time.perf_counter()
    trailers = [t for chunk in chunks for t in engine.generate_batch(chunk, decode=decode)]
    synchronize(device)
    return time.perf_counter() - start, trailers


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--presets", default="demo,paper")
    p.add_argument("--batch-sizes", default="1,16,64", help="movies per padded batch (Engine's buckets)")
    p.add_argument("--precisions", default="bf16,fp32")
    p.add_argument("--modes", default="topk,paper")
    p.add_argument("--movies", type=int, default=64, help="movies per timed run (batch 1 times min(8, N))")
    p.add_argument("--shots", type=int, default=1909)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="CPU smoke test: 200 shots, 4 movies")
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    shots, count = (200, 4) if args.quick else (args.shots, args.movies)
    peak = matmul_flops_per_s(device) if cuda else None
    rows = []
    for preset in parse_list(args.presets, "--presets", choices=("demo", "paper")):
        model = preset_model(preset)
        cfg = model.cfg
        movies = synthetic_movies(count, shots, cfg.feature_dim)
        length = default_trailer_length(shots)
        for precision in parse_list(args.precisions, "--precisions", choices=("fp32", "bf16")):
            for graphs in ((False, True) if cuda else (False,)):
                engine = Engine(cfg, TorchBackend(model, device, precision=precision, cuda_graphs=graphs))
                for mode in parse_list(args.modes, "--modes", choices=("topk", "paper")):
                    for batch in parse_list(args.batch_sizes, "--batch-sizes", int):
                        run = movies if batch > 1 else movies[: min(8, count)]
                        seconds, trailers = timed_run(engine, run, batch, DecodeConfig(mode=mode), device)
                        flops = sum(trailer_flops(cfg, shots, length, t.steps, None) for t in trailers)
                        row = {"preset": preset, "precision": precision, "cuda_graphs": graphs, "mode": mode,
                               "batch": batch, "movies": len(run), "shots": shots, "slots": length,
                               "ms_per_trailer": 1e3 * seconds / len(run), "trailers_per_s": len(run) / seconds,
                               "mean_rounds": sum(t.steps for t in trailers) / len(trailers),
                               "mfu": None if peak is None else flops / seconds / peak}
                        rows.append(row)
                        print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                              flush=True)
    print(json.dumps({"benchmark": "bench_gpu_throughput", "machine": machine(device),
                      "bf16_matmul_flop_per_s": peak, "rows": rows}))


if __name__ == "__main__":
    main()
