"""The engine against itself at an older revision, each with its own bundled model, in one run.

    python benchmarks/vs_revision.py [--rev 14e8ee1] [--shots 1909] [--modes topk,paper] [--repeats 5] [--rounds 2]

`ssmp-infer bench` compares the engine with itself with reuse switched off (`--refresh-every 1`, its
"recompute" baseline). This script times the engine as it was: the code of `--rev` (default 14e8ee1, the foundation the runtime issue
measured: one full encoder pass per round, its own bundled model of the same size) against the working
tree, on the same random movies, through `Engine.load()` and `Engine.generate` with the defaults of each,
as a user would call them. Each side runs in its own process (two versions of one package cannot share
one); the processes alternate `--rounds` times so that a machine that slows down part way hits both
sides alike, and the medians are over every timed trailer of a side. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs inside each side's process; uses only what every revision's API has (Engine.load, generate,
# DecodeConfig(mode=...), feature_dim).
WORKER = r"""
import json, sys, time
import numpy as np
import ssmp_infer
from ssmp_infer import DecodeConfig, Engine
mode, shots, repeats, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
engine = Engine.load()
rng = np.random.default_rng(seed)
movies = [rng.standard_normal((shots, engine.feature_dim)).astype(np.float32) for _ in range(repeats + 1)]
decode = DecodeConfig(mode=mode)
engine.generate(movies[0], decode=decode)  # warm-up
times, rounds = [], []
for movie in movies[1:]:
    start = time.perf_counter()
    trailer = engine.generate(movie, decode=decode)
    times.append((time.perf_counter() - start) * 1e3)
    rounds.append(trailer.steps)
print(json.dumps({"times_ms": times, "rounds": rounds, "slots": len(trailer.shots), "package": ssmp_infer.__file__}))
"""


def checkout(rev: str, into: Path) -> Path:
    """`rev`'s package, laid out as installed (kernels/ and export/ inside ssmp_infer/, as setup.py maps them)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    for sub in ("kernels", "export"):
        if (into / sub).is_dir() and not (into / "ssmp_infer" / sub).exists():
            shutil.copytree(into / sub, into / "ssmp_infer" / sub)
    return into


def run_side(pythonpath: str | None, mode: str, shots: int, repeats: int, seed: int) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, "-c", WORKER, mode, str(shots), str(repeats), str(seed)],
                         env=env, check=True, capture_output=True, text=True, cwd=tempfile.gettempdir())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rev", default="14e8ee1", help="the older revision (default: the foundation, before the runtime)")
    p.add_argument("--shots", type=int, default=1909, help="shots per random movie (CMTD average: 1909)")
    p.add_argument("--modes", default="topk,paper")
    p.add_argument("--repeats", type=int, default=5, help="timed trailers per process")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the two sides")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()

    sys.path.insert(0, str(REPO))
    import torch

    from ssmp_infer.bench import machine

    result = {"benchmark": "vs_revision", "rev": args.rev, "machine": machine(torch.device("cpu")),
              "shapes": {"shots": args.shots}, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        old_root = checkout(args.rev, Path(tmp))
        for mode in args.modes.split(","):
            sides = {"old": [], "new": []}
            for r in range(args.rounds):
                for name, path in (("old", str(old_root)), ("new", None)):
                    side = run_side(path, mode, args.shots, args.repeats, args.seed + r)
                    sides[name].append(side)
            row = {}
            for name, runs in sides.items():
                times = [t for run in runs for t in run["times_ms"]]
                row[name] = {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "trailers": len(times),
                             "rounds": statistics.median([x for run in runs for x in run["rounds"]]), "slots": runs[0]["slots"],
                             "package": runs[0]["package"]}
            row["speedup"] = row["old"]["median_ms"] / row["new"]["median_ms"]
            result["modes"][mode] = row
            print(f"{mode}: {args.rev} {row['old']['median_ms']:.1f} ms, now {row['new']['median_ms']:.1f} ms per trailer "
                  f"({row['new']['slots']} slots): {row['speedup']:.2f}x", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
