"""Analytic FLOP counts of the encoder's passes (multiply-adds × 2), for reports and MFU.

T tokens through one layer cost 2·T·(4·d² + 2·d·d_ff) in the projections and the MLP, and 4·T·K·d in
attention (scores and the weighted sum over K keys). Input and output projections add 2·T·D·d each,
and the movie-side extras (when the model has them) theirs per movie shot: the shot prior's context
branch, two layers, and the position keys, one map of the position features to D.
"""

from __future__ import annotations

import math

from .config import ModelConfig
from .context_prior import context_width
from .model import NUM_POSITION_FEATURES


def layer_flops(cfg: ModelConfig, queries: int, keys: int) -> int:
    d = cfg.d_model
    return 2 * queries * (4 * d * d + 2 * d * cfg.d_ff) + 4 * queries * keys * d


def context_prior_flops(cfg: ModelConfig, shots: int) -> int:
    """The shot prior's context branch over a movie: zero for a model without one."""
    if not cfg.context_prior:
        return 0
    width = context_width(cfg.feature_dim, NUM_POSITION_FEATURES, cfg.local_context, cfg.context_novelty,
                          cfg.context_profile)
    return 2 * shots * (width * cfg.context_hidden + cfg.context_hidden)


def movie_extras_flops(cfg: ModelConfig, shots: int) -> int:
    """What a model computes per movie beside its layers: the context branch and the position keys."""
    keys = 2 * shots * NUM_POSITION_FEATURES * cfg.feature_dim if cfg.position_keys else 0
    return context_prior_flops(cfg, shots) + keys


def full_pass_flops(cfg: ModelConfig, shots: int, slots: int) -> int:
    """One pass over [movie ; slots]: every token through every layer (a round with `refresh_every=1`)."""
    tokens = shots + slots
    return (cfg.n_layers * layer_flops(cfg, tokens, tokens) + 2 * tokens * cfg.feature_dim * cfg.d_model
            + 2 * slots * cfg.d_model * cfg.feature_dim + movie_extras_flops(cfg, shots))


def prepare_flops(cfg: ModelConfig, shots: int) -> int:
    """The movie alone (prefix attention): its keys and values for every later round."""
    return (cfg.n_layers * layer_flops(cfg, shots, shots) + 2 * shots * cfg.feature_dim * cfg.d_model
            + movie_extras_flops(cfg, shots))


def step_flops(cfg: ModelConfig, shots: int, slots: int) -> int:
    """The slot rows only, against cached movie keys and values."""
    return cfg.n_layers * layer_flops(cfg, slots, shots + slots) + 4 * slots * cfg.feature_dim * cfg.d_model


def score_flops(cfg: ModelConfig, shots: int, slots: int) -> int:
    """cos(v̂_j, m_i) for every slot and shot: the J×I×D product."""
    return 2 * slots * shots * cfg.feature_dim


def trailer_flops(cfg: ModelConfig, shots: int, slots: int, rounds: int, refresh_every: int | None) -> int:
    """A whole trailer of `rounds` rounds under a reuse setting (None: the model's exact default)."""
    prefix = cfg.movie_attention == "prefix"
    if refresh_every is None:
        refresh_every = 0 if prefix else 1
    if refresh_every == 1:
        passes = rounds * full_pass_flops(cfg, shots, slots)
    elif prefix:
        passes = prepare_flops(cfg, shots) + rounds * step_flops(cfg, shots, slots)
    else:
        full = 1 if refresh_every == 0 else math.ceil(rounds / refresh_every)
        passes = full * full_pass_flops(cfg, shots, slots) + (rounds - full) * step_flops(cfg, shots, slots)
    return passes + rounds * score_flops(cfg, shots, slots)
