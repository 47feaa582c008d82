"""What the baselines share with SSMP and with each other: the model size, a movie encoder, the
training loop.

Everything that makes a comparison fair is reused from SSMP's own code rather than rewritten: the
training loop (`trainer.fit`: the data, augmentation, the optimiser settings of `TrainConfig`, the
budget whose schedule follows the clock, held-out selection by the trailers each method makes, early
stopping, the weight average) and the checkpoint format (`checkpoint.save_checkpoint`, which records
the method).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import TextIO

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import PRESETS, ModelConfig, NetworkSize, TrainConfig
from ..errors import InputError
from ..model import NUM_POSITION_FEATURES, Block, position_features


# TrainConfig fields that only SSMP's masked training reads; a baseline's provenance leaves them out.
SSMP_ONLY = ("mask_schedule", "views", "t_min", "t_max", "beta", "mu_a", "mu_t")


@dataclass
class BaselineConfig(NetworkSize):
    """Size of a baseline's networks: the same fields, presets and limits as SSMP's `ModelConfig` (the
    temperature: the autoregressive baseline scores as SSMP does)."""

    def __post_init__(self):
        # A checkpoint's config.json is user input: SSMP's config checks types and limits of the same fields.
        self.model_config()

    def model_config(self) -> ModelConfig:
        """These fields as an SSMP ModelConfig, whose blocks (`model.Block`) the baselines are built of."""
        return ModelConfig(**self.to_dict())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BaselineConfig":
        if not isinstance(d, dict):
            raise InputError(f"model config must be an object of fields, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InputError(f"model config has unknown fields {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def preset(cls, name: str, **overrides) -> "BaselineConfig":
        """SSMP's preset of this name, minus what only SSMP has (movie attention, shot prior)."""
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
        size = ModelConfig(**PRESETS[name]).to_dict()
        return cls(**{**{f.name: size[f.name] for f in dataclasses.fields(cls)}, **overrides})


class MovieEncoder(nn.Module):
    """A bidirectional Transformer over a movie's shots, embedded as SSMP embeds them: the unit feature
    projected to the model width plus a learned map of the same index and fraction-of-length features."""

    def __init__(self, cfg: BaselineConfig, n_layers: int | None = None):
        super().__init__()
        blocks_cfg = cfg.model_config()
        self.in_proj = nn.Linear(cfg.feature_dim, cfg.d_model)
        self.pos = nn.Linear(NUM_POSITION_FEATURES, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(blocks_cfg) for _ in range(n_layers or cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def forward(self, movie: torch.Tensor, movie_valid: torch.Tensor, window=None) -> torch.Tensor:
        """(B, I, D) features, (B, I) validity -> (B, I, d) states; padded shots are never read.
        `window`: the rows are training crops of longer movies (`model.position_features`)."""
        where = self.pos(position_features(movie_valid, window))
        h = self.drop(self.in_proj(F.normalize(movie.float(), dim=-1)) + where)
        mask = movie_valid[:, None, None, :]
        for block in self.blocks:
            h, _ = block(h, mask)
        return self.ln_f(h)


def init_weights(module: nn.Module) -> None:
    """SSMP's initialisation (normal 0.02, zero biases), so no method starts from a different scale."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


class BaselineTraining:
    """A baseline's part of a training run (`trainer.Method`): its own loss, and its trailers made as
    `ssmp-infer eval --method M` makes them."""

    def __init__(self, model, method: str):
        self.model, self.name = model, method

    def loss(self, examples, progress: float):
        return self.model.loss(examples), {}

    def after_step(self, stats: dict) -> None:
        pass

    def trailers(self, examples):
        from . import generate_trailers

        for e in examples:  # one at a time, so that a validation can stop between movies
            yield generate_trailers(self.model, [e.movie], [len(e.targets)], 1)[0]

    def describe(self) -> str:
        return f"width {self.model.cfg.d_model}, {self.model.cfg.n_layers} layers"


def fit(model, method: str, data_root, out_dir, cfg: TrainConfig, force: bool = False, log: TextIO = sys.stderr,
        log_every_s: float = 10.0) -> dict:
    """Train `model` (it has `cfg`, `loss(examples) -> scalar tensor` and `generate`) in the loop SSMP
    trains in (`trainer.fit`): the same data, augmentation, optimiser, budget, schedule, held-out
    selection and early stopping; save it as a `method` checkpoint."""
    from ..trainer import fit as fit_method

    torch.manual_seed(cfg.seed)
    return fit_method(BaselineTraining(model, method), data_root, out_dir, cfg, force=force, log=log,
                      log_every_s=log_every_s, skip_config=SSMP_ONLY)
