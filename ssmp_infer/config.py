"""One dataclass per concern: the model, the decoding, the training. Derived fields in __post_init__."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import InputError

# CMTD trailers hold about 3.7% of their movie's shots (60-80 of ~1909); the default trailer length.
DEFAULT_TRAILER_FRACTION = 0.037


@dataclass
class ModelConfig:
    """The SSMP encoder. `feature_dim` is the shot-feature size the model reads (ImageBind: 1024)."""

    feature_dim: int = 1024
    d_model: int = 192
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 384
    dropout: float = 0.1
    # tau in P = softmax_i(cos(v̂_j, m_i) / tau); fixed, shared by training and decoding.
    temperature: float = 0.05
    head_dim: int = field(init=False)

    def __post_init__(self):
        for name in ("feature_dim", "d_model", "n_layers", "n_heads", "d_ff"):
            if getattr(self, name) <= 0:
                raise InputError(f"model config: {name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise InputError(f"model config: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if not self.temperature > 0:
            raise InputError(f"model config: temperature must be positive, got {self.temperature}")
        self.head_dim = self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"model config has unknown fields {sorted(unknown)}")
        return cls(**d)


PRESETS = {
    # As the paper reports: 4 layers, 4 heads, hidden 1024, FFN 2048 on 1024-d ImageBind features.
    "paper": dict(d_model=1024, n_layers=4, n_heads=4, d_ff=2048),
    # Small enough to train on 2 CPU cores in minutes, same 1024-d input so real features fit it.
    "demo": dict(d_model=192, n_layers=4, n_heads=4, d_ff=384),
}


def model_preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


MODES = ("paper", "topk")


@dataclass
class DecodeConfig:
    """How trailer slots are filled.

    mode "paper": self-paced Bernoulli locking on cumulative confidence; `max_rounds` caps the encoder
    passes (then open slots are filled greedily). mode "topk": MaskGIT-style, exactly `steps` rounds
    on a cosine schedule.
    """

    mode: str = "paper"
    steps: int = 12  # topk: rounds
    max_rounds: int = 32  # paper: cap on rounds before the greedy fill
    seed: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"unknown decoding mode {self.mode!r}; expected one of {list(MODES)}")
        if self.steps < 1:
            raise InputError(f"--steps must be at least 1, got {self.steps}")
        if self.max_rounds < 1:
            raise InputError(f"the round cap must be at least 1, got {self.max_rounds}")

    @property
    def rounds_cap(self) -> int:
        return self.steps if self.mode == "topk" else self.max_rounds


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
    # Self-paced mask ratio (paper's reported values).
    t_min: float = 0.1
    t_max: float = 1.0
    beta: float = 10.0
    mu_a: float = 0.98
    mu_t: float = 0.1
    grad_clip: float = 1.0

    def __post_init__(self):
        if self.lr <= 0:
            raise InputError(f"--lr must be positive, got {self.lr}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.epochs < 1:
            raise InputError(f"--epochs must be at least 1, got {self.epochs}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise InputError(f"--max-minutes must be positive, got {self.max_minutes}")
        if not 0 < self.t_min <= self.t_max <= 1:
            raise InputError(f"need 0 < t_min <= t_max <= 1, got {self.t_min}, {self.t_max}")
        self.betas = tuple(self.betas)
