"""A contact sheet of a trailer (`trailer.png`): one tile per slot in trailer order, each the middle frame
of its clip, captioned with the slot, the movie shot, the clip's source timecode (as the EDL gives it) and
its length: the cut at a glance, without opening the MP4 or an editor.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from ..atomic import write_atomic
from . import require
from .frames import open_container, read_range, video_stream
from .timeline import Slot, timecode

TILE_WIDTH = 240  # pixels; the height follows the video's aspect ratio
COLUMNS = 6
FONT_SIZE = 14
PAD = 8
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
DIM = (160, 160, 160)


def middle_frames(video: str | Path, slots: list[Slot], fps: Fraction, width: int) -> list[np.ndarray]:
    """The middle frame of each slot's clip, (height, width, 3) uint8."""
    images = []
    with open_container(video) as container:
        stream = video_stream(container, video)
        height = tile_height(stream.codec_context.width, stream.codec_context.height, width)
        for s in slots:
            frames = read_range(container, stream, fps, s.source_start + s.clip_frames // 2, 1, width, height, "rgb24")
            images.append(frames[0].to_ndarray() if frames else np.zeros((height, width, 3), np.uint8))
    return images


HEADER = FONT_SIZE + 3 * PAD  # the title line above the tiles
CAPTION = 2 * (FONT_SIZE + 4)  # two lines under each tile


def tile_height(video_width: int, video_height: int, width: int = TILE_WIDTH) -> int:
    """A tile's height: the video's aspect at `width` pixels wide."""
    return max(2, round(width * video_height / max(video_width, 1)))


def tile_origin(k: int, columns: int, tile_h: int) -> tuple[int, int]:
    """The top-left pixel of tile k (slot order, row by row)."""
    return PAD + (k % columns) * (TILE_WIDTH + PAD), HEADER + (k // columns) * (tile_h + CAPTION + PAD)


def contact_sheet(video: str | Path, slots: list[Slot], fps: Fraction, title: str):
    """The sheet as a PIL image."""
    image_mod = require("PIL.Image", "pillow")
    draw_mod = require("PIL.ImageDraw", "pillow")
    font_mod = require("PIL.ImageFont", "pillow")
    font = font_mod.load_default(size=FONT_SIZE)
    tiles = middle_frames(video, slots, fps, TILE_WIDTH)
    tile_h = tiles[0].shape[0] if tiles else TILE_WIDTH * 9 // 16
    columns = max(1, min(COLUMNS, len(slots)))
    rows = -(-len(slots) // columns)
    sheet = image_mod.new("RGB", (PAD + columns * (TILE_WIDTH + PAD), HEADER + rows * (tile_h + CAPTION + PAD) + PAD),
                          BACKGROUND)
    draw = draw_mod.Draw(sheet)
    total = slots[-1].record_end if slots else 0
    draw.text((PAD, PAD), f"{title}: {len(slots)} shots, {total / float(fps):.1f} s", fill=TEXT, font=font)
    for k, (s, tile) in enumerate(zip(slots, tiles)):
        x, y = tile_origin(k, columns, tile_h)
        sheet.paste(image_mod.fromarray(tile), (x, y))
        draw.text((x, y + tile_h + 2), f"{s.slot + 1}. shot {s.shot}", fill=TEXT, font=font)
        draw.text((x, y + tile_h + 4 + FONT_SIZE), f"{timecode(s.source_start, fps)}  {s.clip_frames / float(fps):.2f} s",
                  fill=DIM, font=font)
    return sheet


def write_sheet(path: str | Path, video: str | Path, slots: list[Slot], fps: Fraction, title: str,
                force: bool = False) -> None:
    sheet = contact_sheet(video, slots, fps, title)
    write_atomic(path, lambda tmp: sheet.save(tmp, format="PNG"), force=force)
