"""Model selection on movies held out from the training split.

A few hundred movies are few for a Transformer: trained for the whole budget, the small model fits
its training movies and gets worse on new ones (measured: on held-out-style data the test F1 peaks
well before the end of a 12-minute run). So `train` sets a share of the training movies aside, scores
the model on them at regular points, and saves the weights that scored best there.

The score is the training loss on those movies at a few mask ratios, including decoding's first
round (every slot masked), with fixed masks so every point sees the same problem. The first-round F1
is logged beside it: with every slot masked, rank the movie's shots by their best probability over
the slots and take as many as the trailer has; the share of true trailer shots among them.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

from .data import Example

# Share of the training movies held out for model selection, and the least a split must have.
VALIDATION_FRACTION = 0.1
MIN_VALIDATION_MOVIES = 4
# Mask ratios of the validation loss: decoding's first round (all masked) and a half-locked trailer.
VALIDATION_RATIOS = (1.0, 0.5)
# How many times over a run the model is scored (evenly spaced in training progress), and the most
# of the run's time validation may take (on big movies and a short budget it skips points).
VALIDATION_POINTS = 24
VALIDATION_TIME_SHARE = 0.05


class ValidationSchedule:
    """When a training loop scores its held-out movies: at VALIDATION_POINTS evenly spaced points of
    training progress, skipping points while validation has taken more than VALIDATION_TIME_SHARE of
    the run's time. SSMP's trainer and the baselines' share it."""

    def __init__(self, enabled: bool):
        self.enabled = enabled  # no held-out movies: never
        self.next_point = 1  # in VALIDATION_POINTS-ths of training progress
        self.spent_s = 0.0

    def after_step(self, step: int, plan, validate) -> None:
        """Call `validate(step)` if this step reached the next point and the time share allows."""
        due = self.enabled and plan.progress(step) >= self.next_point / VALIDATION_POINTS and not plan.done(step)
        if not due or self.spent_s > VALIDATION_TIME_SHARE * plan.elapsed():
            return
        start = time.monotonic()
        validate(step)
        self.spent_s += time.monotonic() - start
        self.next_point = int(plan.progress(step) * VALIDATION_POINTS) + 1


def split_validation(examples: list[Example], fraction: float, rng: np.random.Generator):
    """(train, validation): a seeded random share of the movies, none when too few would be left."""
    count = int(round(fraction * len(examples)))
    if count < MIN_VALIDATION_MOVIES or len(examples) - count < MIN_VALIDATION_MOVIES:
        return examples, []
    order = rng.permutation(len(examples))
    held = set(order[:count].tolist())
    return [e for k, e in enumerate(examples) if k not in held], [e for k, e in enumerate(examples) if k in held]


def first_round_f1(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """logits (J, I) with every slot masked; the share of true shots among the J best by max_j P."""
    J = targets.shape[0]
    best_per_shot = logits.softmax(dim=-1).amax(dim=0)  # (I,)
    chosen = best_per_shot.topk(J).indices
    return float(torch.isin(chosen, targets).float().sum()) / J


@torch.no_grad()
def validation_scores(model, examples: list[Example], seed: int = 0) -> dict:
    """{"f1": mean first-round F1, "loss": mean training loss over VALIDATION_RATIOS} in eval mode.

    One movie pass per movie under prefix attention: its trailer's views at every ratio share it.
    """
    from .train import masked_loss

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)  # the same masks at every point
    ratios = torch.tensor(VALIDATION_RATIOS, device=device)
    f1s, losses = [], []
    for e in examples:
        logits = []
        loss, _ = masked_loss(model, [e], ratios, generator, views=len(VALIDATION_RATIOS), logits_out=logits)
        losses.append(float(loss))
        f1s.append(first_round_f1(logits[0][0], e.targets))  # view 0: ratio 1, every slot masked
    model.train(was_training)
    return {"f1": float(np.mean(f1s)), "loss": float(np.mean(losses))}


class BestWeights:
    """The weights at the validation point of lowest loss.

    The loss, not the first-round F1: on a dozen held-out movies the F1 moves by a few points from one
    point to the next by chance, while the loss is a smooth average over every masked slot and every
    shot (measured on held-out-style data: both pick points of the same test F1; the loss picks
    them more steadily).
    """

    def __init__(self):
        self.state: dict | None = None
        self.key = -math.inf
        self.step = 0
        self.scores: dict = {}

    def offer(self, model, step: int, scores: dict) -> bool:
        key = -scores["loss"]
        if key <= self.key:
            return False
        self.key, self.step, self.scores = key, step, scores
        self.state = copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})
        return True


class WeightAverage:
    """An exponential moving average of the weights (Polyak averaging), when `TrainConfig.ema_decay` > 0:
    validation scores it beside the live weights and keeps whichever has the lower held-out loss.

    Why: held-out selection keeps weights from early in a run (on a few hundred movies the loss on new
    ones bottoms out in the first quarter), while the learning rate is still near its peak and every
    step moves each weight by about lr. The average over the last ~1/(1 - decay) steps keeps what those
    steps agree on and drops their step-to-step noise, the way a decayed learning rate would, without
    stopping the run. The decay ramps up as (1 + n) / (10 + n) so the first updates are not held back
    by the initial weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        keep = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.average[k].lerp_(v.detach(), 1.0 - keep)
            else:
                self.average[k].copy_(v)

    @staticmethod
    def start(model: torch.nn.Module, decay: float) -> "WeightAverage | None":
        """The average a training loop keeps, or None when `decay` is 0 (the raw weights)."""
        return WeightAverage(model, decay) if decay else None

    @contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """The model holds the averaged weights inside the block, its own again after it."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.average)
        try:
            yield model
        finally:
            model.load_state_dict(own)


def offer_weights(model: torch.nn.Module, average: WeightAverage | None, best: BestWeights, step: int, score) -> list:
    """Score the live weights and, when there is a weight average, the averaged ones; offer each to
    `best`. Returns (log line prefix, scores, kept) per candidate.

    Why both: the average is better where selection keeps early weights of a run whose learning rate is
    still high, and it lags behind a model that is still improving fast (a short run on big movies).
    The held-out loss tells the two apart at every point (measured, see README)."""
    candidates = [(f"validation at step {step}", False, nullcontext(model))]
    if average is not None:
        candidates.append((f"validation at step {step}, averaged weights", True, average.swapped_in(model)))
    results = []
    for prefix, averaged, weights in candidates:
        with weights:
            scores = score(model)
            results.append((prefix, scores, best.offer(model, step, {**scores, "averaged": averaged})))
    return results
