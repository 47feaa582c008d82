"""What the baselines share with SSMP and with each other: the model size, a movie encoder, the
training loop.

Everything that makes a comparison fair is reused from SSMP's own code rather than rewritten: the
data loading (`data.load_split`), the budget (`train.StepPlan`: `--max-minutes` plans the learning-rate
schedule from the measured step rate), the learning-rate schedule (`train.lr_at`), the optimiser
settings of `TrainConfig`, the device choice (`engine.resolve_device`), held-out model selection
(`selection.split_validation`, `selection.BestWeights`: the weights of lowest held-out loss, of the
weight average `selection.WeightAverage` by default) and the
checkpoint format (`checkpoint.save_checkpoint`, which records the method).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from typing import TextIO

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import PRESETS, ModelConfig, TrainConfig
from ..errors import InputError
from ..model import NUM_POSITION_FEATURES, Block, position_features


# TrainConfig fields that only SSMP's masked training reads; a baseline's provenance leaves them out.
SSMP_ONLY = ("mask_schedule", "views", "t_min", "t_max", "beta", "mu_a", "mu_t")


@dataclass
class BaselineConfig:
    """Size of a baseline's networks: the same fields, presets and limits as SSMP's `ModelConfig`."""

    feature_dim: int = 1024
    d_model: int = 192
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 384
    dropout: float = 0.1
    temperature: float = 0.05  # tau of softmax_i(cos(v̂, m_i) / tau), as SSMP scores (autoregressive)

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

    def forward(self, movie: torch.Tensor, movie_valid: torch.Tensor) -> torch.Tensor:
        """(B, I, D) features, (B, I) validity -> (B, I, d) states; padded shots are never read."""
        h = self.drop(self.in_proj(F.normalize(movie.float(), dim=-1)) + self.pos(position_features(movie_valid)))
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


@torch.no_grad()
def held_out_loss(model, examples) -> float:
    """Mean training loss over the held-out movies, one at a time, in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    loss = float(np.mean([float(model.loss([e])) for e in examples]))
    model.train(was_training)
    return loss


def fit(model, method: str, data_root, out_dir, cfg: TrainConfig, force: bool = False, log: TextIO = sys.stderr,
        log_every_s: float = 10.0) -> dict:
    """Train `model` (it has `cfg` and `loss(examples) -> scalar tensor`) the way `train.train` trains SSMP:
    the same data, optimiser, budget, schedule and held-out selection; save it as a `method` checkpoint."""
    from pathlib import Path

    from ..checkpoint import check_checkpoint_dir, save_checkpoint
    from ..data import load_split
    from ..engine import resolve_device
    from ..model import num_parameters
    from ..selection import BestWeights, ValidationSchedule, WeightAverage, offer_weights, split_validation
    from ..train import StepPlan, end_training, lr_at, make_optimizer, to_device, training_provenance

    out_dir = Path(out_dir)
    check_checkpoint_dir(out_dir, force)  # fail before training, not after
    device = resolve_device(cfg.device)
    examples = to_device(load_split(data_root, "train", model.cfg.feature_dim), device)
    torch.manual_seed(cfg.seed)
    order_rng = np.random.default_rng(cfg.seed)
    examples, held_out = split_validation(examples, cfg.validation_fraction, order_rng)
    model = model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    plan = StepPlan(cfg.epochs * steps_per_epoch, cfg.max_minutes)
    budget = "" if cfg.max_minutes is None else f", at most {cfg.max_minutes:g} min"
    print(
        f"training {method}: {num_parameters(model) / 1e6:.2f}M parameters on {len(examples)} movies "
        f"({len(held_out)} held out to select the best weights), device {device}: up to {plan.planned} steps "
        f"({cfg.epochs} epochs of {steps_per_epoch}){budget}",
        file=log,
        flush=True,
    )
    best = BestWeights()
    schedule = ValidationSchedule(enabled=bool(held_out))
    average = WeightAverage.start(model, cfg.ema_decay)

    def validate(step: int) -> None:
        for prefix, scores, kept in offer_weights(model, average, best, step, lambda m: {"loss": held_out_loss(m, held_out)}):
            print(f"{prefix}: loss {scores['loss']:.4f}" + ("  (best so far)" if kept else ""), file=log, flush=True)

    last_log, recent, step, batches = time.monotonic(), [], 0, iter(())
    while not plan.done(step):
        batch = next(batches, None)
        if batch is None:  # a new epoch: a new order
            perm = order_rng.permutation(len(examples))
            batches = iter([perm[k : k + cfg.batch_size] for k in range(0, len(perm), cfg.batch_size)])
            continue
        lr = lr_at(plan.progress(step), cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = model.loss([examples[i] for i in batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if average is not None:
            average.update(model)
        recent = (recent + [float(loss.detach())])[-50:]
        step += 1
        replanned = plan.after_step(step)
        if replanned is not None:
            print(f"planned {replanned} steps to fit --max-minutes {cfg.max_minutes:g}", file=log, flush=True)
        schedule.after_step(step, plan, validate)
        now = time.monotonic()
        if now - last_log >= log_every_s or plan.done(step):
            last_log = now
            print(f"step {step}/{plan.planned}  loss {np.mean(recent):.4f}  lr {lr:.1e}  {plan.elapsed():.0f}s",
                  file=log, flush=True)
    end_training(model, step, plan, cfg, held_out, best, validate, log, average)
    final = {"loss": float(np.mean(recent))}
    provenance = training_provenance(data_root, len(examples), step, plan, held_out, best, cfg, device, final,
                                     skip_config=SSMP_ONLY)
    save_checkpoint(model.eval(), out_dir, provenance, force=True, method=method)
    return {"out": str(out_dir), "method": method, "steps": step, **final}
