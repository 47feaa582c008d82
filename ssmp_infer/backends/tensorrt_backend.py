"""TensorRT: engines built from the ONNX graphs, run on torch CUDA tensors.

Not built yet: no machine this code is developed on has TensorRT and a GPU. What exists is the
switch: without `tensorrt` importable, asking for this backend (or `ssmp-infer export --format
tensorrt`) is one sentence naming the extra to install.
"""

from __future__ import annotations

from ..errors import InputError

try:
    import tensorrt  # noqa: F401

    HAS_TENSORRT = True
except ImportError:
    HAS_TENSORRT = False

MISSING = "TensorRT is not installed: pip install 'ssmp-infer[tensorrt]' on a machine with an NVIDIA GPU"
NOT_BUILT = "TensorRT engines are not implemented in this version of ssmp-infer; use --backend onnxruntime"


def require_tensorrt() -> None:
    """The one sentence a caller gets: the missing extra, or (with TensorRT present) that the engines
    are not written yet."""
    raise InputError(NOT_BUILT if HAS_TENSORRT else MISSING)


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, *args, **kwargs):
        require_tensorrt()
