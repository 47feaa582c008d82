"""How much of what its data holds each trailer generator learns, on synthetic worlds of several structures.

    python benchmarks/learning_worlds.py --out runs/worlds [--worlds A,B,C,D,E] [--minutes 12] [--seeds 1]
                                         [--methods random,select-rank,autoregressive,ssmp,ssmp-topk] [--jobs 1]

For each world: `ssmp-infer synth` writes it (once; kept under OUT/data/NAME), `ssmp-infer compare` trains
every method with the same `--max-minutes` and scores it on the test split, and the world's
`ceiling.json` (the generator's own rule without its randomness) says what is reachable. The last
output is one markdown table (OUT/table.md): per world its ceiling, and per method F1 / AA / LD, F1 as
a share of the ceiling, and the steps each run reached.

The worlds differ in what makes a shot trailer-worthy (`--worth`), in how trailers are ordered
(`--order`), in movie size and in trailer share; none of them is what the defaults were tuned on alone.
`--jobs 2` runs two worlds side by side (one thread each): quicker, but no run then has the machine
alone, and the steps each buys are fewer. Resuming: run the same command again (compare keeps what it
finished).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# name -> `ssmp-infer synth` options (120 train / 30 test movies unless CMTD-sized, as the held-out check's data)
WORLDS = {
    "A": ["--movies", "150", "--test-fraction", "0.2", "--shots", "250-700", "--seed", "41"],
    "B": ["--movies", "150", "--test-fraction", "0.2", "--shots", "150-250", "--seed", "42", "--order", "movie"],
    "C": ["--movies", "200", "--test-fraction", "0.12", "--seed", "43"],  # CMTD-sized: 1400-2400 shots
    "D": ["--movies", "150", "--test-fraction", "0.2", "--shots", "250-700", "--seed", "44", "--worth", "direction",
          "--order", "movie", "--trailer-fraction", "0.07"],
    "E": ["--movies", "150", "--test-fraction", "0.2", "--shots", "300-800", "--seed", "45", "--worth", "direction",
          "--trailer-fraction", "0.05"],
}
DEFAULT_METHODS = "random,select-rank,autoregressive,ssmp,ssmp-topk"


def ssmp(*args: str, threads: int | None = None, log=None) -> None:
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    subprocess.run([sys.executable, "-m", "ssmp_infer.cli", *args], check=True, env=env,
                   stdout=log or subprocess.DEVNULL, stderr=log or None)


def run_world(name: str, out: Path, minutes: float, seeds: int, methods: str, threads: int | None) -> dict:
    data = out / "data" / name
    if not (data / "ceiling.json").is_file():
        ssmp("synth", "--out", str(data), *WORLDS[name], "--force")
    result_dir = out / "compare" / name
    with open(out / f"compare-{name}.log", "a", encoding="utf-8") as log:
        ssmp("compare", "--data", str(data), "--minutes", f"{minutes:g}", "--seeds", str(seeds), "--methods", methods,
             "--out", str(result_dir), threads=threads, log=log)
    return json.loads((result_dir / "results.json").read_text(encoding="utf-8"))


def cell(row: dict, ceiling: float) -> str:
    mean, std = row["mean"], row["std"]

    def pm(key: str, digits: int = 3) -> str:
        if mean[key] is None:
            return "-"
        return f"{mean[key]:.{digits}f}" + ("" if std[key] is None else f" ± {std[key]:.{digits}f}")

    steps = ", ".join(str(s) for s in row["steps"] if s is not None) or "-"
    return (f"{pm('f1_r0')} / {pm('aa_r0')} / {pm('ld_r0', 1)} ({mean['f1_r0'] / ceiling:.0%}; steps {steps})")


def table(reports: dict[str, dict]) -> str:
    methods = [r["name"] for r in next(iter(reports.values()))["rows"]]
    lines = ["| world | ceiling F1 / AA | " + " | ".join(methods) + " |", "|---" * (len(methods) + 2) + "|"]
    for name, report in reports.items():
        c = report["ceiling"]
        shape = f"{name}: {' '.join(WORLDS[name])}"
        cells = [cell(row, c["f1"]) for row in report["rows"]]
        lines.append(f"| {shape} | {c['f1']:.3f} / {c['aa']:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "Each cell: F1 / AA / LD at tolerance 0 on the test split (mean ± std over seeds), F1 as a share "
              "of the world's ceiling, and the steps each training run reached."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--worlds", default=",".join(WORLDS))
    p.add_argument("--minutes", type=float, default=12.0)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--methods", default=DEFAULT_METHODS)
    p.add_argument("--jobs", type=int, default=1, help="worlds at a time (each with 2 / jobs threads)")
    args = p.parse_args()
    names = args.worlds.split(",")
    unknown = [n for n in names if n not in WORLDS]
    if unknown:
        sys.exit(f"learning_worlds: unknown worlds {unknown}; expected some of {list(WORLDS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 2) // args.jobs) if args.jobs > 1 else None
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {n: pool.submit(run_world, n, args.out, args.minutes, args.seeds, args.methods, threads) for n in names}
        reports = {n: f.result() for n, f in futures.items()}
    text = table(reports)
    (args.out / "table.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
