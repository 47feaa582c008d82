"""Backends run one encoder pass on padded tensors; the decode loop does not know which it drives.

The interface is the `Backend` protocol (base.py): `prepare(movie, movie_valid, refresh_every) ->
MovieState` once per batch and `step(state, slots, slot_masked, slot_valid) -> (B, J, D)` predicted
slot features once per round. ONNX Runtime and TensorRT backends implement the same two calls.
"""

from .base import Backend, MovieState
from .torch_backend import TorchBackend

from ..names import BACKENDS  # noqa: F401  (re-exported)

# onnxruntime: OnnxRuntimeBackend (onnx_backend.py), tensorrt: TensorRTBackend (tensorrt_backend.py),
# each imported only when asked for

__all__ = ["Backend", "MovieState", "TorchBackend", "BACKENDS"]
