"""TensorRT itself, for the engines' build (export/tensorrt_export.py) and their backend
(backends/tensorrt_backend.py): the import, whether it can run here, the device and the one logger.
Both read `trt` from this module when they run, so a stand-in set here (the tests') reaches both."""

from __future__ import annotations

import torch

from ..errors import InputError

MISSING = "TensorRT is not installed: pip install 'ssmp-infer[tensorrt]' on a machine with an NVIDIA GPU"
NO_GPU = "TensorRT runs on an NVIDIA GPU, and this PyTorch sees no CUDA device"

try:
    import tensorrt as trt

    HAS_TENSORRT, _UNAVAILABLE = True, None
except ImportError:
    trt, HAS_TENSORRT, _UNAVAILABLE = None, False, MISSING
except OSError as e:  # the wheel is there but its CUDA libraries do not load
    trt, HAS_TENSORRT = None, False
    _UNAVAILABLE = f"TensorRT is installed but does not load ({e}); reinstall it: pip install 'ssmp-infer[tensorrt]'"


def require_tensorrt() -> None:
    """One sentence when TensorRT cannot run here: the missing extra, or no CUDA device."""
    if not HAS_TENSORRT:
        raise InputError(_UNAVAILABLE)
    if not torch.cuda.is_available():
        raise InputError(NO_GPU)


def cuda_device(device=None) -> torch.device:
    """`device` (None: the current CUDA device) as a torch.device with its index."""
    device = torch.device("cuda") if device is None else torch.device(device)
    if device.type != "cuda":
        raise InputError(f"the tensorrt backend runs on a CUDA device, not {device}")
    return torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)


def gpu_name(device) -> str:
    return torch.cuda.get_device_name(cuda_device(device))


_LOGGER = None


def trt_logger():
    """One logger for every TensorRT object (TensorRT expects a single one): warnings and errors only."""
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER
