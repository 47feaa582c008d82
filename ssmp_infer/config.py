"""One dataclass per concern: the model, the decoding, the training. Derived fields in __post_init__."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import InputError

# CMTD trailers hold about 3.7% of their movie's shots (60-80 of ~1909); the default trailer length.
DEFAULT_TRAILER_FRACTION = 0.037

MOVIE_ATTENTION = ("full", "prefix")
DEFAULT_MOVIE_ATTENTION = "prefix"
MAX_CONTEXT_PROFILE = 16  # the context branch's similarity profile reaches at most this many shots each side
MASK_SCHEDULES = ("self-paced", "uniform", "linear-asc", "linear-desc")


@dataclass
class NetworkSize:
    """What SSMP's encoder and the baselines' networks share: the Transformer's size and the scoring's
    temperature. `feature_dim` is the shot-feature size a model reads (ImageBind: 1024)."""

    feature_dim: int = 1024
    d_model: int = 192
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 384
    dropout: float = 0.1
    # tau in P = softmax_i(cos(v̂_j, m_i) / tau); fixed, shared by training and decoding.
    temperature: float = 0.05


@dataclass
class ModelConfig(NetworkSize):
    """The SSMP encoder: its size (`NetworkSize`) and what only SSMP has."""

    # "full": every token attends to every token (the paper). "prefix": movie tokens attend only to
    # movie tokens, slots to all, so the movie's states do not depend on the slots (an exact cache).
    movie_attention: str = DEFAULT_MOVIE_ATTENTION
    # Add a learned per-shot logit b_i to every slot's scores: P_ji = softmax_i(cos(v̂_j, m_i)/tau + b_i).
    # False is the paper's scoring exactly; the presets turn it on (measured: README, Training).
    shot_prior: bool = False
    # Add to b_i a small MLP's read of the shot against its movie: its feature minus the movie's mean, its
    # cosine with its neighbours, its position (ssmp_infer/context_prior.py). Needs shot_prior; the
    # presets turn it on (measured: README, Training).
    context_prior: bool = False
    # Let the context branch also read the shot against its own stretch of the film (the mean of the
    # shots within LOCAL_SHOTS of it) and the change from the shot before, not only against the whole
    # movie: what sets a shot apart within its scene, and how far a cut jumps. Needs context_prior; the
    # presets turn it on (measured: README, Training).
    local_context: bool = False
    # The context branch's hidden units, whether it also reads each shot's novelty against the shots just
    # before it, and dropout on its hidden units. These field defaults are the branch as checkpoints before
    # 2026-12-06 hold it (a config without the fields loads as saved); the presets train it wider (256
    # units), with novelty and dropout 0.2: on the lookalike of the held-out data test F1 0.470 -> 0.502,
    # no world of the five lower (README, Training; RESULTS, 2026-12-06).
    context_hidden: int = 64
    context_novelty: bool = False
    context_dropout: float = 0.0
    # K > 0: the context branch also reads each shot's cosine with the shots 2 to K before and after it, the
    # similarity profile a scene-change detector reads (ssmp_infer/context_prior.py). 0: not (the branch
    # before 2026-12-07, and a config without the field).
    context_profile: int = 0
    # Score slots against position-aware keys: k_i = normalize(m_i + W_k·pos_i), not m_i alone, and feed
    # a locked slot k_g, so a slot can say where in the movie its shot lies (see SSMPEncoder.shot_keys).
    position_keys: bool = False
    # Decoding scores slots by cos/tau + w·b_i: w weighs the shot prior (the model's own read of which
    # shots belong) against the slots' predictions. Training learns b_i with w = 1 and picks w on its
    # held-out movies together with the weights it keeps (`ssmp_infer.calibrate`), because measured on
    # five worlds the prior alone chose the trailer's shots better than the decoding that weighed it at
    # 1. 1: the scores as trained.
    prior_weight: float = 1.0
    head_dim: int = field(init=False)

    def __post_init__(self):
        # A checkpoint's config.json is user input: types before any arithmetic, sizes before any allocation.
        kinds = {"int": (int, "an integer"), "float": ((int, float), "a number"), "str": (str, "a string"), "bool": (bool, "true or false")}
        for f in (f for f in dataclasses.fields(self) if f.init):
            kind, value = kinds.get(getattr(f.type, "__name__", f.type)), getattr(self, f.name)
            if kind is not None and (isinstance(value, bool) != (kind[0] is bool) or not isinstance(value, kind[0])):
                raise InputError(
                    f"model config: {f.name} must be {kind[1]}, got {repr(value)[:40]} ({type(value).__name__})"
                )
        # Far above any model this code trains (the paper's is 1024 wide, 4 layers deep), far below a
        # typo's 2^20 that would try to allocate terabytes.
        limits = {"feature_dim": 65536, "d_model": 16384, "n_layers": 256, "n_heads": 1024, "d_ff": 65536,
                  "context_hidden": 65536}
        for name, limit in limits.items():
            if not 1 <= getattr(self, name) <= limit:
                raise InputError(f"model config: {name} must be from 1 to {limit}, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise InputError(f"model config: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if not 0 < self.temperature < float("inf"):
            raise InputError(f"model config: temperature must be positive and finite, got {self.temperature}")
        if not 0 < self.prior_weight <= 100:
            raise InputError(f"model config: prior_weight must be in (0, 100], got {self.prior_weight}")
        if not 0 <= self.dropout < 1:
            raise InputError(f"model config: dropout must be in [0, 1), got {self.dropout}")
        if self.context_prior and not self.shot_prior:
            raise InputError("model config: context_prior adds to the shot prior, so it needs shot_prior true")
        if self.local_context and not self.context_prior:
            raise InputError("model config: local_context widens the context branch, so it needs context_prior true")
        if self.context_novelty and not self.context_prior:
            raise InputError("model config: context_novelty widens the context branch, so it needs context_prior true")
        if self.context_profile and not self.context_prior:
            raise InputError("model config: context_profile widens the context branch, so it needs context_prior true")
        if self.context_profile and not 2 <= self.context_profile <= MAX_CONTEXT_PROFILE:
            raise InputError(f"model config: context_profile must be 0 (off) or from 2 to {MAX_CONTEXT_PROFILE}, "
                             f"got {self.context_profile}")
        if not 0 <= self.context_dropout < 1:
            raise InputError(f"model config: context_dropout must be in [0, 1), got {self.context_dropout}")
        if self.movie_attention not in MOVIE_ATTENTION:
            raise InputError(
                f"model config: movie_attention must be one of {list(MOVIE_ATTENTION)}, got {self.movie_attention!r}"
            )
        self.head_dim = self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        if not isinstance(d, dict):
            raise InputError(f"model config must be an object of fields, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"model config has unknown fields {sorted(unknown)}")
        # Checkpoints written before the shot prior (or its context branch, or its local read) existed
        # score without it.
        return cls(**{"shot_prior": False, "context_prior": False, "local_context": False, "position_keys": False, **d})


# The shot prior's context branch as both presets train it (ModelConfig.context_hidden says why).
CONTEXT_BRANCH = dict(context_hidden=256, context_novelty=True, context_dropout=0.2)

PRESETS = {
    # As the paper reports: 4 layers, 4 heads, hidden 1024, FFN 2048 on 1024-d ImageBind features.
    "paper": dict(d_model=1024, n_layers=4, n_heads=4, d_ff=2048, shot_prior=True, context_prior=True,
                  local_context=True, position_keys=True, **CONTEXT_BRANCH),
    # Small enough to train on 2 CPU cores in minutes, same 1024-d input so real features fit it.
    "demo": dict(d_model=192, n_layers=4, n_heads=4, d_ff=384, dropout=0.1, shot_prior=True, context_prior=True,
                 local_context=True, position_keys=True, **CONTEXT_BRANCH),
}


# What refines the context branch, and what each is without the branch.
BRANCH_REFINEMENTS = dict(local_context=False, context_novelty=False, context_dropout=0.0, context_profile=0)


def model_preset(name: str, **overrides) -> ModelConfig:
    """A preset's model with `overrides`. Turning off the shot prior turns off its context branch, and
    turning off the branch drops the preset's refinements of it (its local read, novelty and dropout);
    asking for a refinement of a branch that is off is still refused."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    fields = {**PRESETS[name], **overrides}
    if not fields.get("shot_prior") and "context_prior" not in overrides:
        fields["context_prior"] = False
    if not fields.get("context_prior"):
        fields.update({k: v for k, v in BRANCH_REFINEMENTS.items() if k not in overrides})
    return ModelConfig(**fields)


