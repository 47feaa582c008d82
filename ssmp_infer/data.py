"""Shot features in and out: validation at the edge, the CMTD data-set layout, padding into batches.

A features file is a `.npy` array (I, D): one row per shot in movie order, float16/32/64, finite, no
all-zero rows (cosine similarity is undefined for them), loaded with allow_pickle=False.

Data-set layout (CMTD's): ROOT/{train,test}/movie_shot_embs/NAME.npy (I×D) and
ROOT/{train,test}/trailer_shot_embs/NAME.npy (J×D), paired by file name; anything else is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import DEFAULT_TRAILER_FRACTION
from .errors import InputError

# Files and arrays are checked in ssmp_infer/inputs.py, the one place the CLI, Engine and the server share.
from .inputs import FLOAT_DTYPES, load_features, validate_features  # noqa: F401  (re-exported)

MOVIE_DIR, TRAILER_DIR = "movie_shot_embs", "trailer_shot_embs"
SPLITS = ("train", "test")


def default_trailer_length(num_shots: int) -> int:
    """CMTD trailers hold about 3.7% of their movie's shots; at least one slot, at most every shot."""
    return min(num_shots, max(1, round(DEFAULT_TRAILER_FRACTION * num_shots)))


def check_trailer_length(length: int, num_shots: int) -> int:
    if length <= 0:
        raise InputError(f"--length must be positive, got {length}")
    if length > num_shots:
        raise InputError(f"--length {length} is larger than the movie's {num_shots} shots; shots cannot repeat")
    return length


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def shot_targets(movie: np.ndarray, trailer: np.ndarray) -> np.ndarray:
    """g_j = argmax_i cos(v_j, m_i): the movie shot each trailer shot comes from, (J,) int64."""
    return np.argmax(unit_rows(trailer) @ unit_rows(movie).T, axis=1).astype(np.int64)


@dataclass
class Example:
    name: str
    movie: np.ndarray  # (I, D) float32
    trailer: np.ndarray  # (J, D) float32
    targets: np.ndarray  # (J,) int64: g_j
    # Training crops (trainer.crop): (index of the crop's first shot in its movie, the movie's shot count),
    # so that the crop's shots get their places in the whole movie; None: the whole movie.
    window: tuple[int, int] | None = None


def movie_windows(examples: list[Example], device) -> torch.Tensor | None:
    """(B, 2) int64 windows of a batch for `model.position_features`, or None when no movie is cropped."""
    if all(e.window is None for e in examples):
        return None
    rows = [e.window if e.window is not None else (0, len(e.movie)) for e in examples]
    return torch.tensor(rows, dtype=torch.int64, device=device)


def load_split(root: str | Path, split: str, feature_dim: int | None = None) -> list[Example]:
    """Movies and their trailers of one split, paired by file name, sorted by name."""
    root = Path(root)
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    if not root.is_dir():
        raise InputError(f"data root {root} is not a directory")
    movie_dir, trailer_dir = root / split / MOVIE_DIR, root / split / TRAILER_DIR
    for d in (movie_dir, trailer_dir):
        if not d.is_dir():
            raise InputError(
                f"data root {root} lacks {d.relative_to(root)}/; expected the layout "
                f"ROOT/{{train,test}}/{{{MOVIE_DIR},{TRAILER_DIR}}}/NAME.npy"
            )
    names = sorted({p.stem for p in movie_dir.glob("*.npy")} & {p.stem for p in trailer_dir.glob("*.npy")})
    if not names:
        raise InputError(f"{movie_dir} and {trailer_dir} share no NAME.npy pairs")
    examples = []
    for name in names:
        movie = load_features(movie_dir / f"{name}.npy", feature_dim)
        trailer = load_features(trailer_dir / f"{name}.npy")
        if trailer.shape[1] != movie.shape[1]:  # the data disagree with themselves: not the model's fault
            raise InputError(
                f"trailer {trailer_dir / name}.npy has {trailer.shape[1]}-d features but its movie "
                f"{movie_dir / name}.npy has {movie.shape[1]}-d; a trailer's shots are features of its movie's shots"
            )
        if trailer.shape[0] > movie.shape[0]:
            raise InputError(f"trailer {name} has {trailer.shape[0]} shots, more than its movie's {movie.shape[0]}")
        examples.append(Example(name, movie, trailer, shot_targets(movie, trailer)))
    return examples


def pad_batch(arrays: list, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (n_k, D) arrays or tensors into zero-padded (B, N, D) float32 and a (B, N) validity mask.
    One float32 movie is not copied: nothing to pad, so the batch is a view of it."""
    rows = [torch.as_tensor(a) for a in arrays]
    device = rows[0].device if device is None else device
    if len(rows) == 1 and rows[0].dtype == torch.float32 and rows[0].device == torch.device(device):
        return rows[0][None], torch.ones(1, rows[0].shape[0], dtype=torch.bool, device=device)
    n = max(r.shape[0] for r in rows)
    out = torch.zeros(len(rows), n, rows[0].shape[1], device=device)
    valid = torch.zeros(len(rows), n, dtype=torch.bool, device=device)
    for k, r in enumerate(rows):
        out[k, : r.shape[0]] = r
        valid[k, : r.shape[0]] = True
    return out, valid


def slot_inputs(movie: torch.Tensor, shots: torch.Tensor) -> torch.Tensor:
    """(B, J, D) features of the movie shot in each slot; negative (padded) indices read shot 0.

    Training feeds unmasked slots exactly what decoding feeds locked ones; masked slots are replaced by
    the MP token inside the model, whatever they hold here.
    """
    return movie.gather(1, shots.clamp(min=0)[..., None].expand(-1, -1, movie.shape[-1]))


def pad_targets(targets: list, device: torch.device | str | None = None) -> torch.Tensor:
    """(B, J) int64 targets, -1 in padded slots."""
    rows = [torch.as_tensor(t) for t in targets]
    device = rows[0].device if device is None else device
    out = torch.full((len(rows), max(len(r) for r in rows)), -1, dtype=torch.int64, device=device)
    for k, r in enumerate(rows):
        out[k, : len(r)] = r
    return out
