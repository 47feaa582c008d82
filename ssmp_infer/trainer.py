"""The training loop every method shares: SSMP and the baselines it is compared with.

A method brings its model, its loss and its way of making trailers (`Method`); this loop brings the
rest, so that an improvement that is not SSMP's own reaches every method of a comparison:
- the data, split into training movies and movies held out for model selection;
- augmentation: crops of long movies (`crop`) and re-encoding noise on the features (`augment`);
- the budget (`Budget`): under `--max-minutes` the learning rate's warm-up and decay follow the share
  of the budget that has elapsed, so a run uses its whole budget however the machine's speed changes,
  and it stops in time to validate and save within it;
- model selection by what users get: at points through the run the held-out movies' trailers are made
  as `eval` makes them and scored (F1 and order agreement), and the best weights are kept
  (`selection.py`), the live ones or their moving average;
- early stopping (`--patience`): a run that has not improved for that many validation points stops;
- the checkpoint and its provenance.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator, Protocol, TextIO

import numpy as np
import torch

from .checkpoint import check_checkpoint_dir, save_checkpoint
from .config import TrainConfig
from .data import Example, load_split
from .errors import InputError
from .metrics import score_trailer, summarise
from .model import num_parameters
from .calibrate import EXTRA_DECODES, VALIDATION_WEIGHTS, best_weight, choose_prior_weight
from .selection import BestWeights, ValidationSchedule, WeightAverage, selection_key, split_validation


class Method(Protocol):
    """What a training method gives the shared loop."""

    model: torch.nn.Module
    name: str
    # Whether its decoding weighs a shot prior (`ssmp_infer.calibrate`): the loop then picks the weight
    # on the held-out movies together with the weights, and `trailers` takes `weights`.
    calibrates_prior: bool

    def loss(self, examples: list[Example], progress: float) -> tuple[torch.Tensor, dict]:
        """(scalar loss, floats for the log) of one batch at this point of training."""

    def after_step(self, stats: dict) -> None:
        """What the method updates from a step's log floats (SSMP's self-paced ratio)."""

    def trailers(self, examples: list[Example]) -> Iterator[list[int]]:
        """Each movie's trailer in turn (movie shot indices in trailer order, as long as its true one),
        made as `ssmp-infer eval` makes them, from the model's current weights. A method that
        calibrates its prior also takes `weights` and then yields a tuple per movie, one per weight."""

    def describe(self) -> str:
        """A few words for the first log line."""


# Kept at the end of a time budget for writing the checkpoint (a few MB).
SAVE_S = 1.0


class Budget:
    """How far a run has come: steps against the epochs' cap and, under a time budget, time against it.

    progress = max(steps / max_steps, elapsed / budget). Under a time budget the second term decides
    on any machine: the learning rate's warm-up and decay follow the clock, so a run that speeds up
    (the machine frees up) or slows down (another job starts) still warms up, decays and ends on
    time. A step rate measured once at the start would fix the schedule for good (measured: a run
    that planned its steps on a loaded machine ended after 1.1 of its 3 minutes).

    `reserve_s`: what the run must keep for after its last step (the last validation and the save),
    so that it ends within the budget, not one validation after it.
    """

    def __init__(self, max_steps: int, max_minutes: float | None, clock: Callable[[], float] = time.monotonic):
        self.max_steps = max_steps
        self.budget_s = None if max_minutes is None else 60.0 * max_minutes
        self.clock = clock
        self.start = clock()
        self.reserve_s = 0.0

    def elapsed(self) -> float:
        return self.clock() - self.start

    def progress(self, step: int) -> float:
        by_time = 0.0 if self.budget_s is None else (self.elapsed() + self.reserve_s) / self.budget_s
        return min(1.0, max(step / self.max_steps, by_time))

    def out_of_time(self) -> bool:
        """No room for another step: what is left is kept for the last validation and the save."""
        return self.budget_s is not None and self.elapsed() + self.reserve_s >= self.budget_s

    def has_room(self, seconds: float) -> bool:
        return self.budget_s is None or self.elapsed() + seconds + SAVE_S < self.budget_s

    def past_end(self) -> bool:
        """The budget is spent, but for the save: work still under way (a validation) must stop."""
        return not self.has_room(0.0)

    def done(self, step: int) -> bool:
        return step >= self.max_steps or self.out_of_time()

    def where(self, step: int) -> str:
        """Where a log line stands: the share of the budget (or of the steps) behind it."""
        if self.budget_s is None:
            return f"{self.elapsed():.0f}s, {step / self.max_steps:.0%} of {self.max_steps} steps"
        return f"{self.elapsed():.0f}s, {self.progress(step):.0%} of {self.budget_s / 60:g} min"


def lr_at(progress: float, cfg: TrainConfig) -> float:
    """Linear warm-up over the first `warmup_fraction` of training, then cosine decay to zero."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < cfg.warmup_fraction:
        return cfg.lr * max(progress / cfg.warmup_fraction, 1e-3)
    decay = (progress - cfg.warmup_fraction) / max(1e-9, 1 - cfg.warmup_fraction)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * decay))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only; biases and norm gains are not decayed."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=cfg.betas,
    )


