"""A trailer's files, written the same way by `trailer`, `render` and the review page.

The MP4 and its contact sheet go together: each is replaced atomically, and when the sheet fails the MP4
just written goes too, so a sheet never describes another cut than the video beside it. The timeline
(OTIO), the EDL and the record (trailer.json) follow, each atomically, so a reader never sees half a file.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_atomic, write_text_atomic


def trailer_title(video: str, fps) -> str:
    """The name a trailer's timeline and sheet carry: 'clip trailer (25 fps)'."""
    return f"{Path(video).stem} trailer ({float(fps):g} fps)"


def write_picture(mp4: Path, sheet: Path, video: str, slots, fps, title: str, *, music: str | None = None,
                  fade: float = 0.0, force: bool = False, progress: bool = False) -> dict:
    """Render `slots` of `video` into `mp4` and their contact sheet into `sheet`; returns the render's figures
    (seconds, frames)."""
    from .render import render
    from .sheet import write_sheet

    rendered = {}
    write_atomic(mp4, lambda tmp: rendered.update(render(video, slots, fps, tmp, music=music, fade=fade,
                                                         progress=progress)), force=force)
    try:
        write_sheet(sheet, video, slots, fps, title, force=force)
    except BaseException:
        Path(mp4).unlink(missing_ok=True)
        raise
    return rendered


def write_edit_files(out: Path, slots, fps, video: str, num_video_frames: int, title: str, music: str | None,
                     confidence, record: dict, force: bool = False, written: list[Path] | None = None) -> None:
    """trailer.otio and trailer.edl for `slots` (the music on its audio track), and `record` as
    trailer.json, in `out`; each path goes on `written` once it is there (what a failed run removes)."""
    from .timeline import build_timeline, edl_text, timeline_text

    timeline = build_timeline(slots, fps, video, num_video_frames, title, music, confidence)
    for path, text in ((out / "trailer.otio", timeline_text(timeline)), (out / "trailer.edl", edl_text(timeline)),
                       (out / "trailer.json", json.dumps(record, indent=1) + "\n")):
        write_text_atomic(path, text, force=force)
        if written is not None:
            written.append(path)
