"""Black is not picture: runs of black frames (fades, the gap between two scenes) become shots of their
own, which no trailer uses, so a trailer shows no black even where the detectors do not cut at a fade."""

from __future__ import annotations

import json

import numpy as np
import pytest

av = pytest.importorskip("av", reason="the video extra is not installed: pip install -e '.[test]'")

from ssmp_infer.video.shots import is_dark, load_shots, split_dark  # noqa: E402

from .video_clips import FPS, cli, make_clicks, make_clip, one_sentence  # noqa: E402

# Five shots; shot 1 fades out into 6 black frames and shot 2 fades in from 6 more (no cut between them:
# the change is gradual), shot 3 ends in 8 black frames before a hard cut
LENGTHS = [40, 40, 40, 36, 44]
CLICKS = [0.52, 1.0, 1.36, 2.0, 2.41, 3.04, 3.6, 4.0, 4.47]


def fades() -> np.ndarray:
    gain = np.ones(sum(LENGTHS))
    s1, s2, s3 = (sum(LENGTHS[:k]) for k in (1, 2, 3))
    gain[s2 - 16 : s2 - 6] = np.linspace(1, 0.1, 10)  # shot 1 fades out...
    gain[s2 - 6 : s2 + 6] = 0  # ...to black, and shot 2 opens in black...
    gain[s2 + 6 : s2 + 16] = np.linspace(0.1, 1, 10)  # ...and fades in
    gain[s3 + LENGTHS[3] - 8 : s3 + LENGTHS[3]] = 0  # shot 3 ends in black, then a hard cut
    return gain


def test_a_black_frame_is_one_whose_pixels_almost_all_stay_dark():
    rng = np.random.default_rng(0)
    black = rng.integers(0, 20, (90, 160, 3)).astype(np.uint8)
    assert is_dark(black)
    logo = black.copy()
    logo[:3, :20] = 255  # a small logo or a line of subtitle: still black (under 2% of the pixels lit)
    assert is_dark(logo)
    letterboxed = black.copy()
    letterboxed[20:70] = 120  # a picture between black bars is picture
    assert not is_dark(letterboxed)
    assert not is_dark(np.full((90, 160, 3), 40, np.uint8))  # dim is not black


def test_runs_of_black_frames_become_shots_of_their_own():
    dark = np.zeros(100, bool)
    dark[20:26] = True  # inside the detector's first shot
    dark[45:50] = True  # the end of its second
    dark[95:] = True  # the video ends in black
    bounds, black = split_dark([30, 50], dark)
    assert bounds == [(0, 20), (20, 26), (26, 30), (30, 45), (45, 50), (50, 95), (95, 100)]
    assert black == [False, True, False, False, True, False, True]
    assert split_dark([30], np.zeros(60, bool)) == ([(0, 30), (30, 60)], [False, False])


def test_a_trailer_of_a_clip_with_fades_shows_no_black(tmp_path):
    clip = make_clip(tmp_path / "fades.mp4", LENGTHS, gain=fades(), tone_hz=None)
    music = make_clicks(tmp_path / "clicks.wav", CLICKS, 5.0)
    out = tmp_path / "trailer"
    r = cli("trailer", clip, "--music", music, "--out", out, "--detector", "content")
    assert r.returncode == 0, r.stderr
    shots = load_shots(out / "shots.json")
    black = shots.dark_shots
    s2, s4 = sum(LENGTHS[:2]), sum(LENGTHS[:4])
    runs = [shots.bounds[k] for k in black]
    assert any(a <= s2 - 6 and s2 + 6 <= b <= s2 + 8 for a, b in runs), runs  # the gap between shots 1 and 2
    assert any(a <= s4 - 8 and b == s4 for a, b in runs), runs  # the end of shot 3
    assert "black (fades, gaps between scenes); no trailer uses them" in r.stderr
    record = json.loads((out / "trailer.json").read_text())
    assert not set(record["shots"]) & set(black) and record["duration"] == 5.0
    bright = [np.percentile(frame, 98) for frame in decoded(out / "trailer.mp4")]
    assert len(bright) == 5 * FPS and min(bright) > 40  # not one black frame


def test_a_clip_with_no_picture_is_refused_in_one_sentence(tmp_path):
    clip = make_clip(tmp_path / "black.mp4", [30, 30], gain=np.zeros(60), tone_hz=None)
    r = cli("trailer", clip, "--out", tmp_path / "t", "--length", "1", "--quiet")
    assert r.returncode == 2 and "has no picture to make a trailer of: every frame is black" in one_sentence(r.stderr)


def decoded(path):
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="gray")
