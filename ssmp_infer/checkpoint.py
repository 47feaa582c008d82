"""A checkpoint directory: `model.safetensors` (weights) + `config.json` (model config, feature dim,
training provenance). The config travels with the weights; nothing is inferred from a path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_weights

from .atomic import write_files_atomic
from .config import ModelConfig
from .errors import InputError
from .inputs import check_finite_weights, check_output_dir, check_weights_match, dumps_json, load_json_file, stat_regular
from .model import SSMPEncoder

WEIGHTS, CONFIG = "model.safetensors", "config.json"
FORMAT = "ssmp-infer/1"
ASSETS = Path(__file__).parent / "assets"
# The models that ship with the package, by the name `--model` and `Engine.load` take for them.
BUNDLED_MODELS = {
    "bundled:default": ASSETS / "default_model",  # 1024-d (ImageBind's size): `run`, `serve` and the examples
    "bundled:1280": ASSETS / "efficientnet_lite0_model",  # 1280-d: `trailer`'s default embedder
}
DEFAULT_MODEL_DIR = BUNDLED_MODELS["bundled:default"]


def model_dir(model: str | Path | None) -> Path:
    """A checkpoint directory, given as one or as a bundled model's name; None is the bundled default."""
    if model is None:
        return DEFAULT_MODEL_DIR
    if str(model).startswith("bundled:"):
        if str(model) not in BUNDLED_MODELS:
            raise InputError(f"no bundled model is called {model!r}; the bundled ones are {', '.join(BUNDLED_MODELS)}")
        return BUNDLED_MODELS[str(model)]
    return Path(model)


def bundled_name(model: str | Path | None) -> str | None:
    """The bundled model's name if `model` is one (by name or by its directory), else None."""
    directory = model_dir(model)
    return next((name for name, path in BUNDLED_MODELS.items() if path == directory), None)


def check_checkpoint_dir(directory: str | Path, force: bool) -> None:
    """Refuse, before any training, a directory that is a file, cannot be written, or holds a model that
    must not be replaced (without --force; never one whose files are links, devices or folders)."""
    check_output_dir(directory, (WEIGHTS, CONFIG), force)  # both before writing either


def save_checkpoint(model: SSMPEncoder, directory: str | Path, provenance: dict, force: bool = False,
                    method: str = "ssmp") -> Path:
    """`method`: which generator the weights are (`ssmp`, or a baseline's name; see `ssmp_infer.baselines`).
    `model` has `cfg` (with `to_dict()` and `feature_dim`) and a state dict."""
    directory = Path(directory)
    check_checkpoint_dir(directory, force)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    check_finite_weights(weights, "the trained model")  # a NaN model is never saved
    meta = {
        "format": FORMAT,
        "method": method,
        "model": model.cfg.to_dict(),
        "feature_dim": model.cfg.feature_dim,
        "training": provenance,
    }
    text = dumps_json(meta, indent=2) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    # both files written aside, then both renamed with Ctrl-C held off: never new weights under an old config
    # (serialised here and written by Python: a full disk is then an OSError, one sentence, where
    # safetensors' own writer raises an error of its own kind)
    write_files_atomic({directory / WEIGHTS: lambda tmp: Path(tmp).write_bytes(save_weights(weights)),
                        directory / CONFIG: lambda tmp: Path(tmp).write_text(text, encoding="utf-8")}, force=True)
    return directory


def load_checkpoint(directory: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[SSMPEncoder, dict]:
    """(model in eval mode, the config.json contents). `None` loads the bundled default model; a bundled
    model's name (`bundled:default`, `bundled:1280`) loads that one."""
    directory = model_dir(directory)
    meta = read_config(directory)
    method = checkpoint_method(meta)
    if method != "ssmp":
        raise InputError(
            f"{directory} holds a {method} model, not an SSMP one; evaluate it with "
            f"`ssmp-infer eval --method {method} --model {directory}`"
        )
    if not isinstance(meta.get("model"), dict):
        got = "no such key" if "model" not in meta else json.dumps(meta["model"])[:40]
        raise InputError(f'{directory / CONFIG} needs "model": an object of model config fields; got {got}')
    try:
        config = ModelConfig.from_dict(meta["model"])
    except InputError as e:
        raise InputError(f"{directory / CONFIG}: {e}") from None
    return load_weights(directory, SSMPEncoder, config).to(device).eval(), meta


def load_weights(directory: Path, model_class, config) -> torch.nn.Module:
    """`model_class(config)` with the checkpoint's weights, on the CPU; every method's loader comes here.

    The config is checked against the weights' header before the model is built: a config claiming a
    model of terabytes is refused for the price of a model on the meta device (no memory at all).
    """
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in model_class(config).state_dict().items()}
    check_weights_match(directory / WEIGHTS, expected, directory / CONFIG)
    model = model_class(config)
    try:
        state = load_file(str(directory / WEIGHTS))
        check_finite_weights(state, str(directory / WEIGHTS))
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except (SafetensorError, RuntimeError) as e:
        raise InputError(f"{directory / WEIGHTS} does not match its config ({str(e).splitlines()[0]})") from None
    return model


def read_config(directory: str | Path) -> dict:
    """A checkpoint directory's config.json, checked to be this project's format (of any method)."""
    directory = model_dir(directory)
    if not directory.is_dir():
        raise InputError(f"no model at {directory}: " + ("not a directory" if directory.exists() else "no such directory"))
    if not os.path.lexists(directory / WEIGHTS) and not os.path.lexists(directory / CONFIG):
        raise InputError(f"no model at {directory}: expected {WEIGHTS} and {CONFIG} in it")
    stat_regular(directory / WEIGHTS, f"the weights of a checkpoint ({WEIGHTS})")
    meta = load_json_file(directory / CONFIG, f"a checkpoint config ({CONFIG})")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{directory / CONFIG} is not an ssmp-infer checkpoint config (format {FORMAT})")
    return meta


def checkpoint_method(meta: dict) -> str:
    """The method a checkpoint config records; configs written before baselines existed are SSMP's."""
    method = meta.get("method", "ssmp")
    if not isinstance(method, str):
        raise InputError(f'{CONFIG} "method" must be a string such as "ssmp", got {json.dumps(method)[:40]}')
    return method
