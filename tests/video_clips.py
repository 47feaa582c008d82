"""Clips and music made with PyAV for the movie-file tests: shots of known lengths and colours, music
whose changes fall at known times, and readers that check a render against them."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

import av  # the callers skip first when the video extra is missing

from ssmp_infer.video.frames import iter_frames

FPS = 25
SHOT_LENGTHS = [30, 17, 40, 25, 33, 21, 28]  # frames; every shot its own colour and texture
CUTS = list(np.cumsum(SHOT_LENGTHS)[:-1])  # the first frame of each new shot
SIZE = (160, 96)
MUSIC_SEGMENTS = [1.5, 1.0, 2.0, 1.5]  # seconds; changes fall on its beat (every 0.5 s), as in most music
# Neighbouring shots differ in colour as cuts in films do in content: TransNetV2 (at 48x27 pixels) scores
# a cut between two near-identical colours differing only in fine texture below its 0.5 threshold.
PALETTE = [(200, 60, 50), (50, 170, 80), (60, 70, 200), (220, 200, 60), (170, 60, 190), (60, 190, 200),
           (230, 140, 40), (90, 90, 90)]


def make_clip(path, shot_lengths=SHOT_LENGTHS, fps=FPS, size=SIZE, tone_hz=440.0, seed=0, gain=None):
    """An H.264 clip of coloured (PALETTE in turn), moving, slightly noisy shots and (if tone_hz) an AAC tone
    track. `gain`: per frame, a factor on the picture (0: black), for fades."""
    rng = np.random.default_rng(seed)
    w, h = size
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "18"})
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        audio = out.add_stream("aac", rate=48000, layout="stereo") if tone_hz else None
        yy, xx = np.mgrid[0:h, 0:w]
        n = 0
        for k, length in enumerate(shot_lengths):
            colour = np.array(PALETTE[k % len(PALETTE)])
            freq, angle = rng.uniform(0.03, 0.12), rng.uniform(-1, 1)
            for t in range(length):
                wave = 25 * np.sin(freq * (xx + angle * yy + 2 * t))[..., None]
                img = colour + wave + rng.normal(0, 3, (h, w, 3))
                img = np.clip(img if gain is None else img * gain[n], 0, 255).astype(np.uint8)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = n
                n += 1
                out.mux(video.encode(frame))
        out.mux(video.encode())
        if audio is not None:
            t = np.arange(round(n / fps * 48000)) / 48000
            write_tone(out, audio, 0.2 * np.sin(2 * np.pi * tone_hz * t))
    return path


def write_tone(out, stream, signal, rate=48000):
    signal = signal.astype(np.float32)
    for start in range(0, len(signal), 1024):
        chunk = np.ascontiguousarray(np.stack([signal[start : start + 1024]] * stream.codec_context.channels))
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=stream.layout.name)
        frame.sample_rate, frame.pts = rate, start
        out.mux(stream.encode(frame))
    out.mux(stream.encode())


def make_music(path, segments, rate=22050):
    """A WAV whose timbre changes at known times: one chord of harmonics per segment, over a steady beat."""
    rng = np.random.default_rng(1)
    parts = []
    for k, seconds in enumerate(segments):
        t = np.arange(round(seconds * rate)) / rate
        root = [110, 165, 131, 220, 147, 196][k % 6]
        chord = sum(np.sin(2 * np.pi * root * r * t) for r in (1, 1.26, 1.5, 2 + k % 3)) * 0.08
        beat = np.zeros_like(t)
        for b in np.arange(0, seconds, 0.5):
            i = int(b * rate)
            n = min(int(0.06 * rate), len(t) - i)
            beat[i : i + n] += 0.3 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.015 * rate))
        parts.append(chord + beat)
    return write_wav(path, np.concatenate(parts), rate)


def decoded_frames(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def colour_runs(path) -> list[tuple[int, int]]:
    """The shots of a render made from `make_clip`'s clip: runs of frames by nearest PALETTE colour, as
    (shot index, frames). Independent of the detectors (PySceneDetect scores red to yellow below its threshold)."""
    palette = np.array(PALETTE[: len(SHOT_LENGTHS)], np.float32)
    runs: list[list[int]] = []
    for _, frame in iter_frames(path, 16, 16):
        mean = frame.reshape(-1, 3).mean(axis=0)
        shot = -1 if mean.max() < 20 else int(np.linalg.norm(palette - mean, axis=1).argmin())  # -1: black
        if runs and runs[-1][0] == shot:
            runs[-1][1] += 1
        else:
            runs.append([shot, 1])
    return [tuple(r) for r in runs]


def cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ssmp_infer.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


def one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ssmp-infer: error: ") and "Traceback" not in stderr
    return lines[0]


def write_wav(path, signal, rate=22050):
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        pcm = (np.clip(signal, -1, 1) * 32767).astype(np.int16)
        for start in range(0, len(pcm), 1024):
            frame = av.AudioFrame.from_ndarray(pcm[None, start : start + 1024].copy(), format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def click_signal(times, seconds, rate=22050, bed=True, seed=2):
    """A click track: a short noise burst at each of `times` (seconds), over a steady chord (no onsets of
    its own) when `bed`."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    signal = sum(0.05 * np.sin(2 * np.pi * f * t) for f in (196, 247, 294)) if bed else np.zeros_like(t)
    n = int(0.01 * rate)
    for c in times:
        i = round(c * rate)
        piece = 0.8 * np.exp(-np.arange(n) / (0.002 * rate)) * rng.choice([-1.0, 1.0], n)
        signal[i : i + n] += piece[: len(signal) - i]
    return signal


