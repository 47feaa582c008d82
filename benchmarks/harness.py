"""The shared timing harness of the scripts in benchmarks/: the package's timing helpers
(`ssmp_infer.bench`: they ship with `ssmp-infer bench`), plus warm-up and a report printer."""

from __future__ import annotations

import json
from typing import Callable

import torch

from ssmp_infer.bench import machine, synchronize
from ssmp_infer.bench import measure as measure_warm

__all__ = ["machine", "measure", "report", "synchronize"]


def measure(fn: Callable[[], object], device: torch.device, warmup: int = 1, repeats: int = 5) -> dict:
    """Median and spread (min, max) of `fn`'s wall time in milliseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    return measure_warm(fn, device, repeats)


def report(name: str, rows: list[dict], device: torch.device, **shapes) -> None:
    """Print a table, then the whole result as one JSON line (the last line of every benchmark run)."""
    print(f"# {name} on {machine(device)}")
    for row in rows:
        print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(json.dumps({"benchmark": name, "machine": machine(device), "shapes": shapes, "rows": rows}))