def to_device(examples: list[Example], device: torch.device) -> list[Example]:
    """Move every movie and target onto the training device once, not once per step."""
    return [
        Example(e.name, torch.from_numpy(e.movie).to(device), e.trailer, torch.from_numpy(e.targets).to(device))
        for e in examples
    ]


def crop(examples: list[Example], max_shots: int, rng: np.random.Generator) -> list[Example]:
    """Each movie longer than `max_shots` (0: none) cut to a random window of that many shots, with the
    trailer slots whose shots lie inside it, in trailer order; the window records where it lies, so
    its shots keep the positions they have in the whole movie (`model.position_features`).

    Why: a step's cost grows with the square of the movie's length (attention), so on CMTD-sized
    movies (~1900 shots) a 512-shot crop costs a tenth of the whole movie (measured: 0.2 s against
    2-5 s a step on one CPU thread), and a budget buys ten times the steps; and a movie seen through
    ever other windows is harder to memorise than the same whole movie every epoch. A window that
    holds no trailer shot is drawn again (then the whole movie is used).
    """
    if max_shots <= 0:
        return examples
    out = []
    for e in examples:
        shots = len(e.movie)
        if shots <= max_shots:
            out.append(e)
            continue
        for _ in range(4):
            start = int(rng.integers(0, shots - max_shots + 1))
            inside = (e.targets >= start) & (e.targets < start + max_shots)
            if bool(inside.any()):
                out.append(Example(e.name, e.movie[start : start + max_shots], e.trailer, e.targets[inside] - start,
                                   (start, shots)))
                break
        else:
            out.append(e)
    return out


def drop_shots(examples: list[Example], rate: float, generator: torch.Generator) -> list[Example]:
    """Each movie with a random share `rate` of the shots no trailer slot names left out (0: unchanged),
    the targets renumbered to the shots that remain.

    Why: another cut of the same film (a scene trimmed, an insert gone) is still the same film, and the
    trailer's shots are still its trailer material. With a hundred-odd training movies a model learns
    each movie's exact run of shots; a movie seen with ever other shots gone has neighbours, scene
    lengths and positions that differ each time it comes round, and only what makes a shot trailer
    material stays.
    """
    if rate <= 0:
        return examples
    out = []
    for e in examples:
        keep = torch.rand(len(e.movie), generator=generator, device=e.movie.device) >= rate
        keep[e.targets] = True
        renumber = torch.cumsum(keep, dim=0) - 1
        out.append(Example(e.name, e.movie[keep], e.trailer, renumber[e.targets], e.window))
    return out


def augment(examples: list[Example], noise: float, generator: torch.Generator) -> list[Example]:
    """The batch with re-encoding noise on every movie shot: each feature plus isotropic noise of
    `noise` times its norm (0: unchanged). The targets stay: they name shots, not vectors.

    Why: a few hundred movies are few, and a model that sees each shot's exact vector epoch after
    epoch learns those vectors (measured: held-out F1 peaks early and falls while the training loss
    keeps falling). The default (0.1) is below what re-encoding a shot changes (a trailer's copy of a
    shot has cosine ~0.97 with the film's, 0.25 of its norm), so it costs no signal that survives
    re-encoding; 0.25 slowed short runs down (README, Training).
    """
    if noise <= 0:
        return examples
    out = []
    for e in examples:
        movie = e.movie.float()
        direction = torch.randn(movie.shape, generator=generator, device=movie.device)
        direction = direction * (movie.norm(dim=-1, keepdim=True) / direction.norm(dim=-1, keepdim=True))
        out.append(Example(e.name, movie + noise * direction, e.trailer, e.targets, e.window))
    return out


