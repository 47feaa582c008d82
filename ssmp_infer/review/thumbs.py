"""One small picture per movie shot (its middle frame), for the review page, kept in DIR/thumbs.

Made when the page first asks for a shot's picture (the page loads only those in view), not all at
start: a film's two thousand seeks into a long video would keep the page from opening for minutes.
Kept while the video and the shots are the same (`thumbs/thumbs.json` records both); each picture is
written atomically, so an interrupted run leaves only whole pictures.
"""

from __future__ import annotations

import json
import threading
from fractions import Fraction
from pathlib import Path

from ..atomic import write_atomic, write_text_atomic
from ..video import require

THUMB_WIDTH = 160  # pixels: ten to a row on a laptop's screen


def thumb_name(shot: int) -> str:
    return f"shot_{shot:05d}.jpg"


class Thumbnails:
    def __init__(self, directory: Path, video: str, bounds: list[tuple[int, int]], fps: Fraction, key: dict):
        """`key`: what the pictures are made from; pictures made from anything else are dropped."""
        require("PIL.Image", "pillow")
        self.dir = directory / "thumbs"
        self.video, self.bounds, self.fps = video, bounds, fps
        self.lock = threading.Lock()
        self.dir.mkdir(exist_ok=True)
        meta = self.dir / "thumbs.json"
        try:
            same = json.loads(meta.read_text(encoding="utf-8")) == key
        except (OSError, ValueError):
            same = False
        if not same:
            for old in self.dir.glob("shot_*.jpg"):
                old.unlink()
            write_text_atomic(meta, json.dumps(key) + "\n", force=True)

    def path(self, shot: int) -> Path | None:
        """The picture of `shot`, made now if it was not yet; None for a shot the movie does not have."""
        if not 0 <= shot < len(self.bounds):
            return None
        path = self.dir / thumb_name(shot)
        with self.lock:  # one decoder at a time; a picture asked for twice is made once
            if not path.is_file():
                self.make(shot, path)
        return path

    def make(self, shot: int, path: Path) -> None:
        from ..video.sheet import middle_frames
        from ..video.timeline import Slot

        image_mod = require("PIL.Image", "pillow")
        start, end = self.bounds[shot]
        # the whole shot as one clip: `middle_frames` reads the frame halfway through it
        (frame,) = middle_frames(self.video, [Slot(0, shot, start, end, 0, end - start)], self.fps, THUMB_WIDTH)
        picture = image_mod.fromarray(frame)
        write_atomic(path, lambda tmp: picture.save(tmp, format="JPEG", quality=80), force=True)
