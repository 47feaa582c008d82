"""`ssmp-infer serve`: the HTTP API on Ray Serve (see ssmp_infer/serve/app.py). Ray loads only when it runs."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

from .cli_backend import add_backend_args, add_model_arg, engine_options
from .errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="an HTTP API on Ray Serve: POST a .npy, get the trailer (dynamic batching)")
    add_model_arg(p, "bundled:default; on a cluster, a directory is a path every node can read")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (cuda: each replica reserves one GPU)")
    add_backend_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--replicas", type=int, default=1, help="generator replicas, one Engine each (default 1)")
    p.add_argument("--max-batch-size", type=int, default=8, help="requests per batch through the runtime (1: no batching)")
    # 100 ms: on a 2-core CPU, 20 ms gave batches of 1.25 requests on average under 16 clients, 100 ms 3.7
    # and 1.3 times the throughput (benchmarks/RESULTS.md); a lone request waits that long at most.
    p.add_argument("--batch-wait-ms", type=float, default=100.0,
                   help="how long a replica waits for more requests before running a batch that is not full (default 100)")
    p.add_argument("--address", default=None,
                   help="a Ray cluster to join (auto, HOST:PORT or ray://HOST:PORT); default: start a local Ray")
    p.add_argument("--num-cpus", type=int, default=None, help="a local Ray's CPUs (default: all of this machine's)")
    p.add_argument("--max-body-mb", type=float, default=64.0, help="larger request bodies get 413 (default 64)")
    p.add_argument("--max-shots", type=int, default=16384, help="movies with more shots get 413 (default 16384)")
    p.add_argument("--max-queue", type=int, default=512,
                   help="requests in progress at once; more get 503 with Retry-After (default 512)")
    p.add_argument("--max-held-mb", type=float, default=1024.0,
                   help="request bodies held at once, summed; past it new requests get 503 (default 1024)")
    p.add_argument("--movie-store-mb", type=float, default=2048.0,
                   help="uploaded movies (POST /v1/movies) kept for trailers by id, least recently used out first")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds a request may take, waiting included, before a 504 (default 300)")
    p.add_argument("--drain-timeout", type=float, default=120.0,
                   help="on SIGTERM or Ctrl-C, seconds to wait for requests in progress (default 120)")
    p.set_defaults(func=cmd_serve)


def check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise InputError(f"--port must be in 1..65535, got {port}")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise InputError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def cmd_serve(args) -> None:
    from .serve import require_ray
    from .serve.limits import Limits

    require_ray("ssmp-infer serve")
    for flag, value in (("--replicas", args.replicas), ("--max-batch-size", args.max_batch_size)):
        if value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}")
    if not 0 <= args.batch_wait_ms <= 60_000:
        raise InputError(f"--batch-wait-ms must be between 0 and 60000, got {args.batch_wait_ms}")
    for flag, value in (("--max-body-mb", args.max_body_mb), ("--max-held-mb", args.max_held_mb),
                        ("--movie-store-mb", args.movie_store_mb)):
        if not value > 0:
            raise InputError(f"{flag} must be positive, got {value}")
    if args.address is not None and args.num_cpus is not None:
        raise InputError("--num-cpus sizes a local Ray; a cluster given by --address has its own")
    limits = Limits(max_body_bytes=int(args.max_body_mb * 2**20), max_shots=args.max_shots, max_queue=args.max_queue,
                    max_held_bytes=int(args.max_held_mb * 2**20), timeout_s=args.timeout,
                    max_movie_store_bytes=int(args.movie_store_mb * 2**20))
    from .checkpoint import DEFAULT_MODEL_DIR, read_config

    feature_dim = int(read_config(args.model or DEFAULT_MODEL_DIR)["feature_dim"])  # the frontend checks bodies against it
    if args.address is None:
        from .engine import resolve_device

        resolve_device(args.device)  # a bad device is one sentence here, not a failed replica later
        check_port(args.host, args.port)
        cpus = args.num_cpus or os.cpu_count() or 1
        if not args.device.startswith("cuda") and args.replicas > cpus:  # Serve would wait for them for ever
            raise InputError(f"--replicas {args.replicas} needs {args.replicas} CPUs (one per replica); this local Ray has {cpus}")
    gpus = 1 if args.device.startswith("cuda") else 0
    serve_forever(args, engine_options(args), feature_dim, limits, {"num_cpus": 0 if gpus else 1, "num_gpus": gpus})


def serve_forever(args, engine_options: dict, feature_dim: int, limits, resources: dict) -> None:
    import signal

    import ray

    from .serve.connect import init_ray_keeping_signals

    # A signal only sets `stop`: raised from a handler, an exception can land inside Ray's C code (a
    # SystemError, seen when SIGTERM came during serve.start). Start-up runs to its end, then stops at once.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # no address: a Ray of its own, whatever an old cluster left
    init_ray_keeping_signals(args.address, num_cpus=args.num_cpus)
    try:
        if not stop.is_set():  # a signal during ray.init: nothing deployed yet, stop here
            serve_until_stopped(args, engine_options, feature_dim, limits, resources, stop)
    finally:
        ray.shutdown()
    print("ssmp-infer: stopped", file=sys.stderr, flush=True)


def serve_until_stopped(args, engine_options: dict, feature_dim: int, limits, resources: dict, stop) -> None:
    """Deploy, say so, wait for `stop` (set by SIGTERM or Ctrl-C, also during start-up), drain."""
    import torch
    from ray import serve

    from .serve.app import APP_NAME, build_app

    serve.start(http_options={"host": args.host, "port": args.port})
    # A matrix product's rounding depends on how many threads share it (MKL splits a long reduction among
    # them), and a near tie between two shots can follow that rounding: measured, 2 of 96 edits of a
    # 1909-shot movie picked another shot with 1 thread than with 2. A local server's replicas compute
    # with the threads `run` gets in this shell, so their trailers are `run`'s; a cluster's machines
    # differ from this one, and keep Ray's default.
    threads = torch.get_num_threads() if args.address is None else None  # what a `run` in this shell gets
    app = build_app(engine_options, feature_dim, limits, replicas=args.replicas,
                    max_batch_size=args.max_batch_size, batch_wait_s=args.batch_wait_ms / 1000,
                    replica_resources=resources, threads=threads)
    try:
        handle = serve.run(app, name=APP_NAME, route_prefix="/")
    except Exception as e:  # a replica failed to start: its first line says why (the rest is in Ray's logs)
        lines = [line for line in str(e).splitlines() if line.strip()]
        raise InputError(f"the server could not start: {lines[-1] if lines else type(e).__name__}") from None
    print(f"ssmp-infer: serving on http://{args.host}:{args.port} (POST /v1/trailers, POST /v1/movies, GET /healthz, GET /metrics); "
          "SIGTERM or Ctrl-C drains and stops", file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        pass
    print("ssmp-infer: draining requests in progress", file=sys.stderr, flush=True)
    left = handle.drain.remote(args.drain_timeout).result()
    if left:
        print(f"ssmp-infer: {left} request(s) still open after --drain-timeout {args.drain_timeout:g} s",
              file=sys.stderr, flush=True)
    time.sleep(0.5)  # the last answers are handed back; give the HTTP proxy a moment to send them
    serve.shutdown()
