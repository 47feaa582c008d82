"""From a trailer (movie shots in trailer order) to an edit: each slot's source range in the movie, then
an OpenTimelineIO timeline (`.otio`) and a CMX3600 EDL (`.edl`) that editors import.

Everything is in whole frames at the movie's frame rate, so the timeline, the EDL and the render agree
exactly. A slot's clip is cut from the middle of its shot and never crosses the shot's cuts:
- with music, slot j lasts segment j; a shot longer than that gives its middle part; a shot shorter
  than its segment is used whole and the rest of the segment is black (a gap in the timeline), so the
  cuts stay on the music's changes; after the last shot the trailer ends (the music fades out there);
- without music, a slot lasts `shot_seconds` or the whole shot when that is shorter.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from ..errors import InputError
from . import require

DEFAULT_SHOT_SECONDS = 2.0  # CMTD trailers: ~70 shots in ~2.2 minutes


@dataclass
class Slot:
    slot: int
    shot: int  # index into the shots file
    source_start: int  # frames in the movie, start inclusive
    source_end: int  # end exclusive; inside the shot
    record_start: int  # frames in the trailer
    record_end: int  # = record_start + clip + black

    @property
    def clip_frames(self) -> int:
        return self.source_end - self.source_start

    @property
    def black_frames(self) -> int:
        return self.record_end - self.record_start - self.clip_frames

    def to_dict(self, fps: Fraction) -> dict:
        sec = lambda f: round(f / float(fps), 6)  # noqa: E731
        return {**asdict(self), "black_frames": self.black_frames,
                "source_start_s": sec(self.source_start), "source_end_s": sec(self.source_end),
                "record_start_s": sec(self.record_start), "record_end_s": sec(self.record_end)}

    @classmethod
    def from_dict(cls, d: dict) -> "Slot":
        return cls(*(int(d[k]) for k in ("slot", "shot", "source_start", "source_end", "record_start", "record_end")))


def plan_slots(bounds: list[tuple[int, int]], shots: list[int], fps: Fraction,
               segments: list[float] | None = None, shot_seconds: float = DEFAULT_SHOT_SECONDS) -> list[Slot]:
    """Each trailer shot's source range (frames) and place in the trailer. `segments`: the music's
    boundaries in seconds ([0, ..., end], one segment per shot)."""
    if segments is not None and len(segments) - 1 != len(shots):
        raise InputError(f"{len(segments) - 1} music segments for {len(shots)} trailer shots")
    if shot_seconds <= 0:
        raise InputError(f"--shot-seconds must be positive, got {shot_seconds}")
    slots = []
    record = 0
    for j, shot in enumerate(shots):
        start, end = bounds[shot]
        if segments is not None:  # cumulative rounding: slot j ends on the frame nearest its music change
            length = max(1, round(segments[j + 1] * fps) - record)
            clip = min(length, end - start)
            if j == len(shots) - 1:
                length = clip  # no black after the last shot: the trailer (and its music) ends with it
        else:
            length = clip = max(1, min(end - start, round(shot_seconds * fps)))
        first = start + (end - start - clip) // 2  # the middle of the shot
        slots.append(Slot(j, shot, first, first + clip, record, record + length))
        record += length
    return slots


def check_slots(slots: list[Slot], num_frames: int, source: str) -> None:
    record = 0
    for s in slots:
        if not (0 <= s.source_start < s.source_end <= num_frames) or s.record_start != record or s.black_frames < 0:
            raise InputError(f"{source}: slot {s.slot} does not fit the video ({num_frames} frames) or the slots before it")
        record = s.record_end


def build_timeline(slots: list[Slot], fps: Fraction, video: str, num_frames: int, name: str,
                   music: str | None = None, confidence: list[float] | None = None):
    """An OTIO timeline: one video track (a clip per slot, named after its movie shot, gaps for black)
    and, with music, an audio track holding the music from its start for the trailer's length."""
    otio = require("opentimelineio", "opentimelineio")
    rate = float(fps)
    rt = lambda frames: otio.opentime.RationalTime(frames, rate)  # noqa: E731
    timeline = otio.schema.Timeline(name=name)
    timeline.global_start_time = rt(0)
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    for s in slots:
        media = otio.schema.ExternalReference(target_url=Path(video).resolve().as_uri(),
                                              available_range=otio.opentime.TimeRange(rt(0), rt(num_frames)))
        meta = {"slot": s.slot, "shot": s.shot}
        if confidence is not None:
            meta["confidence"] = confidence[s.slot]
        track.append(otio.schema.Clip(name=f"shot {s.shot}", media_reference=media,
                                      source_range=otio.opentime.TimeRange(rt(s.source_start), rt(s.clip_frames)),
                                      metadata={"ssmp_infer": meta, "cmx_3600": {"reel": reel_name(video)}}))
        if s.black_frames:
            track.append(otio.schema.Gap(source_range=otio.opentime.TimeRange(rt(0), rt(s.black_frames))))
    timeline.tracks.append(track)
    if music is not None:
        total = slots[-1].record_end if slots else 0
        audio = otio.schema.Track(name="A1", kind=otio.schema.TrackKind.Audio)
        audio.append(otio.schema.Clip(name=Path(music).name,
                                      media_reference=otio.schema.ExternalReference(target_url=Path(music).resolve().as_uri()),
                                      source_range=otio.opentime.TimeRange(rt(0), rt(total))))
        timeline.tracks.append(audio)
    return timeline


def timeline_text(timeline) -> str:
    otio = require("opentimelineio", "opentimelineio")
    return otio.adapters.write_to_string(timeline, "otio_json")


def edl_text(timeline) -> str:
    """CMX3600 (otio-cmx3600-adapter) of the video track: one event per clip; black shows as a jump in
    record time, which readers turn back into a gap. Timecodes are at the movie's frame rate, which a
    CMX3600 file cannot state: readers must be given it (OTIO: `read_from_file(path, rate=FPS)`)."""
    otio = require("opentimelineio", "opentimelineio")
    require("otio_cmx3600_adapter", "otio-cmx3600-adapter")
    video_only = otio.schema.Timeline(name=timeline.name)
    video_only.global_start_time = timeline.global_start_time
    video_only.tracks.append(timeline.video_tracks()[0].clone())
    return otio.adapters.write_to_string(video_only, "cmx_3600")


def reel_name(video: str) -> str:
    """CMX3600 reels are at most 8 letters and digits."""
    return re.sub(r"[^A-Za-z0-9]", "", Path(video).stem).upper()[:8] or "AX"