def make_clicks(path, times, seconds, rate=22050):
    return write_wav(path, click_signal(times, seconds, rate), rate)


def soft_pulse(bpm, seconds, level=0.0035, accent_every=8, rate=22050, seed=0):
    """A mixed song's pulse: a soft hit on every beat (one in `accent_every` loud) under a louder swelling
    chord, as a beat sits under a song's pad. Most hits rise too little to be onsets on their own.
    Returns the signal and the beat times."""
    rng = np.random.default_rng(seed)
    times = np.arange(0.4, seconds - 0.2, 60 / bpm)
    t = np.arange(round(seconds * rate)) / rate
    signal = sum(0.05 * np.sin(2 * np.pi * f * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t + f)) for f in (196, 247, 294, 392))
    n = int(0.03 * rate)
    for k, c in enumerate(times):
        i = round(c * rate)
        piece = (0.5 if k % accent_every == 0 else level) * np.exp(-np.arange(n) / (0.008 * rate)) * rng.standard_normal(n)
        signal[i : i + n] += piece[: len(signal) - i]
    return signal, times


def free_notes(seconds, rate=22050, seed=0):
    """Decaying notes 0.7-1.6 s apart at random: onsets, but no steady pulse."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    signal, at = np.zeros_like(t), 0.3
    while at < seconds:
        i = round(at * rate)
        signal[i:] += 0.3 * np.sin(2 * np.pi * rng.choice([196, 220, 247, 262, 294, 330]) * t[: len(t) - i]) * np.exp(-t[: len(t) - i] / 0.6)
        at += rng.uniform(0.7, 1.6)
    return signal


REVIEW_SHOT_LENGTHS = [30, 17, 40, 25, 33, 21, 28, 30, 26, 35, 22, 31]  # a clip of 12 shots to review


def ssmp_cli(*args, **kwargs) -> subprocess.CompletedProcess:
    """The console command, as a user runs it (its module, in this interpreter)."""
    return subprocess.run([sys.executable, "-m", "ssmp_infer.entry", *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kwargs)


def make_review_dir(work, length: int):
    """A `ssmp-infer trailer` directory (work/out) of a 12-shot clip, for the review page's tests."""
    make_clip(work / "clip.mp4", shot_lengths=REVIEW_SHOT_LENGTHS)
    r = ssmp_cli("trailer", work / "clip.mp4", "--out", work / "out", "--length", length, "--detector", "content", "--quiet")
    assert r.returncode == 0, r.stderr
    return work / "out"