def train_preset(name: str, **overrides) -> "TrainConfig":
    """The training defaults that suit a model preset; `None` overrides keep the preset's value."""
    if name not in TRAIN_PRESETS:
        raise InputError(f"unknown preset {name!r}; expected one of {sorted(TRAIN_PRESETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return TrainConfig(**{**TRAIN_PRESETS[name], **given})


MODES = ("paper", "topk", "greedy")
# Encoder arithmetic of the torch backend (see backends/torch_backend.py).
PRECISIONS = ("fp32", "bf16", "int8")
KERNELS = ("auto", "torch", "triton")  # the decoding round's implementation (ssmp_infer.kernels)


# Rounds beyond a trailer's slot count buy nothing: topk skips every round that locks no slot, and paper
# mode's cumulative confidence reaches 1 within as many rounds as the movie has shots. 10,000 covers any
# trailer of any movie this engine is sized for, while topk's per-round schedule (planned up front)
# stays a fraction of a second; 10^9 rounds would take weeks.
MAX_ROUNDS = 10_000
DEFAULT_STATE_CACHE_MB = 512  # movie states an engine keeps: ~13 CMTD-sized movies of the demo preset (~37 MB each)
SEED_LIMIT = 2**63  # seeds reach int64 tensors and hashes: every --seed, query seed and synth seed is below it


@dataclass
class DecodeConfig:
    """How trailer slots are filled.

    mode "paper": self-paced Bernoulli locking on cumulative confidence; `max_rounds` caps the encoder
    passes (then open slots are filled greedily). mode "topk": MaskGIT-style, exactly `steps` rounds
    on a cosine schedule. mode "greedy": one round per slot, the most confident open slot locks
    (the ablation of self-correction against one-at-a-time filling); `steps` and `max_rounds` unused.
    """

    mode: str = "paper"
    # topk: rounds. 4, not MaskGIT's usual 8-12: on every trained world of the learning table, both
    # bundled models and the lookalikes F and H, topk's F1 and AA at 4 rounds lie within 0.003 and 0.001
    # of 12 rounds' (the shot prior settles which shots; the slots' order settles early), and each round
    # of a warm CMTD-sized trailer costs ~6 ms of its ~42. benchmarks/RESULTS.md, 2026-12-07 (topk rounds).
    steps: int = 4
    max_rounds: int = 32  # paper: cap on rounds before the greedy fill
    seed: int = 0
    # How often the movie's states are recomputed: None, the model's exact default (prefix attention
    # computes them once and reuses them exactly; full attention recomputes every round); 1 recompute
    # every round (no reuse: the reference the cache is checked against); k > 1 reuse for k rounds, then refresh (full attention: an
    # approximation); 0 compute once.
    refresh_every: int | None = None
    # The round's scoring and locking: "torch" (the references), "triton" (fused kernels: CUDA, or the
    # interpreter under TRITON_INTERPRET=1), "auto" (triton on CUDA when importable). Same shots either way.
    kernels: str = "auto"

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"unknown decoding mode {self.mode!r}; expected one of {list(MODES)}")
        if not 1 <= self.steps <= MAX_ROUNDS:
            raise InputError(f"--steps must be at least 1 and at most {MAX_ROUNDS}, got {self.steps}")
        if not 1 <= self.max_rounds <= MAX_ROUNDS:
            raise InputError(f"the round cap (--steps in paper mode) must be at least 1 and at most {MAX_ROUNDS}, got {self.max_rounds}")
        if self.refresh_every is not None and self.refresh_every < 0:
            raise InputError(f"refresh_every must be 0 (never), 1 (every round) or more, got {self.refresh_every}")
        if self.kernels not in KERNELS:
            raise InputError(f"unknown kernels {self.kernels!r}; expected one of {list(KERNELS)}")

    @property
    def rounds_cap(self) -> int:
        """Rounds planned (topk) or allowed (paper); greedy takes one per open slot (set by the decoder)."""
        return self.steps if self.mode == "topk" else self.max_rounds

    @classmethod
    def from_options(cls, mode: str = "paper", steps: int | None = None, seed: int = 0,
                     refresh_every: int | None = None, kernels: str = "auto") -> "DecodeConfig":
        """The decoding a user's options ask for (`--mode --steps --seed ...`, or a request's query): the one
        place that reads `steps` as topk's rounds or paper's round cap, so the CLI and the server agree."""
        if mode == "greedy" and steps is not None:
            raise InputError("--steps does not apply to --mode greedy, which takes one round per slot")
        rounds = {} if steps is None else {"steps" if mode == "topk" else "max_rounds": steps}
        return cls(mode=mode, seed=seed, refresh_every=refresh_every, kernels=kernels, **rounds)


