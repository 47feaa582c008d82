"""ssmp-infer: SSMP movie trailer generation (self-paced, self-corrective masked prediction)."""

import importlib

# Names are imported on first use (PEP 562): `import ssmp_infer.entry`, which the console script does
# first, must not load torch, so that Ctrl-C during the imports is handled (see entry.py).
_EXPORTS = {
    "DecodeConfig": "config",
    "ModelConfig": "config",
    "TrainConfig": "config",
    "model_preset": "config",
    "load_features": "data",
    "generate": "decode",
    "EditorControls": "controls",
    "Engine": "engine",
    "Trailer": "engine",
    "InputError": "errors",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "Engine",
    "EditorControls",
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
