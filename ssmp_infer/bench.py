"""`ssmp-infer bench`: the engine against a plain decoding loop and against itself without reuse.

On synthetic movies of the bundled model's world (`ssmp_infer.synth`, CMTD-sized by default) it times
the engine for every mode × reuse × precision × batch size, and the plain loop in the same process:

- the plain loop (`plain_generate`): topk at the engine's default rounds (4; 12 before 2026-12-07), one
  movie at a time, fp32, a full encoder pass over [movie ; slots] every round and the whole J×I score
  matrix, as a paper's code would ship;
- recompute: the engine in the same mode with `refresh_every=1` (the whole encoder every round), fp32,
  batch 1.

Every engine row carries its speed-up over both baselines and `same_as_recompute`: whether its
trailers are shot for shot those of the `refresh_every=1` run of the same setting (exact reuse must
give the same trailers). The last line printed is the whole result as one JSON object.

The timing helpers (`measure`, `machine`) live here, inside the package, so that an installed
`ssmp-infer bench` needs no checkout; the scripts in benchmarks/ import them.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .config import MODES, DecodeConfig
from .data import default_trailer_length
from .errors import InputError
from .model import SSMPEncoder, num_parameters, score_logits

PLAIN_STEPS = DecodeConfig().steps  # the plain loop's rounds: the engine's topk default, so both run as many
REUSE = {1: "recompute", None: "default"}  # refresh_every -> label; None: the model's exact default
DEFAULT_SHOTS = (1909, 400)  # CMTD's mean movie, and a short one
QUICK = dict(shots=(160,), batch_sizes=(1, 2), repeats=1)  # a CI smoke run: seconds on a CPU


# --- timing ---------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, repeats: int) -> dict:
    """Median and spread (min, max) of `fn`'s wall time in milliseconds; the caller warms up first."""
    times = []
    for _ in range(repeats):
        synchronize(device)
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
        "numpy": np.__version__,
    }
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
        facts["cuda"] = torch.version.cuda
    return facts


# --- the plain baseline ---------------------------------------------------------------------------


@torch.inference_mode()
def plain_generate(model: SSMPEncoder, movie, length: int, steps: int = PLAIN_STEPS) -> tuple[list[int], int]:
    """MaskGIT top-k decoding of one movie, written plainly: (shots in trailer order, encoder passes).

    No cache, no batch, no fused scoring: every round runs `forward` over [movie ; slots] and scores
    the full J×I matrix. After round r of T the cosine schedule has L - floor(L · cos(π/2 · r/T))
    slots locked; the round locks the most confident (slot, unused shot) pair of the matrix, strikes
    out that slot's row and that shot's column, and repeats until the count is reached. The engine's
    topk mode must give the same trailer (tests/test_bench.py).
    """
    device = next(model.parameters()).device
    movie = torch.as_tensor(movie, dtype=torch.float32, device=device)[None]  # (1, I, D)
    num_shots = movie.shape[1]
    movie_valid = torch.ones(1, num_shots, dtype=torch.bool, device=device)
    slot_valid = torch.ones(1, length, dtype=torch.bool, device=device)
    keys = model.shot_keys(F.normalize(movie, dim=-1), movie_valid)  # scored against, read by locked slots
    shots = [-1] * length  # the movie shot in each slot; -1 while masked
    passes = 0
    for r in range(1, steps + 1):
        need = length - math.floor(length * math.cos(math.pi / 2 * r / steps)) - sum(s >= 0 for s in shots)
        if need <= 0:  # more rounds than slots: this round locks nothing, so it needs no pass
            continue
        masked = torch.tensor([[s < 0 for s in shots]], device=device)  # (1, J)
        slots = keys[:, [max(s, 0) for s in shots]]  # (1, J, D); masked slots read MP inside the model
        pred, states = model.forward_with_states(movie, movie_valid, slots, masked, slot_valid)
        passes += 1
        prior = None if states.shot_prior is None else model.cfg.prior_weight * states.shot_prior
        logits = score_logits(pred, keys, movie_valid, model.cfg.temperature, prior)[0]  # (J, I)
        prob = logits.softmax(dim=-1)  # P over every shot, used or not
        prob[~masked[0]] = -1.0  # locked slots take nothing
        prob[:, [s for s in shots if s >= 0]] = -1.0  # a used shot is never offered again
        for _ in range(need):
            j, i = divmod(int(prob.argmax()), num_shots)  # ties: the lowest slot, then the lowest shot
            shots[j] = i
            prob[j, :] = -1.0
            prob[:, i] = -1.0
    return shots, passes


# --- the sweep ------------------------------------------------------------------------------------


def synthetic_movies(count: int, shots: int, feature_dim: int, seed: int = 0) -> list[np.ndarray]:
    """`count` movies of `shots` shots from the synthetic world of seed 0 (the bundled model's)."""
    from .synth import FEATURE_DIM, World, make_movie, movie_rng

    if feature_dim != FEATURE_DIM:  # another model's input size: plain Gaussian features
        rng = np.random.default_rng(seed)
        return [rng.standard_normal((shots, feature_dim)).astype(np.float32) for _ in range(count)]
    world = World(0)
    return [make_movie(movie_rng(seed, k), world, shots).features for k in range(count)]


def parse_list(text: str, name: str, kind=str, choices=None) -> tuple:
    """'a,b,c' -> a tuple of distinct values in the order given, each checked."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        try:
            value = kind(part)
        except ValueError:
            raise InputError(f"{name}: {part!r} is not {'an integer' if kind is int else 'valid'}") from None
        if choices is not None and value not in choices:
            raise InputError(f"{name}: unknown value {part!r}; expected some of {list(choices)}")
        if kind is int and value < 1:
            raise InputError(f"{name}: values must be at least 1, got {value}")
        if value not in values:
            values.append(value)
    return tuple(values)


def options_from_args(args) -> dict:
    """The CLI's options -> `run_bench` keywords: --quick fills in what was not given; lists are checked."""
    from .backends.torch_backend import PRECISIONS

    quick = QUICK if args.quick else {}
    shots = parse_list(args.shots, "--shots", int) if args.shots is not None else quick.get("shots", DEFAULT_SHOTS[:1])
    if args.small_shots is not None and args.small_shots < 0:
        raise InputError(f"--small-shots must be 0 (none) or more, got {args.small_shots}")
    if args.small_shots is None:
        small = () if args.quick else DEFAULT_SHOTS[1:]
    else:
        small = (args.small_shots,) if args.small_shots else ()
    batch_sizes = parse_list(args.batch_sizes, "--batch-sizes", int) if args.batch_sizes else None
    repeats = args.repeats if args.repeats is not None else quick.get("repeats", 3)
    if repeats < 1:
        raise InputError(f"--repeats must be at least 1, got {repeats}")
    return dict(
        model_dir=args.model,
        device=args.device,
        shots=tuple(dict.fromkeys(shots + small)),
        modes=parse_list(args.modes, "--modes", choices=MODES),
        batch_sizes=batch_sizes or quick.get("batch_sizes", (1, 4)),
        precisions=None if args.precisions is None else parse_list(args.precisions, "--precisions", choices=PRECISIONS),
        repeats=repeats,
        seed=args.seed,
    )


