"""A checkpoint directory: `model.safetensors` (weights) + `config.json` (model config, feature dim,
training provenance). The config travels with the weights; nothing is inferred from a path."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import write_atomic, write_text_atomic
from .config import ModelConfig
from .errors import InputError
from .model import SSMPEncoder

WEIGHTS, CONFIG = "model.safetensors", "config.json"
FORMAT = "ssmp-infer/1"
DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "default_model"


def check_checkpoint_dir(directory: str | Path, force: bool) -> None:
    """Refuse a directory whose model must not be replaced (without --force), or that is a file."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory} exists and is not a directory")
    for name in (WEIGHTS, CONFIG):  # check both before writing either
        if (directory / name).exists() and not force:
            raise InputError(f"{directory / name} already exists; pass --force to overwrite it")


def save_checkpoint(model: SSMPEncoder, directory: str | Path, provenance: dict, force: bool = False) -> Path:
    directory = Path(directory)
    check_checkpoint_dir(directory, force)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomic(directory / WEIGHTS, lambda tmp: save_file(weights, tmp), force=True)
    meta = {
        "format": FORMAT,
        "model": model.cfg.to_dict(),
        "feature_dim": model.cfg.feature_dim,
        "training": provenance,
    }
    write_text_atomic(directory / CONFIG, json.dumps(meta, indent=2) + "\n", force=True)
    return directory


def load_checkpoint(directory: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[SSMPEncoder, dict]:
    """(model in eval mode, the config.json contents). `None` loads the bundled default model."""
    directory = Path(directory) if directory is not None else DEFAULT_MODEL_DIR
    if not (directory / WEIGHTS).is_file() or not (directory / CONFIG).is_file():
        raise InputError(f"no model at {directory}: expected {WEIGHTS} and {CONFIG} in it")
    try:
        meta = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{directory / CONFIG} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{directory / CONFIG} is not an ssmp-infer checkpoint config (format {FORMAT})")
    if not isinstance(meta.get("model"), dict):
        got = "no such key" if "model" not in meta else json.dumps(meta["model"])[:40]
        raise InputError(f'{directory / CONFIG} needs "model": an object of model config fields; got {got}')
    try:
        config = ModelConfig.from_dict(meta["model"])
    except InputError as e:
        raise InputError(f"{directory / CONFIG}: {e}") from None
    model = SSMPEncoder(config)
    try:
        state = load_file(str(directory / WEIGHTS))
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except (SafetensorError, RuntimeError) as e:
        raise InputError(f"{directory / WEIGHTS} does not match its config ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), meta
