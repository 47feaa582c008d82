"""Masked training with a self-paced mask ratio.

Each step masks part of every trailer's slots (at least one), asks the encoder for the masked slots'
features, and takes the cross-entropy of the target shot g_j under P = softmax_i(cos(v̂_j, m_i)/tau).
Unmasked slots hold the feature of their target movie shot, exactly what decoding feeds a locked slot.

How much is masked: a schedule sets a ceiling t on the mask ratio. Three in four trailers
(`TrainConfig.whole_range_share`) draw their ratio uniformly from the whole range [t_min, t_max], the
fourth from [t_min, t]. Why so many over the whole range: decoding's first round masks every slot and
its later rounds walk down through every ratio, while on hard data the model's masked-slot accuracy
stays near 10% (250-700-shot synthetic movies) or 1% (CMTD-sized ones), so the self-paced ceiling stays
near t_min and would train on ratios decoding barely meets. Three in four instead of one in four
raised test F1 on three of four synthetic worlds of two structures (+0.02-0.03; flat on the fourth)
and AA by 0.01 on average (README, Training); the quarter under the ceiling keeps the
curriculum's easy ratios in view while t rises. `whole_range_share 0` runs a schedule alone, as the
paper's ablation does. Schedules (`TrainConfig.mask_schedule`):
- "self-paced" (the paper): t follows the model's competence, see `SelfPacedRatio`;
- "uniform": t = t_max from the start (no curriculum);
- "linear-asc" / "linear-desc": t moves linearly with training progress from t_min to t_max / back.

A time budget (`max_minutes`) shapes the schedule: the learning rate's warm-up and cosine decay, and
the linear mask schedules, run on progress = max(steps / planned steps, elapsed / budget), where the
planned steps come from the step rate measured over the first steps.
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
from .model import SSMPEncoder, num_parameters, unit_score_logits
from .selection import (
    BestWeights,
    ValidationSchedule,
    WeightAverage,
    offer_weights,
    split_validation,
    validation_scores,
)

# Steps timed before a time budget is turned into a planned step count (the first steps are skipped:
# they pay for allocator warm-up).
RATE_PROBE_STEPS, RATE_SKIP_STEPS = 12, 2
# Trailer views per movie pass under prefix attention (see `masked_loss`).
PREFIX_VIEWS = 4
# Weight of the shot-prior loss beside the slot loss (models with ModelConfig.shot_prior).
PRIOR_LOSS_WEIGHT = 1.0


@dataclass
class SelfPacedRatio:
    """The paper's self-paced mask ratio, with every μ the weight on the old value (an EMA):

        b ← μa·b + (1−μa)·a                                          smoothed competence
        t̃ ← μt·t + (1−μt)·(t_min + (t_max − t_min)·sigmoid(β·(b − 0.5)))
        t ← max(t, t̃)                                                 the ratio never falls

    With μa = 0.98 one batch moves b by at most 2%, so b averages the last ~50 batches' accuracy a
    and one lucky batch cannot set the ratio for good (the other reading, b ← 0.98·a + 0.02·b, keeps
    almost no memory). μt = 0.1 lets t follow t̃ within a few steps: the smoothing is in b.
    """

    t: float  # current ceiling of the mask ratio
    b: float = 0.0  # smoothed masked-slot accuracy

    def update(self, accuracy: float, cfg: TrainConfig) -> float:
        self.b = cfg.mu_a * self.b + (1 - cfg.mu_a) * accuracy
        target = cfg.t_min + (cfg.t_max - cfg.t_min) / (1 + math.exp(-cfg.beta * (self.b - 0.5)))
        self.t = max(self.t, cfg.mu_t * self.t + (1 - cfg.mu_t) * target)
        return self.t


def mask_ceiling(cfg: TrainConfig, pace: SelfPacedRatio, progress: float) -> float:
    """The ceiling t of the mask ratio at this point of training, for every schedule."""
    span = cfg.t_max - cfg.t_min
    if cfg.mask_schedule == "self-paced":
        return pace.t
    if cfg.mask_schedule == "uniform":
        return cfg.t_max
    if cfg.mask_schedule == "linear-asc":
        return cfg.t_min + span * progress
    return cfg.t_max - span * progress  # linear-desc


def lr_at(progress: float, cfg: TrainConfig) -> float:
    """Linear warm-up over the first `warmup_fraction` of training, then cosine decay to zero."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < cfg.warmup_fraction:
        return cfg.lr * max(progress / cfg.warmup_fraction, 1e-3)
    decay = (progress - cfg.warmup_fraction) / max(1e-9, 1 - cfg.warmup_fraction)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * decay))


