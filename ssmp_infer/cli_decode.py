"""The decoding options every command that decodes shares (run, eval, trailer, serve, run --ray), and the
DecodeConfig they become. No torch import here: `--help` stays fast."""

from __future__ import annotations

import argparse

from .cli_backend import add_backend_args
from .config import KERNELS, MODES, SEED_LIMIT, DecodeConfig


def seed_arg(text: str) -> int:
    """argparse `type=` for every --seed: an integer in [0, 2^63)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}; expected an integer from 0 to 2^63 - 1") from None
    if not 0 <= seed < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"seed {seed} is out of range; expected an integer from 0 to 2^63 - 1")
    return seed


def add_decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=MODES, default="paper", help="decoding: paper (SSMP) or topk (MaskGIT)")
    p.add_argument("--steps", type=int, default=None, help=f"topk: rounds (default {DecodeConfig().steps}); paper: round cap (default {DecodeConfig().max_rounds})")
    p.add_argument("--seed", type=seed_arg, default=0, help="in [0, 2^63)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--refresh-every", type=int, default=None,
                   help="recompute the movie's states every K rounds (default: exact; 1 recomputes every round)")
    add_backend_args(p)
    p.add_argument("--kernels", choices=KERNELS, default="auto",
                   help="each round's scoring and locking: torch, triton (fused kernels; CUDA) or auto (triton on "
                        "CUDA when installed); the same shots either way")


def decode_config(args: argparse.Namespace) -> DecodeConfig:
    return DecodeConfig.from_options(args.mode, args.steps, args.seed, args.refresh_every, args.kernels)
