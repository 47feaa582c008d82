"""The backend options every command that runs the model shares (run, eval, serve, run --ray), and the
`Engine.load` arguments they become. No torch import here: `--help` stays fast."""

from __future__ import annotations

import argparse

from .config import DEFAULT_STATE_CACHE_MB
from .names import BACKENDS


def add_model_arg(p: argparse.ArgumentParser, default: str = "bundled:default") -> None:
    p.add_argument("--model", default=None,
                   help=f"checkpoint directory, or bundled:default (1024-d) or bundled:1280 (default: {default})")


def add_backend_args(p: argparse.ArgumentParser) -> None:
    from .config import PRECISIONS

    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="encoder arithmetic: fp32, bf16 (autocast; torch only) or int8 (CPU, dynamic quantisation; "
                        "torch or onnxruntime)")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="torch; onnxruntime: the model's ONNX graphs (fp32 or int8; onnx extra); tensorrt: fp16 "
                        "engines (CUDA; tensorrt extra)")
    p.add_argument("--onnx", default=None,
                   help="onnxruntime: a directory written by `ssmp-infer export` (default: export into a cache "
                        "keyed by the weights' hash on first use)")
    p.add_argument("--engines", default=None,
                   help="tensorrt: a directory written by `ssmp-infer export --format tensorrt` (default: build "
                        "into a cache keyed by weights, GPU and TensorRT version on first use)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="torch on CUDA: capture each round's encoder step once as a CUDA graph and replay it")
    p.add_argument("--state-cache-mb", type=float, default=DEFAULT_STATE_CACHE_MB,
                   help="keep this much of prepared movies' states, so another trailer of a movie seen before "
                        "runs only its rounds (0: keep none)")


def engine_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of `Engine.load` that the command line chose."""
    return {"model_dir": args.model, "device": args.device, "backend": args.backend, "precision": args.precision,
            "onnx_dir": args.onnx, "engine_dir": args.engines, "cuda_graphs": args.cuda_graphs,
            "state_cache_mb": args.state_cache_mb}
