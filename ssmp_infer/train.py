"""Self-paced masked training.

Each step masks a fraction t of every trailer's slots (at least one), asks the encoder for the masked
slots' features, and takes the cross-entropy of the target shot g_j under P = softmax_i(cos(v̂_j, m_i)/tau).
Unmasked slots hold the feature of their target movie shot, exactly what decoding feeds a locked slot.

The mask ratio t follows the model's competence, the batch accuracy a on masked slots (paper's rule):
    b ← μa·a + (1−μa)·b
    t̃ ← μt·t + (1−μt)·(t_min + (t_max − t_min)·sigmoid(β·(b − 0.5)))
    t ← max(t, t̃)
so training starts on nearly complete trailers and the ratio never falls.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import check_checkpoint_dir, save_checkpoint
from .config import ModelConfig, TrainConfig
from .data import Example, load_split, pad_batch, pad_targets, slot_inputs
from .errors import InputError
from .model import SSMPEncoder, num_parameters, score_logits


@dataclass
class SelfPacedRatio:
    t: float  # current mask ratio
    b: float = 0.0  # smoothed masked-slot accuracy

    def update(self, accuracy: float, cfg: TrainConfig) -> float:
        self.b = cfg.mu_a * accuracy + (1 - cfg.mu_a) * self.b
        target = cfg.t_min + (cfg.t_max - cfg.t_min) / (1 + math.exp(-cfg.beta * (self.b - 0.5)))
        self.t = max(self.t, cfg.mu_t * self.t + (1 - cfg.mu_t) * target)
        return self.t


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up over the first `warmup_fraction` of steps, then cosine decay to zero."""
    warmup = max(1, round(cfg.warmup_fraction * total))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def sample_slot_mask(slot_valid: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Mask round(ratio · J) of each trailer's real slots (at least one), chosen uniformly."""
    lengths = slot_valid.sum(dim=1)
    count = (lengths.float() * ratio).round().clamp(min=1).long()
    noise = torch.rand(slot_valid.shape, generator=generator).masked_fill(~slot_valid, 2.0)
    rank = noise.argsort(dim=1).argsort(dim=1)  # a random rank per slot, real slots first
    return rank < count[:, None]


def masked_loss(model: SSMPEncoder, examples: list[Example], ratio: float, generator: torch.Generator):
    """(loss, accuracy on masked slots) for one batch."""
    movie, movie_valid = pad_batch([e.movie for e in examples])
    targets = pad_targets([e.targets for e in examples])  # (B, J), -1 in padded slots
    slot_valid = targets >= 0
    masked = sample_slot_mask(slot_valid, ratio, generator)
    pred = model(movie, movie_valid, slot_inputs(movie, targets), masked, slot_valid)  # (B, J, D); slots hold m_{g_j}
    logits = score_logits(pred, movie, movie_valid, model.cfg.temperature)[masked]  # (masked slots, I)
    loss = F.cross_entropy(logits, targets[masked])
    accuracy = (logits.argmax(dim=-1) == targets[masked]).float().mean()
    return loss, float(accuracy)


def train(
    data_root: str | Path,
    out_dir: str | Path,
    model_config: ModelConfig,
    cfg: TrainConfig,
    force: bool = False,
    log: TextIO = sys.stderr,
    log_every_s: float = 10.0,
) -> dict:
    out_dir = Path(out_dir)
    check_checkpoint_dir(out_dir, force)  # fail before training, not after
    examples = load_split(data_root, "train", model_config.feature_dim)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    order_rng = np.random.default_rng(cfg.seed)
    model = SSMPEncoder(model_config).train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=cfg.betas,
    )
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    pace = SelfPacedRatio(t=cfg.t_min)
    print(
        f"training {num_parameters(model) / 1e6:.2f}M parameters on {len(examples)} movies, "
        f"{total} steps ({cfg.epochs} epochs of {steps_per_epoch})",
        file=log,
        flush=True,
    )
    start = last_log = time.monotonic()
    recent: list[tuple[float, float]] = []
    step, stopped_early = 0, False
    while step < total:
        perm = order_rng.permutation(len(examples))
        for k in range(0, len(perm), cfg.batch_size):
            if step >= total:
                break
            if cfg.max_minutes is not None and time.monotonic() - start > 60 * cfg.max_minutes:
                stopped_early = True
                break
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, cfg)
            loss, accuracy = masked_loss(model, [examples[i] for i in perm[k : k + cfg.batch_size]], pace.t, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            pace.update(accuracy, cfg)
            recent = (recent + [(loss.item(), accuracy)])[-50:]
            step += 1
            now = time.monotonic()
            if now - last_log >= log_every_s or step == total:
                last_log = now
                mean_loss, mean_acc = np.mean(recent, axis=0)
                print(
                    f"step {step}/{total}  loss {mean_loss:.3f}  acc {mean_acc:.3f}  mask {pace.t:.3f}  "
                    f"lr {lr_at(step - 1, total, cfg):.1e}  {now - start:.0f}s",
                    file=log,
                    flush=True,
                )
        if stopped_early:
            print(f"--max-minutes {cfg.max_minutes} reached at step {step}; saving", file=log, flush=True)
            break
    if step == 0:
        raise InputError("training stopped before its first step; raise --max-minutes")
    mean_loss, mean_acc = np.mean(recent, axis=0)
    final = {"loss": float(mean_loss), "accuracy": float(mean_acc), "mask_ratio": pace.t, "smoothed_accuracy": pace.b}
    provenance = {
        "data": str(data_root),
        "split": "train",
        "movies": len(examples),
        "steps": step,
        "planned_steps": total,
        "stopped_early": stopped_early,
        "seed": cfg.seed,
        "minutes": round((time.monotonic() - start) / 60, 2),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "final": final,
    }
    save_checkpoint(model.eval(), out_dir, provenance, force=True)
    return {"out": str(out_dir), "steps": step, **final}
