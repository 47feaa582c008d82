"""Render a trailer with PyAV: H.264 video (libx264, yuv420p) and AAC stereo audio in an MP4.

Each slot's frames come from seeking to its source range; clips follow one another with no black
between them. The sound is the music when there is one (from its start, to its end; faded out over the
last half second only where the trailer ends before the music), otherwise each clip's own sound from the
movie (silence where the movie has none). `fade` seconds fade picture and sound in from black at the
start and out to black at the end: the only black a trailer has.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import require
from .frames import open_container, read_range, video_stream
from .progress import bar
from .timeline import Slot

AUDIO_RATE = 48000
AAC_FRAME = 1024  # samples per AAC frame
FADE_OUT = 0.5  # seconds: music that goes on past the trailer's end fades out over this
X264_OPTIONS = {"preset": "veryfast", "crf": "20"}


def even(n: int) -> int:
    return max(2, n - n % 2)  # yuv420p needs even sizes


def render(video: str | Path, slots: list[Slot], fps: Fraction, out_path: str | Path, music: str | Path | None = None,
           fade: float = 0.0, progress: bool = False) -> dict:
    """Write the trailer to `out_path` (the caller makes it atomic). Returns frames and seconds written."""
    av = require("av", "PyAV (av)")
    total = slots[-1].record_end if slots else 0
    if total <= 0:
        raise InputError("the trailer has no frames to render")
    seconds = total / float(fps)
    with open_container(video) as source:
        vin = video_stream(source, video)
        width, height = even(vin.codec_context.width), even(vin.codec_context.height)
        out = av.open(str(out_path), mode="w", format="mp4")
        try:
            vout = out.add_stream("libx264", rate=fps, options=X264_OPTIONS)
            vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
            aout = out.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
            fade_frames = min(round(fade * float(fps)), total // 2)
            write_video(av, out, vout, source, vin, fps, slots, width, height, fade_frames, progress)
            samples = music_samples(music, seconds) if music is not None else movie_sound(video, slots, fps)
            write_audio(av, out, aout, fade_sound(samples, fade_frames / float(fps)))
        finally:
            out.close()
    return {"frames": total, "seconds": round(seconds, 6), "width": width, "height": height}


def write_video(av, out, vout, source, vin, fps, slots, width, height, fade_frames, progress) -> None:
    total = slots[-1].record_end
    progress_bar = bar(total, "render", progress)
    pts = 0

    def emit(frame) -> None:
        nonlocal pts
        level = min(1.0, (pts + 0.5) / fade_frames, (total - pts - 0.5) / fade_frames) if fade_frames else 1.0
        if level < 1.0:  # --fade: from and to black
            rgb = frame.to_ndarray(format="rgb24").astype(np.float32) * level
            frame = av.VideoFrame.from_ndarray(rgb.round().astype(np.uint8), format="rgb24")
        frame = frame.reformat(format="yuv420p") if frame.format.name != "yuv420p" else frame
        frame.pts, frame.time_base = pts, Fraction(1) / fps
        pts += 1
        for packet in vout.encode(frame):
            out.mux(packet)
        progress_bar.update()

    try:
        for s in slots:
            frames = read_range(source, vin, fps, s.source_start, s.clip_frames, width, height, "yuv420p")
            if not frames:
                raise InputError(f"{source.name} has no frames at {s.source_start} (slot {s.slot}); "
                                 "the trailer does not match the video")
            frames += [frames[-1]] * (s.clip_frames - len(frames))  # a short read at the very end of a file
            for frame in frames:
                emit(frame)
        for packet in vout.encode():
            out.mux(packet)
    finally:
        progress_bar.close()


def music_samples(music, seconds: float) -> np.ndarray:
    """(2, n) float32: the music from its start for `seconds` (faded out at the end if it goes on past
    them), silence past its end."""
    from .music import load_audio

    audio = load_audio(music, rate=AUDIO_RATE, layout="stereo").samples
    n = round(seconds * AUDIO_RATE)
    samples = np.zeros((2, n), np.float32)
    samples[:, : min(n, audio.shape[1])] = audio[:, :n]
    if audio.shape[1] - n > AUDIO_RATE // 100:  # cut short (by more than 10 ms): no abrupt stop
        fade = min(n, round(FADE_OUT * AUDIO_RATE))
        samples[:, n - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return samples


def fade_sound(samples: np.ndarray, seconds: float) -> np.ndarray:
    """In over the first `seconds` and out over the last (the picture's --fade)."""
    n = min(round(seconds * AUDIO_RATE), samples.shape[1] // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        samples[:, :n] *= ramp
        samples[:, samples.shape[1] - n :] *= ramp[::-1]
    return samples


def movie_sound(video, slots: list[Slot], fps: Fraction) -> np.ndarray:
    """(2, n) float32: each clip's own sound from the movie, silence where the movie has no audio stream."""
    av = require("av", "PyAV (av)")
    n = round(slots[-1].record_end / float(fps) * AUDIO_RATE)
    samples = np.zeros((2, n), np.float32)
    with open_container(video) as source:
        if not source.streams.audio:
            return samples
        stream = source.streams.audio[0]
        for s in slots:
            t0, t1 = s.source_start / float(fps), s.source_end / float(fps)
            at = round(s.record_start / float(fps) * AUDIO_RATE)
            clip = read_audio_range(av, source, stream, t0, t1)
            samples[:, at : at + clip.shape[1]] = clip[:, : n - at]
    return samples


def read_audio_range(av, container, stream, t0: float, t1: float) -> np.ndarray:
    """(2, round((t1 - t0) * AUDIO_RATE)) float32 from the audio stream by seeking; zeros where it has none."""
    want = round((t1 - t0) * AUDIO_RATE)
    out = np.zeros((2, want), np.float32)
    base = stream.time_base
    first = (stream.start_time or 0) * base
    container.seek(int((first + Fraction(t0).limit_denominator(10**6)) / base), stream=stream, backward=True)
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
    start_time = None
    chunks = []
    try:
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            if start_time is None:
                start_time = float(frame.pts * base - first)
            chunks.extend(o.to_ndarray() for o in resampler.resample(frame))
            if float(frame.pts * base - first) + frame.samples / frame.sample_rate >= t1:
                break
    except av.error.FFmpegError:
        pass  # a damaged audio packet: the rest of this clip stays silent
    if not chunks:
        return out
    decoded = np.concatenate(chunks, axis=1)
    offset = round((t0 - start_time) * AUDIO_RATE)
    if offset >= 0:
        piece = decoded[:, offset : offset + want]
        out[:, : piece.shape[1]] = piece
    else:  # the audio starts after t0
        piece = decoded[:, : want + offset]
        out[:, -offset : -offset + piece.shape[1]] = piece
    return out


def write_audio(av, out, aout, samples: np.ndarray) -> None:
    pts = 0
    for start in range(0, samples.shape[1], AAC_FRAME):
        chunk = np.ascontiguousarray(samples[:, start : start + AAC_FRAME])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, pts, Fraction(1, AUDIO_RATE)
        pts += chunk.shape[1]
        for packet in aout.encode(frame):
            out.mux(packet)
    for packet in aout.encode():
        out.mux(packet)
