"""The movie-file front end and back end: frames (PyAV), shots, embedders, music, timeline, render.

Everything here needs the `video` extra (`pip install 'ssmp-infer[video]'`); a missing package is one
sentence naming it (see `require`), never an ImportError traceback.
"""

from __future__ import annotations

import importlib

from ..errors import InputError

VIDEO_EXTRA = "pip install 'ssmp-infer[video]'"


def require(module: str, package: str | None = None, extra: str = VIDEO_EXTRA):
    """Import `module` or raise one sentence naming the package to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and module.split(".")[0] == e.name.split(".")[0]:
            raise InputError(f"{package or module} is not installed; install it with {extra}") from None
        raise InputError(f"{package or module} could not be imported: a package it needs is missing ({e.name})") from None
    except ImportError as e:  # installed but broken (a wrong binary, a mismatched dependency)
        raise InputError(f"{package or module} could not be imported: {str(e).splitlines()[0]}") from None