@torch.no_grad()
def trailer_scores(method: Method, examples: list[Example], stop: Callable[[], bool] = lambda: False,
                   weights: tuple[float, ...] | None = None) -> dict | None:
    """The held-out movies' trailers made by `method` and scored as `eval` scores them (tolerance 0);
    None when `stop()` turned true before every movie had its trailer (the point is dropped: a score
    over some of the movies is not comparable with the others). With `weights` (a method that weighs a
    shot prior), {weight: scores}, every movie decoded at each weight.

    Movie by movie, so that a validation slowed down by another job on the machine cannot carry a run
    past its budget by more than one movie's trailer."""
    was_training = method.model.training
    method.model.eval()
    try:
        preds = []
        for trailer in method.trailers(examples, weights) if weights else method.trailers(examples):
            if stop():  # lazily: one movie's trailers at a time
                return None
            preds.append(trailer if weights else (trailer,))
    finally:
        method.model.train(was_training)
    by_weight = {}
    for k, weight in enumerate(weights or (None,)):
        scores = summarise([score_trailer(p[k], [int(g) for g in e.targets.tolist()], 0) for p, e in zip(preds, examples)])
        by_weight[weight] = {"f1": scores["f1"], "aa": scores["aa"], "key": selection_key(scores)}
    return by_weight if weights else by_weight[None]


