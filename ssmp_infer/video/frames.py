"""Reading a movie file with PyAV (its own FFmpeg libraries; no ffmpeg binary): what it is, its frames.

Frame numbers count decoded frames from 0 and seconds are `frame / fps`: the project assumes a
constant frame rate, as editors' timelines (and CMX3600 EDLs) do. Seeking (`read_range`) maps a frame
number to a presentation time the same way, so both readings agree on such files.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import InputError
from . import require

FINGERPRINT_BYTES = 1 << 20  # hashed at each end of the file: identity without reading a whole movie


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: Fraction
    num_frames: int  # from the container's metadata; decoding may find a frame more or less
    duration: float  # seconds
    width: int
    height: int
    has_audio: bool

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fps"] = float(self.fps)
        d["fps_rational"] = f"{self.fps.numerator}/{self.fps.denominator}"
        return d


def open_container(path: str | Path, kind: str = "video"):
    """av.open with every failure as one sentence: missing, a directory, not a media file."""
    av = require("av", "PyAV (av)")
    path = Path(path)
    if not path.exists():
        raise InputError(f"{kind} file {path} does not exist")
    if path.is_dir():
        raise InputError(f"{kind} path {path} is a directory; expected a file")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as e:
        raise InputError(f"{path} is not a {kind} file PyAV can read ({e.strerror or type(e).__name__})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot open {path}: {getattr(e, 'strerror', None) or e}") from None


def video_stream(container, path):
    if not container.streams.video:
        raise InputError(f"{path} has no video stream")
    return container.streams.video[0]


def stream_fps(stream, path) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise InputError(f"{path}: its video stream has no frame rate")
    return Fraction(rate.numerator, rate.denominator)


def probe(path: str | Path) -> VideoInfo:
    """What a video file holds, from its metadata (no decoding)."""
    with open_container(path) as container:
        stream = video_stream(container, path)
        fps = stream_fps(stream, path)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6  # AV_TIME_BASE
        else:
            duration = 0.0
        num_frames = stream.frames or round(duration * fps)
        if stream.codec_context.width <= 0 or num_frames <= 0:
            raise InputError(f"{path}: its video stream holds no frames")
        return VideoInfo(
            path=str(path),
            fps=fps,
            num_frames=int(num_frames),
            duration=num_frames / float(fps),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            has_audio=bool(container.streams.audio),
        )


def fingerprint(path: str | Path) -> dict:
    """Identity of a file for the pipeline's cache: size, modification time, and a hash of both ends."""
    path = Path(path)
    stat = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(FINGERPRINT_BYTES))
        if stat.st_size > FINGERPRINT_BYTES:
            f.seek(max(FINGERPRINT_BYTES, stat.st_size - FINGERPRINT_BYTES))
            h.update(f.read(FINGERPRINT_BYTES))
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256_ends": h.hexdigest()}


def fit_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """A size with the given shorter side and the frame's aspect ratio (both even)."""
    scale = short_side / min(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def iter_frames(
    path: str | Path,
    width: int,
    height: int,
    fmt: str = "rgb24",
    wanted: Iterable[int] | None = None,
    interpolation: str | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode the whole video in order; yield (frame number, (height, width, 3) uint8) for every frame,
    or only for the frame numbers in `wanted` (the others are decoded but never converted)."""
    av = require("av", "PyAV (av)")
    wanted_set = None if wanted is None else set(int(i) for i in wanted)
    last_wanted = None if wanted_set is None else max(wanted_set, default=-1)
    with open_container(path) as container:
        stream = video_stream(container, path)
        stream.thread_type = "AUTO"  # frame threads: the decoder is most of a shot pass's time
        index = -1
        try:
            for index, frame in enumerate(container.decode(stream)):
                if wanted_set is None or index in wanted_set:
                    yield index, frame.to_ndarray(width=width, height=height, format=fmt, interpolation=interpolation)
                if last_wanted is not None and index >= last_wanted:
                    return
        except av.error.FFmpegError as e:
            raise InputError(f"{path}: decoding failed after frame {index} ({e.strerror or type(e).__name__})") from None
        if index < 0:
            raise InputError(f"{path}: its video stream decoded to no frames")


def read_range(container, stream, fps: Fraction, start: int, count: int, width: int, height: int,
               fmt: str = "rgb24") -> list:
    """`count` frames from frame `start` on, as av.VideoFrame in `fmt` at (width, height), by seeking.

    Fewer than `count` come back only when the stream ends first. A frame's number is its time from
    the stream's first frame times fps, rounded, as `iter_frames` counts on a constant-rate file."""
    av = require("av", "PyAV (av)")
    base = stream.time_base
    first_pts = stream.start_time or 0
    target = first_pts + int(Fraction(start) / fps / base)
    container.seek(max(target, first_pts), stream=stream, backward=True, any_frame=False)
    frames = []
    try:
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            number = round((frame.pts - first_pts) * base * fps)
            if number < start:
                continue
            frames.append(frame.reformat(width=width, height=height, format=fmt))
            if len(frames) == count:
                break
    except av.error.FFmpegError as e:
        raise InputError(f"{container.name}: decoding failed near frame {start} ({e.strerror or type(e).__name__})") from None
    return frames
