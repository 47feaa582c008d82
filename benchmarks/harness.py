"""The shared timing harness: warm-up, synchronise, median and spread over repeats, machine facts."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, warmup: int = 1, repeats: int = 5) -> dict:
    """Median and spread (min, max) of `fn`'s wall time in milliseconds."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "repeats": repeats}


def machine(device: torch.device) -> dict:
    facts = {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def report(name: str, rows: list[dict], device: torch.device, **shapes) -> None:
    """Print a table, then the whole result as one JSON line (the last line of every benchmark run)."""
    print(f"# {name} on {machine(device)}")
    for row in rows:
        print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(json.dumps({"benchmark": name, "machine": machine(device), "shapes": shapes, "rows": rows}))