MAX_VIEWS = 64
MAX_LR = 1.0
# Noise as large as the feature itself leaves a shot's direction barely recognisable.
MAX_FEATURE_NOISE = 1.0
MAX_SHOT_DROP = 0.9  # a movie must keep shots besides its trailer's for the model to choose among


@dataclass
class TrainConfig:
    """Self-paced training (paper: AdamW lr 1e-4, cosine with 10% warm-up, wd 0.1, beta2 0.95, batch 5)."""

    lr: float = 1e-4
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.95)
    warmup_fraction: float = 0.1
    batch_size: int = 5
    epochs: int = 100
    max_minutes: float | None = None
    seed: int = 0
    device: str = "auto"
    mask_schedule: str = "self-paced"
    # Differently masked copies of each trailer per step. Under prefix attention they share one movie
    # pass (cheap); under full attention each is a whole pass. None: 4 for prefix, 1 for full.
    views: int | None = None
    # Share of the training movies held out to pick the best weights (0: train on all, save the last).
    validation_fraction: float = 0.15
    # Stop when the held-out trailers have not improved for this many validation points (of 24 in a
    # run; 0: never): a data set too small for its budget stops instead of overfitting for minutes.
    patience: int = 8
    # Re-encoding noise on the movie features while training, as a share of each feature's norm
    # (trainer.augment; 0: none).
    feature_noise: float = 0.1
    # Share of the shots no trailer slot names left out of each training movie, drawn anew each time
    # it comes round (trainer.drop_shots; 0: none).
    shot_drop: float = 0.0
    # Train on random windows of this many shots of longer movies (trainer.crop; 0: whole movies).
    crop_shots: int = 512
    # Self-paced mask ratio (paper's reported values).
    t_min: float = 0.1
    t_max: float = 1.0
    beta: float = 10.0
    mu_a: float = 0.98
    mu_t: float = 0.1
    # Share of trailers whose mask ratio is drawn from the whole range [t_min, t_max] whatever the
    # schedule's ceiling (see train.sample_ratios); 0: every ratio under the ceiling, the paper's alone.
    whole_range_share: float = 0.75
    grad_clip: float = 1.0
    # Validate and save an exponential moving average of the weights over ~100 steps
    # (selection.WeightAverage); 0: the raw weights.
    ema_decay: float = 0.99

    def __post_init__(self):
        # AdamW moves every weight by about lr per step: far beyond 1 nothing can be learnt, and near float32's
        # limit the update itself overflows. `not ... <=` also refuses NaN, which compares false with everything.
        if not 0 < self.lr <= MAX_LR:
            raise InputError(f"--lr must be positive and at most {MAX_LR:g}, got {self.lr}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.epochs < 1:
            raise InputError(f"--epochs must be at least 1, got {self.epochs}")
        if self.max_minutes is not None and not 0 < self.max_minutes < float("inf"):
            raise InputError(f"--max-minutes must be positive and finite, got {self.max_minutes}")
        # Each view is one more masked copy of every trailer in the batch, held in memory at once.
        if self.views is not None and not 1 <= self.views <= MAX_VIEWS:
            raise InputError(f"--views must be from 1 to {MAX_VIEWS}, got {self.views}")
        if not 0 <= self.validation_fraction < 1:
            raise InputError(f"--validation-fraction must be in [0, 1), got {self.validation_fraction}")
        if self.mask_schedule not in MASK_SCHEDULES:
            raise InputError(f"unknown mask schedule {self.mask_schedule!r}; expected one of {list(MASK_SCHEDULES)}")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise InputError(f"--patience must be a whole number of validation points, 0 or more, got {self.patience}")
        if isinstance(self.crop_shots, bool) or not isinstance(self.crop_shots, int) or self.crop_shots < 0:
            raise InputError(f"--crop-shots must be a whole number of shots, 0 (whole movies) or more, got {self.crop_shots}")
        if not 0 <= self.feature_noise <= MAX_FEATURE_NOISE:
            raise InputError(f"--feature-noise must be from 0 to {MAX_FEATURE_NOISE:g}, got {self.feature_noise}")
        if not 0 <= self.shot_drop <= MAX_SHOT_DROP:
            raise InputError(f"--shot-drop must be from 0 to {MAX_SHOT_DROP:g}, got {self.shot_drop}")
        if not 0 <= self.ema_decay < 1:
            raise InputError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.whole_range_share <= 1:
            raise InputError(f"--whole-range-share must be in [0, 1], got {self.whole_range_share}")
        if not 0 < self.t_min <= self.t_max <= 1:
            raise InputError(f"need 0 < t_min <= t_max <= 1, got {self.t_min}, {self.t_max}")
        self.betas = tuple(self.betas)


TRAIN_PRESETS = {
    # As the paper reports for its 34M-parameter model: AdamW lr 1e-4, batch 5.
    "paper": dict(lr=1e-4, batch_size=5, epochs=100),
    # The small model learns faster with a larger step and one movie per step: movies differ in length,
    # so a padded batch of five pays for its longest (measured; see README).
    "demo": dict(lr=5e-4, batch_size=1, epochs=100),
}
