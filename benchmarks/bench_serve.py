"""A load test of `ssmp-infer serve` on the loopback: N concurrent clients for a fixed time, good and bad
requests mixed, dynamic batching on against `--max-batch-size 1` in the same run.

    python benchmarks/bench_serve.py [--clients 16] [--duration 30] [--shots 300] [--bad-fraction 0.1]
                                     [--max-batch-size 8] [--batch-wait-ms 100] [--pool 8]

Each setting starts its own server exactly as a user would (`ssmp-infer serve`, local Ray), warms it with
one request, runs the clients until `--duration` seconds have passed (or `--max-requests` were sent), reads
its /metrics and stops it with SIGTERM. Good requests draw from a pool of synthetic movies whose trailers
are computed in this process first; an answer that differs, or any refusal of a good request, counts as a
good-request error (there must be none). Bad requests (NaN, a wrong feature size, garbage bytes, an
oversized length) must each get a 4xx with one sentence. Reported: good trailers per second, p50/p99
latency of good requests, the batch sizes the server ran, and the ratio of batched to unbatched
throughput. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import threading
import time

import numpy as np

from ssmp_infer import DecodeConfig, Engine
from ssmp_infer.bench import synthetic_movies
from ssmp_infer.client import ServerError, generate_trailer, npy_bytes
from ssmp_infer.serve.launch import ServerProcess
from ssmp_infer.serve.metrics import BATCH_BUCKETS, parse


def bad_requests(shots: int, feature_dim: int) -> list[tuple[str, bytes, int | None]]:
    """(kind, body, length): each must be refused with a 4xx."""
    rng = np.random.default_rng(1)
    nan = rng.standard_normal((shots, feature_dim)).astype(np.float32)
    nan[shots // 2, 3] = np.nan
    return [
        ("nan", npy_bytes(nan), None),
        ("wrong_dims", npy_bytes(rng.standard_normal((shots, feature_dim // 2)).astype(np.float32)), None),
        ("garbage", rng.bytes(4096), None),
        ("oversized_length", npy_bytes(rng.standard_normal((shots, feature_dim)).astype(np.float32)), shots + 1),
    ]


def load(url: str, movies: list[bytes], expected: list[list[int]], bad: list, args) -> dict:
    """Run the clients against one server; every outcome is counted, nothing is dropped."""
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"good": 0, "good_errors": 0, "bad": 0, "bad_not_refused": 0}
    examples: list[str] = []
    sent = [0]
    deadline = time.monotonic() + args.duration

    def client(c: int) -> None:
        rng = np.random.default_rng(1000 + c)
        while time.monotonic() < deadline:
            with lock:
                if sent[0] >= args.max_requests:
                    return
                sent[0] += 1
            if rng.random() < args.bad_fraction:
                kind, body, length = bad[int(rng.integers(len(bad)))]
                try:
                    generate_trailer(url, body, length=length)
                    refused = False
                except ServerError as e:
                    refused = 400 <= e.status < 500 and "\n" not in str(e)
                with lock:
                    counts["bad"] += 1
                    counts["bad_not_refused"] += not refused
                continue
            k = int(rng.integers(len(movies)))
            start = time.perf_counter()
            try:
                ok = generate_trailer(url, movies[k], seed=args.seed)["shots"] == expected[k]
                why = "a different trailer"
            except (ServerError, OSError) as e:
                ok, why = False, str(e)
            elapsed = time.perf_counter() - start
            with lock:
                counts["good"] += 1
                if ok:
                    latencies.append(elapsed)
                else:
                    counts["good_errors"] += 1
                    examples.append(why)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
    return {**counts, "wall_s": round(wall, 2), "trailers_per_s": round(len(latencies) / wall, 3),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "good_error_examples": examples[:3]}


def batch_sizes(metrics: dict, before: dict) -> dict:
    """Batches per size bucket, the mean batch size and the largest bucket reached, from /metrics."""
    cum = [metrics[f'ssmp_batch_size_bucket{{le="{b}"}}'] - before.get(f'ssmp_batch_size_bucket{{le="{b}"}}', 0)
           for b in BATCH_BUCKETS]
    per = {f"<={b}": int(n - (cum[i - 1] if i else 0)) for i, (b, n) in enumerate(zip(BATCH_BUCKETS, cum)) if n - (cum[i - 1] if i else 0)}
    count = metrics["ssmp_batch_size_count"] - before.get("ssmp_batch_size_count", 0)
    total = metrics["ssmp_batch_size_sum"] - before.get("ssmp_batch_size_sum", 0)
    return {"batches": int(count), "mean_batch": round(total / count, 2) if count else 0.0, "by_size": per}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load per setting")
    p.add_argument("--max-requests", type=int, default=100_000, help="a bound on requests per setting")
    p.add_argument("--shots", type=int, default=300, help="shots per synthetic movie")
    p.add_argument("--pool", type=int, default=8, help="distinct good movies")
    p.add_argument("--bad-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="the decoding seed of every good request")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--batch-wait-ms", type=float, default=100.0, help="the server's default")
    p.add_argument("--replicas", type=int, default=1)
    args = p.parse_args()

    engine = Engine.load(device="cpu")
    features = synthetic_movies(args.pool, args.shots, engine.feature_dim, seed=7)
    decode = DecodeConfig(seed=args.seed)
    expected = [t.shots for t in engine.generate_batch(features, None, decode)]  # each as it would be alone
    movies = [npy_bytes(f) for f in features]
    bad = bad_requests(args.shots, engine.feature_dim)
    del engine
    settings = {"batched": args.max_batch_size, "unbatched": 1}
    rows = {}
    for name, size in settings.items():
        flags = ["--device", "cpu", "--replicas", args.replicas, "--max-batch-size", size,
                 "--batch-wait-ms", args.batch_wait_ms, "--max-queue", max(64, 2 * args.clients)]
        with ServerProcess(flags) as server:
            generate_trailer(server.url, movies[0], seed=args.seed)  # warm-up: first batch pays one-off costs
            before = parse(server.metrics_text())
            row = load(server.url, movies, expected, bad, args)
            row.update(batch_sizes(parse(server.metrics_text()), before))
            row["healthy_after"] = server.healthy()
        row["max_batch_size"] = size
        rows[name] = row
        print(f"{name:9s} (max batch {size}): {row['trailers_per_s']} trailers/s, p50 {row['p50_ms']} ms, "
              f"p99 {row['p99_ms']} ms; {row['good']} good ({row['good_errors']} errors), {row['bad']} bad "
              f"({row['bad_not_refused']} not refused); batches {row['by_size']} (mean {row['mean_batch']})",
              flush=True)
    base = rows["unbatched"]["trailers_per_s"]
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "options": vars(args), "settings": rows,
        "throughput_ratio_batched_over_unbatched": round(rows["batched"]["trailers_per_s"] / base, 2) if base else None,
        "good_request_errors": sum(r["good_errors"] for r in rows.values()),
        "bad_requests_not_refused": sum(r["bad_not_refused"] for r in rows.values()),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
