"""Check a music-timed trailer directory as a reviewer with other tools would: what `trailer` wrote is read
back (the MP4 decoded frame by frame, the EDL through OpenTimelineIO, the PNG's tiles) and measured against
the music and the movie, not against what trailer.json claims.

    python benchmarks/cut_check.py DIR MUSIC

- black: frames whose brightest 1% of pixels stay under 24 of 255 (its own rule, not the project's
  `shots.is_dark`; letterbox bars do not count), outside trailer.json's fade;
- duration: decoded frames / fps against the music's length;
- cuts: the picture's own cuts (the content detector run on the trailer MP4, outside the fades) against
  the slots' bounds:
  a cut found inside a slot is a clip that crosses a shot of the movie; and every slot inside one shot of
  shots.json;
- on the music: each cut within one frame of a change of the music, by this project's detector run again
  on the music file and, with librosa installed, by librosa's onsets and beats (a detector this project
  shares no code with; its onsets mark the flux's peak, ~30 ms into an attack, where this project's mark
  its start);
- EDL: read back with OTIO, one audio clip holding the music for the picture's length;
- sheet: the tiles counted in trailer.png, against the slots.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BLACK = 24  # of 255: the brightest 1% of a black frame's pixels stay under this


def black_frames(mp4: Path, edge: int) -> tuple[int, int, int]:
    """Black frames outside the fades (`edge` frames at each end), frames outside them, and all frames,
    of the decoded picture."""
    from ssmp_infer.video.frames import iter_frames

    bright = np.array([np.percentile(frame, 99) for _, frame in iter_frames(mp4, 64, 36)])
    inside = bright[edge : len(bright) - edge]
    return int((inside < BLACK).sum()), len(inside), len(bright)


def librosa_changes(music: Path) -> np.ndarray | None:
    """Onsets and beats by librosa (times in seconds), or None when it is not installed. The music is
    decoded here (PyAV, mono, 22,050 Hz): librosa's own loader needs FFmpeg for m4a and mp3."""
    try:
        import librosa
    except ImportError:
        return None
    from ssmp_infer.video.music import load_audio

    audio = load_audio(music, rate=22050)
    y = audio.samples.mean(axis=0)
    onsets = librosa.onset.onset_detect(y=y, sr=audio.rate, units="time", backtrack=False)
    _, beats = librosa.beat.beat_track(y=y, sr=audio.rate, units="time")
    return np.unique(np.concatenate([onsets, beats]))


def sheet_tiles(png: Path, mp4: Path) -> int:
    """Tiles in the contact sheet: cells of the sheet's grid (its layout, the trailer's aspect) holding a
    picture rather than the plain ground."""
    from PIL import Image

    from ssmp_infer.video import sheet
    from ssmp_infer.video.frames import probe

    image = np.asarray(Image.open(png).convert("L")).astype(np.float32)
    info = probe(mp4)
    tile_h = sheet.tile_height(info.width, info.height)
    rows = (image.shape[0] - sheet.HEADER - sheet.PAD) // (tile_h + sheet.CAPTION + sheet.PAD)
    columns = (image.shape[1] - sheet.PAD) // (sheet.TILE_WIDTH + sheet.PAD)
    found = 0
    for k in range(rows * columns):
        x, y = sheet.tile_origin(k, columns, tile_h)
        found += bool(np.abs(image[y : y + tile_h, x : x + sheet.TILE_WIDTH] - sheet.BACKGROUND[0]).max() > 8)
    return found


def off(times: np.ndarray, places: np.ndarray, tolerance: float) -> int:
    """How many of `times` lie further than `tolerance` from every one of `places`."""
    if not len(times):
        return 0
    if not len(places):
        return len(times)
    return int((np.abs(times[:, None] - places[None, :]).min(axis=1) > tolerance).sum())


