"""The methods SSMP is compared with, trained and evaluated through the same CLI:

- `select-rank` (select_rank.py): a Transformer shot scorer picks the top J shots, a separate ranker
  orders them;
- `autoregressive` (autoregressive.py): TGT-like, a movie encoder and a causal decoder that predicts
  the next shot's feature; the most probable unused shot is fed back step by step.

(`random`, distinct random shots in random order, needs no model: `random_trailer`.)

A baseline checkpoint is an ordinary checkpoint directory whose config.json records its `method`;
`load_baseline` refuses one of another method, and SSMP's `load_checkpoint` refuses a baseline's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from ..config import TrainConfig
from ..errors import InputError
from ..names import BASELINES
from .autoregressive import Autoregressive
from .common import BaselineConfig, fit
from .select_rank import SelectRank

MODELS = {SelectRank.METHOD: SelectRank, Autoregressive.METHOD: Autoregressive}
METHODS = tuple(MODELS)
assert METHODS == BASELINES, "names.BASELINES lists the trained baselines for the command line: keep them one"


def _model_class(method: str):
    if method not in MODELS:
        raise InputError(f"unknown baseline {method!r}; expected one of {list(METHODS)}")
    return MODELS[method]


def train_baseline(method: str, data_root, out_dir, cfg: TrainConfig, size: BaselineConfig | None = None,
                   force: bool = False, log: TextIO = sys.stderr) -> dict:
    """Train baseline `method` of `size` (default: SSMP's demo preset) under `cfg`: SSMP's budget,
    optimiser, schedule, seed, device and held-out selection."""
    model = _model_class(method)(size or BaselineConfig.preset("demo"))
    return fit(model, method, data_root, out_dir, cfg, force=force, log=log)


def load_baseline(directory, method: str, device: str | torch.device = "cpu"):
    """The `method` model saved in `directory`, in eval mode; one sentence if it is not such a model."""
    from ..checkpoint import CONFIG, checkpoint_method, load_weights, read_config

    cls = _model_class(method)
    directory = Path(directory)
    meta = read_config(directory)
    saved = checkpoint_method(meta)
    if saved != method:
        raise InputError(f"{directory} holds a model of method {saved}, not {method}; evaluate it with --method {saved}")
    try:
        config = BaselineConfig.from_dict(meta.get("model"))
    except InputError as e:
        raise InputError(f"{directory / CONFIG}: {e}") from None
    return load_weights(directory, cls, config).to(device).eval()  # SSMP's loader and checks


def generate_trailers(model, movies: list[np.ndarray], lengths: list[int], batch_size: int = 8) -> list[list[int]]:
    """Each movie's trailer of the given length: movie shot indices in trailer order, distinct."""
    from ..data import check_trailer_length, pad_batch

    device = next(model.parameters()).device
    lengths = [check_trailer_length(int(n), m.shape[0]) for m, n in zip(movies, lengths)]
    trailers = []
    for start in range(0, len(movies), batch_size):
        movie, movie_valid = pad_batch(movies[start : start + batch_size], device)
        chunk = lengths[start : start + batch_size]
        shots = model.generate(movie, movie_valid, chunk).cpu()
        trailers += [shots[k, :n].tolist() for k, n in enumerate(chunk)]
    return trailers


def random_trailer(rng: np.random.Generator, num_shots: int, length: int) -> list[int]:
    """`length` distinct shots in random order: the floor every method must clear."""
    return rng.permutation(num_shots)[:length].tolist()


__all__ = ["METHODS", "BaselineConfig", "SelectRank", "Autoregressive", "train_baseline", "load_baseline",
           "generate_trailers", "random_trailer"]
