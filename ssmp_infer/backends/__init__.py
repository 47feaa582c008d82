"""Backends run one encoder pass on padded tensors; the decode loop does not know which it drives.

The interface is the `Backend` protocol: `name`, `device`, and
`encode(movie, movie_valid, slots, slot_masked, slot_valid) -> (B, J, D)` predicted slot features.
ONNX Runtime and TensorRT backends slot in beside `TorchBackend` with the same signature.
"""

from .base import Backend
from .torch_backend import TorchBackend

BACKENDS = ("torch",)

__all__ = ["Backend", "TorchBackend", "BACKENDS"]