def sample_slot_mask(slot_valid: torch.Tensor, ratios: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mask round(ratio_b · J_b) of trailer b's real slots (at least one), chosen uniformly."""
    lengths = slot_valid.sum(dim=1)
    count = (lengths.float() * ratios).round().clamp(min=1).long()
    noise = torch.rand(slot_valid.shape, generator=generator, device=slot_valid.device).masked_fill(~slot_valid, 2.0)
    rank = noise.argsort(dim=1).argsort(dim=1)  # a random rank per slot, real slots first
    return rank < count[:, None]


def sample_ratios(count: int, t_min: float, ceiling: float, t_max: float, whole_share: float,
                  generator: torch.Generator, device):
    """(count,) per-trailer mask ratios: a share `whole_share` uniform in [t_min, t_max], the rest uniform
    in [t_min, ceiling].

    The share drawn from the whole range keeps the ratios decoding meets (its first round masks every
    slot) in training even while a hard data set holds the self-paced ceiling near t_min.
    """
    ceiling = min(max(ceiling, t_min), t_max)
    whole = torch.rand(count, generator=generator, device=device) < whole_share
    top = torch.where(whole, torch.full_like(whole, t_max, dtype=torch.float32), ceiling)
    return t_min + (top - t_min) * torch.rand(count, generator=generator, device=device)


def masked_loss(
    model: SSMPEncoder, examples: list[Example], ratios, generator: torch.Generator, views: int = 1, logits_out=None
):
    """(loss, accuracy on masked slots as a 0-d tensor) for one batch.

    `logits_out`: a list that receives the whole (B · views, J, I) score matrix (validation reads it).

    `ratios`: a float or one per trailer view, (B · views,). Under prefix attention each movie's pass
    is shared by `views` differently masked copies of its trailer (the movie's states do not depend
    on the slots), so more of the trailer is supervised for little more compute; under full
    attention each view is its own pass.
    """
    device = next(model.parameters()).device
    movie, movie_valid = pad_batch([e.movie for e in examples], device)
    targets = pad_targets([e.targets for e in examples], device)  # (B, J), -1 in padded slots
    keys = model.shot_keys(F.normalize(movie.float(), dim=-1), movie_valid)  # what slots read and are scored on
    slot_in = slot_inputs(keys, targets)  # (B, J, D): unmasked slots hold k_{g_j}
    if views > 1:
        targets, slot_in = targets.repeat_interleave(views, 0), slot_in.repeat_interleave(views, 0)
    slot_valid = targets >= 0
    ratios = torch.as_tensor(ratios, dtype=torch.float32, device=device).expand(len(targets))
    masked = sample_slot_mask(slot_valid, ratios, generator)
    movie_rep, valid_rep = movie.repeat_interleave(views, 0), movie_valid.repeat_interleave(views, 0)
    if model.cfg.movie_attention == "prefix":
        states = model.prepare(movie, movie_valid).repeat_interleave(views)
        pred = model.step(states, slot_in, masked, slot_valid)
    else:
        pred, states = model.forward_with_states(movie_rep, valid_rep, slot_in, masked, slot_valid)  # (B · views, J, D)
    keys_rep = keys.repeat_interleave(views, 0)  # unit rows already
    all_logits = unit_score_logits(pred, keys_rep, valid_rep, model.cfg.temperature, states.shot_prior)
    if logits_out is not None:
        logits_out.append(all_logits)
    logits = all_logits[masked]  # (masked slots, I)
    loss = F.cross_entropy(logits, targets[masked])
    if states.shot_prior is not None:
        loss = loss + PRIOR_LOSS_WEIGHT * prior_loss(states.shot_prior, targets)
    accuracy = (logits.argmax(dim=-1) == targets[masked]).float().mean()
    return loss, accuracy.detach()


def prior_loss(shot_prior: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Which shots are in the trailer, whatever their slot: mean over trailer shots of -log softmax_i(b)_g.

    The slot loss teaches b only through the slots that happen to be masked; this gives every movie
    shot's logit a direct signal on every step.
    """
    log_p = F.log_softmax(shot_prior, dim=-1)  # (B, I); padded shots are -inf in b and never targets
    valid = targets >= 0
    return -(log_p.gather(1, targets.clamp(min=0)) * valid).sum() / valid.sum()


class StepPlan:
    """How far training has come, in steps and, under a time budget, in time."""

    def __init__(self, planned_steps: int, max_minutes: float | None):
        self.planned = planned_steps
        self.budget_s = None if max_minutes is None else 60.0 * max_minutes
        self.start = time.monotonic()
        self.probe_start: float | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def progress(self, step: int) -> float:
        by_steps = step / self.planned
        by_time = 0.0 if self.budget_s is None else self.elapsed() / self.budget_s
        return min(1.0, max(by_steps, by_time))

    def done(self, step: int) -> bool:
        return step >= self.planned or (self.budget_s is not None and self.elapsed() >= self.budget_s)

    def after_step(self, step: int) -> int | None:
        """Re-plan the step count from the measured rate once; return the new plan when it changed."""
        if self.budget_s is None or step > RATE_SKIP_STEPS + RATE_PROBE_STEPS:
            return None
        if step == RATE_SKIP_STEPS:
            self.probe_start = time.monotonic()
        elif step == RATE_SKIP_STEPS + RATE_PROBE_STEPS:
            rate = RATE_PROBE_STEPS / (time.monotonic() - self.probe_start)
            fits = step + int(rate * (self.budget_s - self.elapsed()))
            self.planned = max(step + 1, min(self.planned, fits))
            return self.planned
        return None


def to_device(examples: list[Example], device: torch.device) -> list[Example]:
    """Move every movie and target onto the training device once, not once per step."""
    return [
        Example(e.name, torch.from_numpy(e.movie).to(device), e.trailer, torch.from_numpy(e.targets).to(device))
        for e in examples
    ]




def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only; biases and norm gains are not decayed."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=cfg.betas,
    )


def end_training(model, step: int, plan: "StepPlan", cfg: TrainConfig, held_out, best, validate, log,
                 average: WeightAverage | None = None) -> None:
    """After the last step, every method alike: refuse an empty run, say why it stopped, and load the
    weights held-out validation chose (validating the last step first), or without held-out movies
    the weight average of the last step when there is one."""
    if step == 0:
        raise InputError("training stopped before its first step; raise --max-minutes")
    if step < plan.planned:
        print(f"--max-minutes {cfg.max_minutes:g} reached at step {step}; saving", file=log, flush=True)
    if held_out:
        validate(step)
        model.load_state_dict(best.state)
        which = "the weight average" if best.scores.get("averaged") else "the weights"
        print(f"saving {which} of step {best.step} (lowest loss on the held-out movies)", file=log, flush=True)
    elif average is not None:
        model.load_state_dict(average.average)

def training_provenance(data_root, movies: int, step: int, plan: "StepPlan", held_out, best, cfg: TrainConfig,
                        device, final: dict, skip_config: tuple = ()) -> dict:
    """What a checkpoint's config.json says about the run that made it (every method writes the same)."""
    return {
        "data": str(data_root),
        "split": "train",
        "movies": movies,
        "steps": step,
        "planned_steps": plan.planned,
        "stopped_early": step < plan.planned,
        "validation_movies": len(held_out),
        "selected_step": best.step if held_out else step,
        "validation": best.scores,
        "seed": cfg.seed,
        "device": str(device),
        "minutes": round(plan.elapsed() / 60, 2),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items() if k not in skip_config},
        "final": final,
    }

def train(
    data_root: str | Path,
    out_dir: str | Path,
    model_config: ModelConfig,
    cfg: TrainConfig,
    force: bool = False,
    log: TextIO = sys.stderr,
    log_every_s: float = 10.0,
) -> dict:
    from .engine import resolve_device

    out_dir = Path(out_dir)
    check_checkpoint_dir(out_dir, force)  # fail before training, not after
    device = resolve_device(cfg.device)
    examples = to_device(load_split(data_root, "train", model_config.feature_dim), device)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    order_rng = np.random.default_rng(cfg.seed)
    examples, held_out = split_validation(examples, cfg.validation_fraction, order_rng)
    model = SSMPEncoder(model_config).to(device).train()
    views = cfg.views or (PREFIX_VIEWS if model_config.movie_attention == "prefix" else 1)
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    plan = StepPlan(cfg.epochs * steps_per_epoch, cfg.max_minutes)
    pace = SelfPacedRatio(t=cfg.t_min)
    budget = "" if cfg.max_minutes is None else f", at most {cfg.max_minutes:g} min"
    selection = (
        f"{len(held_out)} held out to select the best weights"
        if held_out
        else "no movies held out (too few): the last weights are saved"
    )
    print(
        f"training {num_parameters(model) / 1e6:.2f}M parameters ({model_config.movie_attention} attention) on "
        f"{len(examples)} movies ({selection}), {views} trailer view(s) per movie, device {device}, mask schedule "
        f"{cfg.mask_schedule} ({cfg.whole_range_share:.0%} of trailers over the whole ratio range): up to "
        f"{plan.planned} steps ({cfg.epochs} epochs of {steps_per_epoch}){budget}",
        file=log,
        flush=True,
    )
    best = BestWeights()
    schedule = ValidationSchedule(enabled=bool(held_out))
    average = WeightAverage.start(model, cfg.ema_decay)

    def validate(step: int) -> None:
        for prefix, scores, kept in offer_weights(model, average, best, step,
                                                  lambda m: validation_scores(m, held_out, cfg.seed)):
            print(f"{prefix}: first-round F1 {scores['f1']:.3f}  loss {scores['loss']:.3f}"
                  + ("  (best so far)" if kept else ""), file=log, flush=True)
    last_log = time.monotonic()
    recent: list[tuple[float, float]] = []
    step = 0
    batches = iter(())
    while not plan.done(step):
        batch = next(batches, None)
        if batch is None:  # a new epoch: a new order
            perm = order_rng.permutation(len(examples))
            batches = iter([perm[k : k + cfg.batch_size] for k in range(0, len(perm), cfg.batch_size)])
            continue
        progress = plan.progress(step)
        lr = lr_at(progress, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ceiling = mask_ceiling(cfg, pace, progress)
        ratios = sample_ratios(len(batch) * views, cfg.t_min, ceiling, cfg.t_max, cfg.whole_range_share,
                               generator, device)
        loss, accuracy = masked_loss(model, [examples[i] for i in batch], ratios, generator, views)
        if not torch.isfinite(loss):  # a host sync that float(loss) below pays anyway
            raise InputError(
                f"training diverged: the loss is {float(loss.detach())} at step {step + 1} (learning rate {lr:.3g}); "
                "nothing was saved, try a lower --lr"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if average is not None:
            average.update(model)
        accuracy = float(accuracy)
        pace.update(accuracy, cfg)
        recent = (recent + [(float(loss.detach()), accuracy)])[-50:]
        step += 1
        replanned = plan.after_step(step)
        if replanned is not None:
            print(
                f"planned {replanned} steps to fit --max-minutes {cfg.max_minutes:g} "
                f"(measured {RATE_PROBE_STEPS} steps); warm-up and decay span them",
                file=log,
                flush=True,
            )
        schedule.after_step(step, plan, validate)
        now = time.monotonic()
        if now - last_log >= log_every_s or plan.done(step):
            last_log = now
            mean_loss, mean_acc = np.mean(recent, axis=0)
            print(
                f"step {step}/{plan.planned}  loss {mean_loss:.3f}  acc {mean_acc:.3f}  mask ceiling {ceiling:.3f}  "
                f"lr {lr:.1e}  {plan.elapsed():.0f}s",
                file=log,
                flush=True,
            )
    end_training(model, step, plan, cfg, held_out, best, validate, log, average)
    mean_loss, mean_acc = np.mean(recent, axis=0)
    final = {
        "loss": float(mean_loss),
        "accuracy": float(mean_acc),
        "mask_ceiling": mask_ceiling(cfg, pace, plan.progress(step)),
        "smoothed_accuracy": pace.b,
    }
    provenance = training_provenance(data_root, len(examples), step, plan, held_out, best, cfg, device, final)
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):  # the last step's update
        raise InputError(
            f"training diverged: the weights hold NaN or Inf after step {step} (learning rate {cfg.lr:g}); "
            "nothing was saved, try a lower --lr"
        )
    save_checkpoint(model.eval(), out_dir, provenance, force=True)
    return {"out": str(out_dir), "steps": step, **final}