def run_bench(
    model_dir=None,
    device: str = "auto",
    shots: tuple[int, ...] = DEFAULT_SHOTS,
    modes: tuple[str, ...] = MODES,
    batch_sizes: tuple[int, ...] = (1, 4),
    precisions: tuple[str, ...] | None = None,
    repeats: int = 3,
    seed: int = 0,
    log=None,
) -> dict:
    """Time every setting on the same movies in one process: the result `format_table` and the JSON line show.

    `precisions` None: fp32 on a CPU, fp32 and bf16 on CUDA. fp32 and batch 1 are always run: they
    make the recompute baseline. Each setting runs once untimed (warm-up, and its trailers), then
    `repeats` timed times.
    """
    from .engine import Engine

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    engines = {"fp32": Engine.load(model_dir, device=device, precision="fp32")}
    dev = engines["fp32"].backend.device
    if precisions is None:
        precisions = ("fp32", "bf16") if dev.type == "cuda" else ("fp32",)
    precisions = tuple(dict.fromkeys(("fp32",) + tuple(precisions)))
    batch_sizes = tuple(sorted(set((1,) + tuple(batch_sizes))))
    for p in precisions[1:]:
        engines[p] = Engine.load(model_dir, device=device, precision=p)
    model = engines["fp32"].backend.model
    cfg = engines["fp32"].model_config

    rows = []
    for num_shots in shots:
        movies = synthetic_movies(max(batch_sizes), num_shots, cfg.feature_dim, seed)
        length = default_trailer_length(num_shots)
        plain_shots, passes = plain_generate(model, movies[0], length)  # warm-up, and the trailer
        log(f"bench: plain loop, {num_shots} shots")
        timing = measure(lambda: plain_generate(model, movies[0], length), dev, repeats)
        plain = dict(subject="plain", mode="topk", shots=num_shots, length=length, batch_size=1, precision="fp32",
                     refresh_every=1, reuse=REUSE[1], rounds=float(passes), **timing,
                     same_as_recompute=None, same_as_plain=None)
        rows.append(plain)
        for mode in modes:
            for precision in precisions:
                engine = engines[precision]
                for b in batch_sizes:
                    for refresh_every in REUSE:  # recompute first: the others are compared with it
                        decode = DecodeConfig(mode=mode, refresh_every=refresh_every)
                        log(f"bench: engine {mode} {REUSE[refresh_every]} {precision} batch {b}, {num_shots} shots")
                        trailers = engine.generate_batch(movies[:b], decode=decode)  # warm-up, and the trailers
                        timing = measure(lambda: engine.generate_batch(movies[:b], decode=decode), dev, repeats)
                        got = [t.shots for t in trailers]
                        if refresh_every == 1:
                            recompute_shots = got
                        rows.append(dict(
                            subject="engine", mode=mode, shots=num_shots, length=length, batch_size=b,
                            precision=precision, refresh_every=refresh_every, reuse=REUSE[refresh_every],
                            rounds=sum(t.steps for t in trailers) / b, **timing,
                            same_as_recompute=got == recompute_shots,
                            same_as_plain=got[0] == plain_shots if mode == "topk" else None,
                        ))
    for row in rows:
        row["ms_per_trailer"] = row["median_ms"] / row["batch_size"]
        row["trailers_per_s"] = 1e3 / row["ms_per_trailer"]
    def baseline(row, **match):
        return next((r for r in rows if r["shots"] == row["shots"] and all(r[k] == v for k, v in match.items())), None)

    for row in rows:
        plain = baseline(row, subject="plain")
        recompute = baseline(row, subject="engine", mode=row["mode"], refresh_every=1, precision="fp32", batch_size=1)
        row["speedup_vs_plain"] = plain["ms_per_trailer"] / row["ms_per_trailer"]
        row["speedup_vs_recompute"] = None if recompute is None else recompute["ms_per_trailer"] / row["ms_per_trailer"]
    return {
        "benchmark": "ssmp-infer bench",
        "machine": machine(dev),
        "model": {
            "source": engines["fp32"].source,
            "movie_attention": cfg.movie_attention,
            "shot_prior": cfg.shot_prior,
            "d_model": cfg.d_model,
            "n_layers": cfg.n_layers,
            "feature_dim": cfg.feature_dim,
            "parameters": num_parameters(model),
        },
        "config": {
            "shots": list(shots),
            "modes": list(modes),
            "batch_sizes": list(batch_sizes),
            "precisions": list(precisions),
            "repeats": repeats,
            "warmup": 1,
            "seed": seed,
            "movies": "ssmp_infer.synth, world 0 (the bundled model's)",
            "topk_steps": DecodeConfig().steps,
            "paper_max_rounds": DecodeConfig().max_rounds,
            "plain": f"topk, {PLAIN_STEPS} rounds, fp32, one movie at a time, full pass every round",
            "recompute": "engine, refresh_every=1, fp32, batch 1, same mode and shots",
        },
        "rows": rows,
    }


def format_table(result: dict) -> str:
    """A fixed-width table of the rows, headed by the machine and the model."""
    m, model = result["machine"], result["model"]
    where = m.get("gpu") or f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads"
    lines = [
        f"# ssmp-infer bench on {m['device']} ({where}); python {m['python']}, torch {m['torch']}",
        f"# model {model['source']}: {model['movie_attention']} attention, d {model['d_model']}, "
        f"{model['n_layers']} layers, {model['parameters'] / 1e6:.1f}M parameters; "
        f"median of {result['config']['repeats']} after 1 warm-up",
        f"# x plain: speed-up over the plain loop (topk, {PLAIN_STEPS} rounds, one movie, full pass every round); x recompute: over"
        " the engine with refresh_every=1, fp32, batch 1, same mode; =recompute / =plain: same shots as those runs",
    ]
    head = ("shots", "J", "subject", "mode", "reuse", "prec", "batch", "rounds", "ms/trailer", "trailers/s",
            "x plain", "x recomp", "=recompute", "=plain")
    widths = (6, 4, 8, 6, 10, 5, 6, 7, 11, 11, 8, 8, 10, 6)
    lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths)))

    def yes(flag) -> str:
        return "-" if flag is None else "yes" if flag else "NO"

    for r in result["rows"]:
        recompute = "-" if r["speedup_vs_recompute"] is None else f"{r['speedup_vs_recompute']:.2f}"
        cells = (r["shots"], r["length"], r["subject"], r["mode"], r["reuse"], r["precision"], r["batch_size"],
                 f"{r['rounds']:.1f}", f"{r['ms_per_trailer']:.1f}", f"{r['trailers_per_s']:.2f}",
                 f"{r['speedup_vs_plain']:.2f}", recompute, yes(r["same_as_recompute"]), yes(r["same_as_plain"]))
        lines.append("  ".join(str(c).rjust(w) for c, w in zip(cells, widths)))
    return "\n".join(lines)