def fit(method: Method, data_root, out_dir, cfg: TrainConfig, force: bool = False, log: TextIO = sys.stderr,
        log_every_s: float = 10.0, clock: Callable[[], float] = time.monotonic, skip_config: tuple = ()) -> dict:
    """Train `method.model` on ROOT/train under `cfg` and save it to `out_dir` as a `method.name`
    checkpoint; returns the run's summary. `clock`: where time comes from (tests pass a fake one)."""
    from .engine import resolve_device

    out_dir = Path(out_dir)
    check_checkpoint_dir(out_dir, force)  # fail before training, not after
    device = resolve_device(cfg.device)
    model = method.model
    examples = to_device(load_split(data_root, "train", model.cfg.feature_dim), device)
    torch.manual_seed(cfg.seed)
    noise_generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    drop_generator = torch.Generator(device=device).manual_seed(cfg.seed + 2)
    order_rng = np.random.default_rng(cfg.seed)
    examples, held_out = split_validation(examples, cfg.validation_fraction, order_rng)
    model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    budget = Budget(cfg.epochs * steps_per_epoch, cfg.max_minutes, clock)
    limit = "" if cfg.max_minutes is None else f", at most {cfg.max_minutes:g} min (the schedule follows the clock)"
    selection = (f"{len(held_out)} held out to select the weights whose trailers score best"
                 if held_out else "no movies held out (too few): the last weights are saved")
    print(f"training {method.name}: {num_parameters(model) / 1e6:.2f}M parameters on {len(examples)} movies "
          f"({selection}), {method.describe()}, device {device}: up to {budget.max_steps} steps "
          f"({cfg.epochs} epochs of {steps_per_epoch}){limit}", file=log, flush=True)
    best = BestWeights()
    schedule = ValidationSchedule(enabled=bool(held_out), patience=cfg.patience)
    average = WeightAverage.start(model, cfg.ema_decay)

    validated = [-1]  # the step of the last validation
    calibrates = bool(held_out) and getattr(method, "calibrates_prior", False)
    weights = VALIDATION_WEIGHTS if calibrates else None
    if calibrates:
        model.cfg.prior_weight = 1.0  # the scores as trained, until a weight is chosen

    def validate(step: int) -> bool:
        """Score the held-out trailers at `step`; False when the budget ran out before they were made."""
        validated[0] = step
        started = clock()
        candidates = [("", False, None)] + ([(", averaged weights", True, average)] if average is not None else [])
        for label, averaged, source in candidates:
            with source.swapped_in(model) if source is not None else nullcontext(model):
                scores = trailer_scores(method, held_out, budget.past_end, weights)
                if scores is None:
                    print(f"validation at step {step}{label}: stopped, the budget ran out", file=log, flush=True)
                    return False
                if weights:  # the point's score is its best weight's
                    weight = best_weight(scores)
                    scores = {**scores[weight], "prior_weight": weight, "by_weight": scores}
                scores["averaged"] = averaged
                kept = best.offer(model, step, scores)
            aa = "-" if scores["aa"] is None else f"{scores['aa']:.3f}"
            at = f" (prior weight {scores['prior_weight']:g})" if weights else ""
            print(f"validation at step {step}{label}: F1 {scores['f1']:.3f}  AA {aa}{at}"
                  + ("  (best so far)" if kept else ""), file=log, flush=True)
        schedule.record(step, best.step, clock() - started)
        # the last validation must fit in the budget too: keep room for one more, for the prior weights'
        # decodes past the point's own (a point decodes live and averaged weights, each at every one of
        # VALIDATION_WEIGHTS), and for the save
        extra = EXTRA_DECODES * schedule.longest_s / (len(candidates) * len(weights)) if calibrates else 0.0
        budget.reserve_s = 1.5 * schedule.longest_s + extra + SAVE_S
        return True

    last_log, recent, step, batches, stopped = clock(), [], 0, iter(()), "epochs"
    while True:
        if step and budget.out_of_time():  # a budget buys at least one step
            stopped = "budget"
            break
        if step >= budget.max_steps:
            break
        if schedule.exhausted():
            stopped = "patience"
            break
        batch = next(batches, None)
        if batch is None:  # a new epoch: a new order
            perm = order_rng.permutation(len(examples))
            batches = iter([perm[k : k + cfg.batch_size] for k in range(0, len(perm), cfg.batch_size)])
            continue
        progress = budget.progress(step)
        lr = lr_at(progress, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = drop_shots([examples[i] for i in batch], cfg.shot_drop, drop_generator)
        batch = crop(batch, cfg.crop_shots, order_rng)
        loss, stats = method.loss(augment(batch, cfg.feature_noise, noise_generator), progress)
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
        stats = {"loss": float(loss.detach()), **stats}
        method.after_step(stats)
        recent = (recent + [stats])[-50:]
        step += 1
        # a point mid-run only when this validation and the last one both still fit in the budget
        if schedule.due(budget.progress(step), budget.elapsed()) and budget.has_room(3 * schedule.longest_s):
            if not validate(step):
                stopped = "budget"
                break
        if clock() - last_log >= log_every_s:
            last_log = clock()
            print(f"step {step}  {_means(recent)}  lr {lr:.1e}  ({budget.where(step)})", file=log, flush=True)
    if step == 0:
        raise InputError("training stopped before its first step; raise --max-minutes")
    print(f"step {step}  {_means(recent)}  ({budget.where(step)})", file=log, flush=True)
    print(_stop_reason(stopped, step, cfg, schedule), file=log, flush=True)
    if held_out and validated[0] != step and not budget.past_end():
        validate(step)
    if best.state is not None:
        model.load_state_dict(best.state)
        which = "the weight average" if best.scores.get("averaged") else "the weights"
        print(f"saving {which} of step {best.step} (the best trailers on the held-out movies: F1 "
              f"{best.scores['f1']:.3f})", file=log, flush=True)
    elif held_out:
        print("saving the last weights: no validation finished within the budget", file=log, flush=True)
    elif average is not None:
        model.load_state_dict(average.average)
    if calibrates and best.state is not None:
        choose_prior_weight(model.cfg, lambda: trailer_scores(method, held_out, budget.past_end),
                            best.scores["by_weight"], log=lambda line: print(line, file=log, flush=True))
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):  # the last step's update
        raise InputError(
            f"training diverged: the weights hold NaN or Inf after step {step} (learning rate {cfg.lr:g}); "
            "nothing was saved, try a lower --lr"
        )
    final = {k: float(v) for k, v in _mean_dict(recent).items()}
    provenance = {
        "data": str(data_root),
        "split": "train",
        "movies": len(examples),
        "steps": step,
        "max_steps": budget.max_steps,
        "stopped": stopped,
        "validation_movies": len(held_out),
        "selected_step": best.step if best.state is not None else step,
        "validation": best.scores,
        "prior_weight": getattr(model.cfg, "prior_weight", None),
        "seed": cfg.seed,
        "device": str(device),
        "minutes": round(budget.elapsed() / 60, 2),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items() if k not in skip_config},
        "final": final,
    }
    save_checkpoint(model.eval(), out_dir, provenance, force=True, method=method.name)
    return {"out": str(out_dir), "method": method.name, "steps": step, "stopped": stopped, **final}


def _mean_dict(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def _means(rows: list[dict]) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in _mean_dict(rows).items())


def _stop_reason(stopped: str, step: int, cfg: TrainConfig, schedule: ValidationSchedule) -> str:
    if stopped == "budget":
        return f"--max-minutes {cfg.max_minutes:g} reached at step {step} (time kept for the last validation and the save)"
    if stopped == "patience":
        return (f"stopping at step {step}: the held-out trailers did not improve over the last {cfg.patience} "
                f"validation points (--patience)")
    return f"all {cfg.epochs} epochs done at step {step}"