@dataclass
class CutCheck:
    slots: int
    black: int  # black frames outside the fades
    outside_fade: int  # frames outside the fades
    picture_seconds: float  # decoded frames / fps
    music_seconds: float
    crossing: int  # cuts of the decoded picture inside a slot: a clip crossing a cut of the movie
    outside_shot: int  # slots not inside one shot of shots.json
    bounds: int  # slot bounds inside the picture (its cuts)
    off_ours: int  # bounds further than a frame from this project's changes of the music file
    off_librosa: tuple[int, int] | None  # further than one frame, two frames, from librosa's onsets and beats
    librosa_lag_ms: float | None  # median of librosa's nearest change minus the bound
    edl_audio: list[tuple[str, int]]  # the EDL's audio clips read back: (name, frames)
    edl_picture: int  # the EDL's video track, frames
    sheet_tiles: int

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("slots", f"{self.slots}"),
            ("black frames outside the fades", f"{self.black} of {self.outside_fade}"),
            ("picture / music", f"{self.picture_seconds:.2f} / {self.music_seconds:.2f} s"),
            ("cuts of the picture inside a slot", f"{self.crossing}"),
            ("slots outside one shot", f"{self.outside_shot}"),
            ("cuts off the music by this project's detector (1 frame)", f"{self.off_ours} of {self.bounds}"),
            ("cuts off librosa's onsets and beats (1 frame, 2 frames)",
             "-" if self.off_librosa is None else f"{self.off_librosa[0]}, {self.off_librosa[1]} of {self.bounds}"),
            ("librosa's nearest change minus the cut, median", "-" if self.librosa_lag_ms is None else f"{self.librosa_lag_ms:+.0f} ms"),
            ("EDL audio clips (frames)", ", ".join(f"{name} ({n})" for name, n in self.edl_audio) + f"; picture {self.edl_picture}"),
            ("contact sheet tiles", f"{self.sheet_tiles}"),
        ]


def check(out: Path, music: Path) -> CutCheck:
    import opentimelineio as otio

    from ssmp_infer.video.music import load_audio, music_changes
    from ssmp_infer.video.shots import detect_shots, load_shots

    record = json.loads((out / "trailer.json").read_text())
    fps = record["fps"]
    mp4 = out / "trailer.mp4"
    slots = record["slots"]
    inner = np.array([s["record_end"] for s in slots[:-1]]) / fps
    sound = load_audio(music)
    fade = round((record.get("fade") or 0.0) * fps)  # frames; a fade's changing light can read as a cut too
    black, outside, frames = black_frames(mp4, fade)
    picture_cuts = np.array([a for a, _ in detect_shots(mp4, "content").bounds[1:] if fade <= a <= frames - fade]) / fps
    shots = load_shots(out / "shots.json")
    theirs = librosa_changes(music)
    edl = otio.adapters.read_from_file(str(out / "trailer.edl"), rate=fps)
    return CutCheck(
        slots=len(slots),
        black=black,
        outside_fade=outside,
        picture_seconds=frames / fps,
        music_seconds=sound.duration,
        crossing=off(picture_cuts, inner, 1.5 / fps),  # a cut of the picture where no slot ends
        outside_shot=sum(not (shots.bounds[s["shot"]][0] <= s["source_start"] < s["source_end"] <= shots.bounds[s["shot"]][1])
                         for s in slots),
        bounds=len(inner),
        off_ours=off(inner, music_changes(sound).times, 1 / fps),
        off_librosa=None if theirs is None else (off(inner, theirs, 1 / fps), off(inner, theirs, 2 / fps)),
        librosa_lag_ms=None if theirs is None or not len(inner) else
        1000 * float(np.median([theirs[np.abs(theirs - t).argmin()] - t for t in inner])),
        edl_audio=[(c.name, round(c.source_range.duration.value)) for t in edl.audio_tracks() for c in t.find_clips()],
        edl_picture=round(edl.video_tracks()[0].duration().value),
        sheet_tiles=sheet_tiles(out / "trailer.png", mp4),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the trailer directory")
    parser.add_argument("music", type=Path)
    args = parser.parse_args()
    for key, value in check(args.out, args.music).rows():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
