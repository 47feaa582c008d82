"""Model selection on movies held out from the training split.

A few hundred movies are few for a Transformer: trained for the whole budget, a small model fits
its training movies and gets worse on new ones (measured: held-out F1 peaks well before the end of
a 12-minute run, while the training loss keeps falling). So training sets a share of the training
movies aside, makes their trailers at regular points of the run exactly as `eval` would, and keeps
the weights whose trailers score best there.

Why trailers and not the loss: the loss is mostly about which slot a shot goes to, and on held-out
data it kept weights whose trailers were far from the best of the run (measured on held-out data of
another structure: the point of lowest loss had a first-round F1 of 0.26 on the validation movies,
the run's best point 0.36). The score is what users get: F1 of the shots chosen, plus a fifth of the
order agreement (`selection_key`).
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager

import numpy as np
import torch

from .data import Example

# Share of the training movies held out for model selection and the least a split must have. The
# held-out set stops growing at MAX_VALIDATION_SLOTS trailer slots: what makes a point's F1 stable is
# the number of slots scored (~600: a standard error near 0.02), and decoding CMTD-sized movies at
# every point costs a share of the run (24 movies of 1900 shots would cost more than the 10% allowed).
VALIDATION_FRACTION = 0.15
MIN_VALIDATION_MOVIES = 4
MAX_VALIDATION_SLOTS = 600
# How many times over a run the model is scored (evenly spaced in training progress), and the most
# of the run's time validation may take (on big movies and a short budget it skips points).
VALIDATION_POINTS = 24
VALIDATION_TIME_SHARE = 0.1
# Weight of order agreement beside F1 in the selection key: an AA 0.1 higher is worth F1 0.02.
AA_WEIGHT = 0.2


def selection_key(scores: dict) -> float:
    """What the weights are chosen by: held-out F1 + AA_WEIGHT · AA (AA 0.5, chance, when undefined)."""
    aa = scores.get("aa")
    return scores["f1"] + AA_WEIGHT * (0.5 if aa is None else aa)


class ValidationSchedule:
    """When a training loop scores its held-out movies, and when it has waited long enough.

    Points are VALIDATION_POINTS evenly spaced in training progress, skipped while validation has
    taken more than VALIDATION_TIME_SHARE of the run's time. `patience` (0: never) ends a run whose
    best point lies that many points back: a data set too small for its budget stops early instead
    of overfitting for minutes. Every method's training loop shares it."""

    def __init__(self, enabled: bool, patience: int = 0):
        self.enabled = enabled  # no held-out movies: never
        self.patience = patience
        self.next_point = 1  # in VALIDATION_POINTS-ths of training progress
        self.spent_s = 0.0
        self.longest_s = 0.0
        self.points_since_best = 0

    def due(self, progress: float, elapsed_s: float) -> bool:
        """Whether this point of the run (progress in [0, 1]) should be validated."""
        if not self.enabled or progress >= 1.0 or progress < self.next_point / VALIDATION_POINTS:
            return False
        if self.spent_s > VALIDATION_TIME_SHARE * elapsed_s:
            return False
        self.next_point = int(progress * VALIDATION_POINTS) + 1
        return True

    def record(self, step: int, best_step: int, seconds: float) -> None:
        """A validation at `step` took `seconds`; the best weights so far are those of `best_step`."""
        self.spent_s += seconds
        self.longest_s = max(self.longest_s, seconds)
        self.points_since_best = 0 if best_step == step else self.points_since_best + 1

    def exhausted(self) -> bool:
        return bool(self.patience) and self.points_since_best >= self.patience


def split_validation(examples: list[Example], fraction: float, rng: np.random.Generator):
    """(train, validation): a seeded random share of the movies, fewer when their trailers already hold
    MAX_VALIDATION_SLOTS slots (never fewer than MIN_VALIDATION_MOVIES), none when too few would be left."""
    count = int(round(fraction * len(examples)))
    if count < MIN_VALIDATION_MOVIES or len(examples) - count < MIN_VALIDATION_MOVIES:
        return examples, []
    order = rng.permutation(len(examples))
    slots = np.cumsum([len(examples[k].targets) for k in order[:count]])
    count = min(count, max(MIN_VALIDATION_MOVIES, int(np.searchsorted(slots, MAX_VALIDATION_SLOTS)) + 1))
    held = set(order[:count].tolist())
    return [e for k, e in enumerate(examples) if k not in held], [e for k, e in enumerate(examples) if k in held]


class BestWeights:
    """The weights at the validation point of the highest `selection_key` (the earliest on a tie)."""

    def __init__(self):
        self.state: dict | None = None
        self.key = -math.inf
        self.step = 0
        self.scores: dict = {}

    def offer(self, model, step: int, scores: dict) -> bool:
        if scores["key"] <= self.key:
            return False
        self.key, self.step, self.scores = scores["key"], step, scores
        self.state = copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})
        return True


class WeightAverage:
    """An exponential moving average of the weights (Polyak averaging), when `TrainConfig.ema_decay` > 0:
    validation scores it beside the live weights and keeps whichever makes the better held-out trailers.

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
