"""One small picture per movie shot (its middle frame), for the review page: made once, kept in DIR/thumbs.

Kept while the video and the shots are the same (`thumbs/thumbs.json` records both), like the trailer
command's other intermediate files; each picture is written atomically, so an interrupted run leaves
only whole pictures and the next run makes the rest.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

from ..atomic import write_atomic, write_text_atomic
from ..video import require

THUMB_WIDTH = 160  # pixels: ten to a row on a laptop's screen


def thumb_name(shot: int) -> str:
    return f"shot_{shot:05d}.jpg"


def ensure_thumbnails(directory: Path, video: str, bounds: list[tuple[int, int]], fps: Fraction, key: dict,
                      log=print) -> Path:
    """DIR/thumbs with one JPEG per shot; `key` says what they were made from (reused while it matches)."""
    from ..video.sheet import middle_frames
    from ..video.timeline import Slot

    image_mod = require("PIL.Image", "pillow")
    thumbs = directory / "thumbs"
    thumbs.mkdir(exist_ok=True)
    meta = thumbs / "thumbs.json"
    try:
        same = json.loads(meta.read_text(encoding="utf-8")) == key
    except (OSError, ValueError):
        same = False
    missing = [i for i in range(len(bounds)) if not same or not (thumbs / thumb_name(i)).is_file()]
    if missing:
        log(f"review: making {len(missing)} shot pictures in {thumbs}")
        # the whole shot as one clip: `middle_frames` reads the frame halfway through each
        clips = [Slot(0, i, bounds[i][0], bounds[i][1], 0, bounds[i][1] - bounds[i][0]) for i in missing]
        for i, frame in zip(missing, middle_frames(video, clips, fps, THUMB_WIDTH)):
            picture = image_mod.fromarray(frame)
            write_atomic(thumbs / thumb_name(i), lambda tmp, p=picture: p.save(tmp, format="JPEG", quality=80), force=True)
        write_text_atomic(meta, json.dumps(key, indent=1) + "\n", force=True)
    return thumbs
