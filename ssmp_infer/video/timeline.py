"""From a trailer (movie shots in trailer order) to an edit: each slot's source range in the movie, then
an OpenTimelineIO timeline (`.otio`) and a CMX3600 EDL (`.edl`) that editors import.

Everything is in whole frames at the movie's frame rate, so the timeline, the EDL and the render agree
exactly. A slot's clip never crosses its shot's cuts and there is no black between clips:
- with music, slot j lasts from cut j to cut j + 1, points on the music's changes that `cuts.fit_cuts`
  chose so that no slot is longer than its shot;
- without music, a slot lasts `shot_seconds` or the whole shot when that is shorter.
A shot longer than its slot gives its middle part: the embedder's frames are spread evenly through the
shot (`embed.sample_frames`), so the middle is what the model judged the shot by, and it is furthest
from the cuts' edges, where dissolves, fades and a detector's frame of error live.
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
    record_end: int  # = record_start + clip_frames: no black between clips

    @property
    def clip_frames(self) -> int:
        return self.source_end - self.source_start

    def to_dict(self, fps: Fraction) -> dict:
        sec = lambda f: round(f / float(fps), 6)  # noqa: E731
        return {**asdict(self), "source_start_s": sec(self.source_start), "source_end_s": sec(self.source_end),
                "record_start_s": sec(self.record_start), "record_end_s": sec(self.record_end)}

    @classmethod
    def from_dict(cls, d: dict) -> "Slot":
        return cls(*(int(d[k]) for k in ("slot", "shot", "source_start", "source_end", "record_start", "record_end")))


def plan_slots(bounds: list[tuple[int, int]], shots: list[int], fps: Fraction,
               cuts: list[int] | None = None, shot_seconds: float = DEFAULT_SHOT_SECONDS) -> list[Slot]:
    """Each trailer shot's source range (frames) and place in the trailer. `cuts`: the trailer's cut points
    in frames ([0, ..., total], one slot per shot; from `cuts.fit_cuts`)."""
    if cuts is not None and len(cuts) - 1 != len(shots):
        raise InputError(f"{len(cuts) - 1} music slots for {len(shots)} trailer shots")
    if shot_seconds <= 0:
        raise InputError(f"--shot-seconds must be positive, got {shot_seconds}")
    slots = []
    record = 0
    for j, shot in enumerate(shots):
        start, end = bounds[shot]
        if cuts is not None:
            length = cuts[j + 1] - cuts[j]
            if not 0 < length <= end - start:
                raise InputError(f"slot {j} lasts {length} frames but shot {shot} has {end - start}")
        else:
            length = max(1, min(end - start, round(shot_seconds * fps)))
        first = start + (end - start - length) // 2  # the middle of the shot
        slots.append(Slot(j, shot, first, first + length, record, record + length))
        record += length
    return slots


def check_slots(slots: list[Slot], num_frames: int, source: str) -> None:
    record = 0
    for s in slots:
        if not (0 <= s.source_start < s.source_end <= num_frames) or s.record_start != record:
            raise InputError(f"{source}: slot {s.slot} does not fit the video ({num_frames} frames) or the slots before it")
        if s.record_end != s.record_start + s.clip_frames:
            raise InputError(f"{source}: slot {s.slot} leaves black after its clip (a trailer from an older "
                             "ssmp-infer); run `ssmp-infer trailer` again")
        record = s.record_end


def build_timeline(slots: list[Slot], fps: Fraction, video: str, num_frames: int, name: str,
                   music: str | None = None, confidence: list[float] | None = None):
    """An OTIO timeline: one video track (a clip per slot, named after its movie shot) and, with music, an audio track holding the music from its start for the trailer's length."""
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
    """CMX3600: one video event per clip (otio-cmx3600-adapter writes these), then, with music, one audio
    event (channel A, which readers put on track A1) holding the music from its start for the trailer's
    length: the adapter writes only a timeline's first track. Timecodes are at the movie's frame rate,
    which a CMX3600 file cannot state: readers must be given it (OTIO: `read_from_file(path, rate=FPS)`)."""
    otio = require("opentimelineio", "opentimelineio")
    require("otio_cmx3600_adapter", "otio-cmx3600-adapter")
    video_only = otio.schema.Timeline(name=timeline.name)
    video_only.global_start_time = timeline.global_start_time
    video_only.tracks.append(timeline.video_tracks()[0].clone())
    text = otio.adapters.write_to_string(video_only, "cmx_3600")
    for track in timeline.audio_tracks():
        for clip in track.find_clips():
            events = sum(1 for line in text.splitlines() if line[:3].isdigit())
            text = text.rstrip("\n") + "\n" + audio_event(events + 1, clip, track.range_of_child(clip)) + "\n"
    return text


def audio_event(number: int, clip, record_range) -> str:
    otio = require("opentimelineio", "opentimelineio")
    rate = record_range.duration.rate
    tc = lambda t: timecode(round(t.value), rate)  # noqa: E731
    source = clip.source_range
    url = clip.media_reference.target_url
    # the adapter's own event layout: number, reel (8), channel (5), C, four timecodes
    return "\n".join([
        f"{number:03d}  {reel_name(otio.url_utils.filepath_from_url(url)):8} {'A':5} C        {tc(source.start_time)} {tc(source.end_time_exclusive())} "
        f"{tc(record_range.start_time)} {tc(record_range.end_time_exclusive())}",
        f"* FROM CLIP NAME:  {clip.name}",
        f"* FROM CLIP: {url}",  # as the adapter writes the video events' source
    ])


def timecode(frames: int, fps) -> str:
    """HH:MM:SS:FF at the movie's frame rate, as the EDL writes it."""
    otio = require("opentimelineio", "opentimelineio")
    return otio.opentime.to_timecode(otio.opentime.RationalTime(frames, float(fps)), float(fps))


def reel_name(video: str) -> str:
    """CMX3600 reels are at most 8 letters and digits."""
    return re.sub(r"[^A-Za-z0-9]", "", Path(video).stem).upper()[:8] or "AX"
