"""Music: decoded with PyAV (any file with an audio stream: wav, mp3, m4a, a video's soundtrack), its
changes found at three scales: the places a trailer may cut.

- Onsets (`onsets`): where a note, a beat or a click starts. Spectral flux of log band energies every
  10 ms, peaks above a local threshold. Dense (several a second in most music), precise to ~10 ms.
- Beats (`beats`): the music's pulse, where it has one. Many beats of real music rise too little to pass
  as onsets on their own (a mixed, compressed song: a third of its beats), yet they are where an editor
  cuts. The tempo comes from the flux's autocorrelation, the beats from dynamic programming along the flux
  (Ellis 2007, "Beat tracking by dynamic programming"); each beat is placed on the flux's peak within
  20 ms and kept where it rises above its surroundings. Music without a steady pulse (free notes, a
  steady tone, noise) gives none.
- Sections (`segment_music`): where the music's colour changes for good, below.

A trailer cuts only on these (`music_changes` merges them; `cuts.fit_cuts` chooses among them).

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


def band_power(audio: Audio, hop: int, win: int, low: float) -> np.ndarray:
    """(frames, BANDS) power of the mono mix in Hann windows of `win` samples every `hop`, summed over BANDS
    log-spaced bands from `low` Hz to Nyquist; the end is zero-padded to a whole window."""
    x = audio.samples.mean(axis=0)
    n = max(1, 1 + (len(x) - win) // hop)
    x = np.pad(x, (0, max(0, (n - 1) * hop + win - len(x))))
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:n] * np.hanning(win)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (n, win/2 + 1)
    freqs = np.fft.rfftfreq(win, 1 / audio.rate)
    edges = np.geomspace(low, audio.rate / 2, BANDS + 1)
    return np.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in zip(edges, edges[1:])], axis=1)


def band_energies(audio: Audio) -> np.ndarray:
    """(frames, BANDS) standardised log band energies, one row every HOP_SECONDS."""
    hop = int(HOP_SECONDS * audio.rate)
    band = band_power(audio, hop, 2 * hop, 40.0)
    # Floors: energy 80 dB under the loudest band (silence is not infinitely quiet), spread 0.5 nats
    # (~2 dB) so a band that barely moves (a steady tone's) is not blown up into change points.
    feats = np.log(band + 1e-8 * band.max() + 1e-20)
    return (feats - feats.mean(axis=0)) / np.maximum(feats.std(axis=0), STD_FLOOR)


def section_changes(audio: Audio, min_segment: float = MIN_SEGMENT, penalty: float = PENALTY) -> list[float]:
    """Times (seconds) where the music's colour changes for good: ruptures' change points."""
    check_music(audio)
    rpt = require("ruptures")
    feats = band_energies(audio)
    min_size = max(2, round(min_segment / HOP_SECONDS))
    if len(feats) < 2 * min_size:
        return []
    # A fixed bandwidth (the mean squared distance of two standardised rows is 2 * BANDS): ruptures'
    # median heuristic divides by zero on a steady passage, where most rows are equal.
    algo = rpt.KernelCPD(kernel="rbf", min_size=min_size, params={"gamma": 1 / (2 * BANDS)}).fit(feats)
    return [c * HOP_SECONDS for c in algo.predict(pen=penalty) if c < len(feats)]


def split_long(bounds: list[float], max_segment: float = MAX_SEGMENT) -> list[float]:
    """Segments longer than `max_segment` split evenly."""
    out = [bounds[0]]
    for a, b in zip(bounds, bounds[1:]):
        pieces = max(1, int(np.ceil((b - a) / max_segment - 1e-9)))
        out.extend(a + (b - a) * (k + 1) / pieces for k in range(pieces))
    return out


def segment_music(audio: Audio, min_segment: float = MIN_SEGMENT, max_segment: float = MAX_SEGMENT,
                  penalty: float = PENALTY) -> list[float]:
    """Segment boundaries in seconds, [0, ..., duration]: ruptures change points, long segments split."""
    return split_long([0.0, *section_changes(audio, min_segment, penalty), audio.duration], max_segment)


# Onsets: finer than the sections' analysis, so a cut lands within a frame of the sound that starts.
ONSET_HOP = 0.01  # seconds
ONSET_WINDOW = 512  # samples at ANALYSIS_RATE (23 ms): a click is placed to about half of that
ONSET_SPACING = 0.1  # seconds: at most one onset in this span (the strongest)
ONSET_FLOOR = 0.05  # a peak below this share of the music's strongest onsets is not an onset
ONSET_LOCAL = 1.0  # seconds: a peak must stand out against the flux this far around it
ONSET_RISE = 1.25 * BANDS  # and rise above its surroundings by this (nats, summed over the bands): about
# 22 dB in a quarter of the bands. White noise's own fluctuations reach 0.85 * BANDS (30 s, six seeds); a
# drum hit or a click rises by 5 * BANDS and more


@dataclass
class MusicChanges:
    """Where a trailer may cut: times in seconds (0 < t < duration) with a strength in (0, 1] (an onset's
    loudness against the music's strongest, 1 and more where a section changes too)."""

    times: np.ndarray
    strengths: np.ndarray
    sections: list[float]  # segment_music's bounds, [0, ..., duration]: the trailer's first guess at its length
    duration: float
    section_changes: int = 0  # how many of the changes are section changes (the rest: onsets and beats)
    beats: int = 0  # how many are beats (some of them onsets too)
    tempo: float = 0.0  # bpm of the beats (0: the music has no steady pulse)

    def at_frames(self, fps) -> np.ndarray:
        """Strength of the strongest change at each frame boundary of a picture as long as the music
        (`round(duration * fps) + 1` of them; 0: none)."""
        total_frames = round(self.duration * float(fps))
        weights = np.zeros(total_frames + 1)
        frames = np.round(self.times * float(fps)).astype(int)
        inside = (frames > 0) & (frames < total_frames)
        np.maximum.at(weights, frames[inside], self.strengths[inside])
        return weights


def onset_flux(audio: Audio) -> tuple[np.ndarray, float, float]:
    """Positive spectral flux of log band energies, the seconds between values (ONSET_HOP in whole
    samples) and the time of value 0."""
    hop = max(1, round(ONSET_HOP * audio.rate))
    win = ONSET_WINDOW
    band = band_power(audio, hop, win, 80.0)
    # dB-like, floored 60 dB under the loudest moment: fluctuations of near-silence are not onsets
    logs = np.log(band + 1e-6 * band.max() + 1e-20)
    flux = np.maximum(np.diff(logs, axis=0), 0).sum(axis=1)
    # flux[i] compares window i + 1 with window i: a sound starting inside window i + 1 shows there, and
    # the window's centre is the best single guess of where
    return flux, hop / audio.rate, (hop + win / 2) / audio.rate


def onsets(audio: Audio, flux: tuple[np.ndarray, float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Onset times (seconds) and strengths in (0, 1]; `flux`: `onset_flux(audio)` when already computed."""
    flux, step, t0 = flux or onset_flux(audio)
    if len(flux) < 3 or flux.max() <= 0:
        return np.zeros(0), np.zeros(0)
    spacing = max(1, round(ONSET_SPACING / ONSET_HOP))
    is_peak = flux >= neighbourhood(flux, spacing, -np.inf).max(axis=1)
    # stands out: above the local median by three of the local spreads (MAD), so a steady texture (noise,
    # a held chord, its vibrato) gives none while a beat in a busy mix still does
    windows = surroundings(flux)
    median = np.median(windows, axis=1)
    spread = np.median(np.abs(windows - median[:, None]), axis=1)
    stands_out = flux > median + np.maximum(3 * spread, ONSET_RISE)
    peaks = np.flatnonzero(is_peak & stands_out)
    if not len(peaks):
        return np.zeros(0), np.zeros(0)
    height = flux[peaks] - median[peaks]
    strength = np.clip(height / np.percentile(height, 95), 0, 1)
    keep = strength >= ONSET_FLOOR
    return peaks[keep] * step + t0, strength[keep]


def surroundings(flux: np.ndarray) -> np.ndarray:
    """(n, window): the flux ONSET_LOCAL s either side of each value (reflected at the ends), a view."""
    return neighbourhood(flux, max(3, round(ONSET_LOCAL / ONSET_HOP)))


def neighbourhood(flux: np.ndarray, half: int, fill: float | None = None) -> np.ndarray:
    """(n, 2 * half + 1) view: each value with the `half` values either side; past the ends `fill`, or the
    flux reflected when None."""
    padded = np.pad(flux, half, mode="reflect") if fill is None else np.pad(flux, half, constant_values=fill)
    return np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)


# Beats. Thresholds measured on a real song (a music video's soundtrack, 113 bpm, two excerpts: periodicity
# 0.50 and 0.51, median beat rise 0.78 and 1.07 * BANDS), synthetic drums at 120 bpm (0.93, 6.1 * BANDS),
# free notes 0.7-1.6 s apart (0.03-0.06, four seeds), white noise (0.07) and a steady tone (0.97: its flux
# is periodic rounding, 0.01 * BANDS high)
BEAT_PERIODS = (0.3, 1.0)  # seconds between beats: 200 to 60 bpm
BEAT_PRIOR = 0.5  # seconds (120 bpm): the period preferred, one octave wide, so a half or double tempo loses
BEAT_TIGHTNESS = 100.0  # how strongly the beats keep the tempo against the flux (Ellis's alpha)
BEAT_PERIODICITY = 0.2  # the flux's autocorrelation at the period must reach this: a pulse, not free notes
BEAT_PULSE = 0.5 * BANDS  # and the median beat rise above its surroundings by this (nats, as ONSET_RISE)
BEAT_RISE = 0.25 * BANDS  # a beat rising less (a beat the tracker kept through a quiet bar) is no place to cut
BEAT_SNAP = 0.02  # seconds: a beat moves onto the flux's peak this near
SAME_CHANGE = 0.03  # seconds: an onset and a beat this close are one change


def beat_period(flux: np.ndarray, step: float) -> tuple[int, float]:
    """The beat period in flux values and the flux's autocorrelation there (1: perfectly periodic)."""
    centred = flux - flux.mean()
    n = len(centred)
    spectrum = np.fft.rfft(centred, 2 * n)  # zero-padded: a linear, not circular, autocorrelation
    ac = np.fft.irfft(np.abs(spectrum) ** 2)[:n]
    ac = ac / max(ac[0], 1e-12)
    lags = np.arange(n) * step
    candidates = np.flatnonzero((lags >= BEAT_PERIODS[0]) & (lags <= BEAT_PERIODS[1]))
    if not len(candidates):
        return 0, 0.0
    prior = np.exp(-0.5 * np.log2(lags[candidates] / BEAT_PRIOR) ** 2)
    best = candidates[np.argmax(ac[candidates] * prior)]
    return int(best), float(ac[best])


def track_beats(flux: np.ndarray, period: int) -> np.ndarray:
    """Beat indices into `flux` for a beat every `period` values, roughly: each beat maximises the flux it
    lands on plus the best chain of beats before it, a chain paying for each gap away from the period."""
    n = len(flux)
    local = flux / max(flux.std(), 1e-12)
    taps = np.arange(-period, period + 1)
    local = np.convolve(local, np.exp(-0.5 * (taps * 32.0 / period) ** 2), "same")  # a beat's width
    gaps = np.arange(2 * period, max(1, period // 2) - 1, -1)  # the previous beat lies t - gap
    penalty = BEAT_TIGHTNESS * np.log(gaps / period) ** 2
    score, previous = local.copy(), np.full(n, -1)
    for t in range(gaps[-1], n):
        before = t - gaps
        ok = before >= 0
        chain = score[before[ok]] - penalty[ok]
        j = int(np.argmax(chain))
        if chain[j] > 0:
            score[t] += chain[j]
            previous[t] = before[ok][j]
    beat = n - period + int(np.argmax(score[n - period:])) if n > period else int(np.argmax(score))
    found = [beat]
    while previous[found[-1]] >= 0:
        found.append(int(previous[found[-1]]))
    return np.asarray(found[::-1])


def beats(audio: Audio, flux: tuple[np.ndarray, float, float] | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Beat times (seconds) with strengths in (0, 0.5], and the tempo in bpm (0: no pulse, no beats).
    A beat is worth at most half an onset as strong: where both are, the stronger counts."""
    flux, step, t0 = flux or onset_flux(audio)
    none = np.zeros(0), np.zeros(0), 0.0
    if len(flux) < 3 or flux.max() <= 0:
        return none
    period, periodicity = beat_period(flux, step)
    if period == 0 or periodicity < BEAT_PERIODICITY:
        return none
    snap = max(1, round(BEAT_SNAP / step))
    found = track_beats(flux, period)
    found = np.unique(found - snap + np.argmax(neighbourhood(flux, snap, -np.inf)[found], axis=1))  # onto the peak nearby
    rise = flux[found] - np.median(surroundings(flux)[found], axis=1)  # as an onset's height
    if not len(rise) or np.median(rise) < BEAT_PULSE:
        return none
    keep = rise >= BEAT_RISE
    strength = 0.5 * np.clip(rise[keep] / np.percentile(rise, 95), 0.1, 1.0)
    return found[keep] * step + t0, strength, 60.0 / (period * step)


def nearest(times: np.ndarray, at: np.ndarray) -> np.ndarray:
    """For each of `at`, the index of the nearest of `times` (sorted, not empty)."""
    right = np.clip(np.searchsorted(times, at), 0, len(times) - 1)
    left = np.maximum(right - 1, 0)
    return np.where(np.abs(times[left] - at) <= np.abs(times[right] - at), left, right)


def merge_changes(times: np.ndarray, strengths: np.ndarray, more_times: np.ndarray, more_strengths: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Two sets of changes as one, in time order: one of the second within SAME_CHANGE s of one of the first
    is that change (the stronger strength counts, the first's time); the others join."""
    if not len(times):
        return more_times, more_strengths
    near = nearest(times, more_times)
    same = np.abs(times[near] - more_times) <= SAME_CHANGE
    strengths = strengths.copy()
    np.maximum.at(strengths, near[same], more_strengths[same])
    times = np.concatenate([times, more_times[~same]])
    strengths = np.concatenate([strengths, more_strengths[~same]])
    order = np.argsort(times, kind="stable")
    return times[order], strengths[order]


def music_changes(audio: Audio) -> MusicChanges:
    """Onsets, beats and section changes together. A section change moves to an onset or beat within
    0.1 s (the sections' 50 ms analysis places it less precisely) and adds 1 to that change's strength."""
    changes = section_changes(audio)
    flux = onset_flux(audio)
    times, strengths = onsets(audio, flux)
    beat_times, beat_strengths, tempo = beats(audio, flux)
    times, strengths = merge_changes(times, strengths, beat_times, beat_strengths)
    extra_times, extra_strengths = [], []
    for cut in changes:
        near = int(np.argmin(np.abs(times - cut))) if len(times) else -1
        if near >= 0 and abs(times[near] - cut) <= 0.1:
            strengths[near] += 1.0
        else:
            extra_times.append(cut)
            extra_strengths.append(1.0)
    times = np.concatenate([times, extra_times])
    strengths = np.concatenate([strengths, extra_strengths])
    order = np.argsort(times, kind="stable")
    times, strengths = times[order], strengths[order]
    inside = (times > 0) & (times < audio.duration)
    sections = split_long([0.0, *changes, audio.duration])
    return MusicChanges(times[inside], strengths[inside], sections, audio.duration, len(changes), len(beat_times), tempo)
