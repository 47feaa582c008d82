"""Music: decoded with PyAV (any file with an audio stream: wav, mp3, m4a, a video's soundtrack) and
cut into segments with ruptures at the scale of trailer shots.

Segmentation: log energies in 24 log-spaced bands every 50 ms, each band standardised, are cut by
ruptures' kernel change-point detection (RBF kernel, penalised: the music decides how many changes)
with segments of at least MIN_SEGMENT s. A segment still longer than MAX_SEGMENT s (a steady
passage) is split evenly, so trailer shots stay a few seconds long, as in trailers (CMTD's average
about 2 s). The trailer's length J is the number of segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import require
from .frames import open_container

ANALYSIS_RATE = 22050  # Hz, mono: enough for band energies up to 11 kHz
HOP_SECONDS = 0.05
BANDS = 24
MIN_SEGMENT = 1.0  # seconds
MAX_SEGMENT = 4.0
STD_FLOOR = 0.5
MIN_MUSIC = 1.0  # shorter music is refused: not one trailer shot's worth
PENALTY = 3.0  # ruptures' penalty, chosen on synthetic music (chords changing every 1-4 s under a beat and a
# melody): every change found within 0.1 s and none added from 1 to 3; 5 begins to miss changes; steady
# tones and white noise give none (they are then split evenly)


@dataclass
class Audio:
    samples: np.ndarray  # (channels, n) float32 in [-1, 1]
    rate: int
    path: str

    @property
    def duration(self) -> float:
        return self.samples.shape[1] / self.rate


def load_audio(path: str | Path, rate: int = ANALYSIS_RATE, layout: str = "mono") -> Audio:
    """Decode the first audio stream of any file PyAV reads, resampled to `rate` and `layout`."""
    av = require("av", "PyAV (av)")
    chunks = []
    with open_container(path, kind="music") as container:
        if not container.streams.audio:
            raise InputError(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except av.error.FFmpegError as e:
            raise InputError(f"{path}: decoding its audio failed ({e.strerror or type(e).__name__})") from None
    channels = 1 if layout == "mono" else 2
    samples = np.concatenate(chunks, axis=1).astype(np.float32) if chunks else np.zeros((channels, 0), np.float32)
    return Audio(samples, rate, str(path))


def check_music(audio: Audio) -> None:
    if audio.duration < MIN_MUSIC:
        raise InputError(f"music {audio.path} lasts {audio.duration:.2f} s; at least {MIN_MUSIC:g} s is needed")


def band_energies(audio: Audio) -> np.ndarray:
    """(frames, BANDS) standardised log band energies, one row every HOP_SECONDS."""
    x = audio.samples.mean(axis=0)
    hop = int(HOP_SECONDS * audio.rate)
    win = 2 * hop
    n = max(1, 1 + (len(x) - win) // hop)
    x = np.pad(x, (0, max(0, (n - 1) * hop + win - len(x))))
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:n] * np.hanning(win)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (n, win/2 + 1)
    freqs = np.fft.rfftfreq(win, 1 / audio.rate)
    edges = np.geomspace(40.0, audio.rate / 2, BANDS + 1)
    band = np.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in zip(edges, edges[1:])], axis=1)
    # Floors: energy 80 dB under the loudest band (silence is not infinitely quiet), spread 0.5 nats
    # (~2 dB) so a band that barely moves (a steady tone's) is not blown up into change points.
    feats = np.log(band + 1e-8 * band.max() + 1e-20)
    return (feats - feats.mean(axis=0)) / np.maximum(feats.std(axis=0), STD_FLOOR)


def segment_music(audio: Audio, min_segment: float = MIN_SEGMENT, max_segment: float = MAX_SEGMENT,
                  penalty: float = PENALTY) -> list[float]:
    """Segment boundaries in seconds, [0, ..., duration]: ruptures change points, long segments split."""
    check_music(audio)
    rpt = require("ruptures")
    feats = band_energies(audio)
    min_size = max(2, round(min_segment / HOP_SECONDS))
    cuts: list[int] = []
    if len(feats) >= 2 * min_size:
        # A fixed bandwidth (the mean squared distance of two standardised rows is 2 * BANDS): ruptures'
        # median heuristic divides by zero on a steady passage, where most rows are equal.
        algo = rpt.KernelCPD(kernel="rbf", min_size=min_size, params={"gamma": 1 / (2 * BANDS)}).fit(feats)
        cuts = [c for c in algo.predict(pen=penalty) if c < len(feats)]
    bounds = [0.0, *(c * HOP_SECONDS for c in cuts), audio.duration]
    out = [0.0]
    for a, b in zip(bounds, bounds[1:]):
        pieces = max(1, int(np.ceil((b - a) / max_segment - 1e-9)))
        out.extend(a + (b - a) * (k + 1) / pieces for k in range(pieces))
    return out


def merge_segments(bounds: list[float], count: int) -> list[float]:
    """Merge segments until there are at most `count`: each time the shortest segment joins its shorter
    neighbour (a trailer cannot hold more shots than the movie has)."""
    bounds = list(bounds)
    while len(bounds) - 1 > count:
        lengths = np.diff(bounds)
        k = int(np.argmin(lengths))
        if k == 0:
            drop = 1  # the first segment can only join the next
        elif k == len(lengths) - 1:
            drop = k  # the last only the previous
        else:
            drop = k if lengths[k - 1] <= lengths[k + 1] else k + 1
        del bounds[drop]
    return bounds
