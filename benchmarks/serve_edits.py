"""An editor's session over HTTP: one movie, many edits from N clients, the movie uploaded once
(`POST /v1/movies/{id}/trailers`) against each edit posting the whole movie (`POST /v1/trailers`), in
the same run, on the same server.

    python benchmarks/serve_edits.py [--shots 1909] [--clients 16] [--edits 96] [--mode paper]

One server (`ssmp-infer serve`, local Ray, one replica), started as a user starts it. The edits are
drawn once (a seed, a length, a pin of a slot on a shot, a ban of a few shots) and run in both ways in
turn, by `--clients` threads; every answer is checked against the trailer this process computes for the
same edit, cold (a wrong one is an error, and there must be none). The baseline is a second server
that keeps no movie states (`--state-cache-mb 0`: every edit pays the movie's encoder pass, as before
the state cache). Reported: edits per second, p50/p95 latency, and the server's state-cache hits and
misses for each way. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ssmp_infer import DecodeConfig, Engine
from ssmp_infer.bench import machine, synthetic_movies
from ssmp_infer.client import generate_trailer, movie_trailer, npy_bytes, upload_movie
from ssmp_infer.controls import EditorControls, parse_bans, parse_pins
from ssmp_infer.data import default_trailer_length
from ssmp_infer.serve.launch import ServerProcess
from ssmp_infer.serve.metrics import parse


def draw_edits(count: int, shots: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    base = default_trailer_length(shots)
    edits = []
    for k in range(count):
        length = int(base + rng.integers(-3, 4))
        pinned = int(rng.integers(0, shots))
        banned = sorted({int(i) for i in rng.integers(0, shots, 3)} - {pinned})
        edits.append({"seed": k, "length": length, "pins": [f"{int(rng.integers(0, length))}:{pinned}"],
                      "bans": [",".join(map(str, banned))]})
    return edits


def timed(call, edits: list[dict], clients: int) -> tuple[list, list[float], float]:
    latencies, lock = [], threading.Lock()

    def one(edit):
        start = time.perf_counter()
        answer = call(edit)
        with lock:
            latencies.append(time.perf_counter() - start)
        return answer

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(one, edits))
    return answers, latencies, time.perf_counter() - start


def summary(name, answers, expected, latencies, elapsed, before, after) -> dict:
    wrong = sum(a["shots"] != e for a, e in zip(answers, expected))
    cuts = sorted(latencies)
    return {"way": name, "edits": len(answers), "wrong": wrong, "edits_per_s": len(answers) / elapsed,
            "p50_ms": 1e3 * statistics.median(cuts), "p95_ms": 1e3 * cuts[int(0.95 * (len(cuts) - 1))],
            "cache_hits": after["ssmp_state_cache_hits_total"] - before["ssmp_state_cache_hits_total"],
            "cache_misses": after["ssmp_state_cache_misses_total"] - before["ssmp_state_cache_misses_total"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=1909)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--edits", type=int, default=96)
    parser.add_argument("--mode", default="paper", choices=("paper", "topk"))
    args = parser.parse_args()
    (movie,) = synthetic_movies(1, args.shots, 1024, seed=0)
    edits = draw_edits(args.edits, args.shots)
    engine = Engine.load(device="cpu", state_cache_mb=0)
    expected = [engine.generate(movie, e["length"], DecodeConfig(mode=args.mode, seed=e["seed"]),
                                EditorControls(parse_pins(e["pins"]), parse_bans(e["bans"]))).shots for e in edits]
    body = npy_bytes(movie)
    rows, upload_s = [], None
    flags = ["--num-cpus", 2, "--device", "cpu", "--max-batch-size", 8, "--batch-wait-ms", 100]
    with ServerProcess(flags) as server:
        t = time.perf_counter()
        key = upload_movie(server.url, body)
        upload_s = time.perf_counter() - t
        ways = {
            "uploaded once (/v1/movies/{id}/trailers)": lambda e: movie_trailer(
                server.url, key, e["length"], args.mode, seed=e["seed"], pins=e["pins"], bans=e["bans"], timeout=600),
            "whole movie each time, states kept (/v1/trailers)": lambda e: generate_trailer(
                server.url, body, e["length"], args.mode, seed=e["seed"], pins=e["pins"], bans=e["bans"], timeout=600),
        }
        for name, call in ways.items():
            before = parse(server.metrics_text())
            answers, latencies, elapsed = timed(call, edits, args.clients)
            rows.append(summary(name, answers, expected, latencies, elapsed, before, parse(server.metrics_text())))
    # the server as it was before states were kept: every edit pays the movie's encoder pass
    with ServerProcess(flags + ["--state-cache-mb", 0]) as server:
        before = parse(server.metrics_text())
        answers, latencies, elapsed = timed(lambda e: generate_trailer(
            server.url, body, e["length"], args.mode, seed=e["seed"], pins=e["pins"], bans=e["bans"], timeout=600),
            edits, args.clients)
        rows.append(summary("whole movie each time, no states kept (/v1/trailers, --state-cache-mb 0)", answers, expected,
                            latencies, elapsed, before, parse(server.metrics_text())))
    for r in rows:
        print(f"{r['way']}: {r['edits_per_s']:.2f} edits/s, p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, "
              f"{r['wrong']} wrong, cache {r['cache_hits']:.0f} hits / {r['cache_misses']:.0f} misses")
    print(f"upload: {upload_s:.2f} s; uploaded once against no states kept: "
          f"{rows[0]['edits_per_s'] / rows[2]['edits_per_s']:.2f}x edits per second")
    print(json.dumps({"benchmark": "serve_edits", "machine": machine(engine.backend.device), "shots": args.shots,
                      "mode": args.mode, "clients": args.clients, "upload_s": upload_s, "rows": rows}))


if __name__ == "__main__":
    main()
