"""ssmp-infer: SSMP movie trailer generation (self-paced, self-corrective masked prediction)."""

from .config import DecodeConfig, ModelConfig, TrainConfig, model_preset
from .data import load_features
from .decode import generate
from .engine import Engine, Trailer
from .errors import InputError

__all__ = [
    "Engine",
    "Trailer",
    "DecodeConfig",
    "ModelConfig",
    "TrainConfig",
    "model_preset",
    "generate",
    "load_features",
    "InputError",
]
__version__ = "0.1.0"
