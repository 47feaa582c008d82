"""A trailer cut to music: the music's changes found where they are, cuts placed on them so that every
slot is filled by its shot (no black), the picture as long as the music, the music in the EDL, a contact
sheet, and no work lost when a late step fails. Clips and music are made here with known cuts and clicks."""

from __future__ import annotations

import json
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest

av = pytest.importorskip("av", reason="the video extra is not installed: pip install -e '.[test]'")
otio = pytest.importorskip("opentimelineio")

from ssmp_infer.cli import main  # noqa: E402
from ssmp_infer.video.cuts import fit_cuts, fit_to_music  # noqa: E402
from ssmp_infer.video.music import Audio, MusicChanges, beats, load_audio, music_changes, onsets  # noqa: E402
from ssmp_infer.video.shots import load_shots  # noqa: E402
from ssmp_infer.video.timeline import plan_slots  # noqa: E402

from .video_clips import (  # noqa: E402
    FPS, PALETTE, SHOT_LENGTHS, cli, click_signal, colour_runs, decoded_frames, free_notes, make_clicks, make_clip,
    one_sentence, soft_pulse,
)

RATE = 22050
# Irregular clicks, 0.36-0.64 s apart, not on frame boundaries: cuts can only land on them by finding them.
CLICKS = [0.52, 1.0, 1.36, 2.0, 2.41, 3.04, 3.6, 4.0, 4.47]
CLICK_SECONDS = 5.0


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("music_cut")


@pytest.fixture(scope="module")
def clip(work):
    return make_clip(work / "clip.mp4")


@pytest.fixture(scope="module")
def clicks(work):
    return make_clicks(work / "clicks.wav", CLICKS, CLICK_SECONDS)


# --- the music's changes ---------------------------------------------------------------------------

def test_onsets_find_every_click_within_a_frame_and_nothing_else():
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.uniform(0.3, 1.5, 20))
    for bed in (False, True):
        found, strength = onsets(Audio(click_signal(times, times[-1] + 1, bed=bed)[None].astype(np.float32), RATE, "c"))
        assert len(found) == len(times), (bed, found)
        assert np.abs(found - times).max() < 0.5 / 30, (bed, found - times)  # half a frame at 30 fps
        assert ((strength > 0) & (strength <= 1)).all()


def test_steady_sounds_have_no_onsets():
    rng = np.random.default_rng(1)
    t = np.arange(10 * RATE) / RATE
    for name, signal in (("tone", 0.3 * np.sin(2 * np.pi * 220 * t)), ("noise", 0.3 * rng.standard_normal(len(t))),
                         ("silence", np.zeros_like(t))):
        found, _ = onsets(Audio(signal[None].astype(np.float32), RATE, name))
        assert len(found) == 0, (name, found)


def audio(signal):
    return Audio(np.asarray(signal)[None].astype(np.float32), RATE, "made")


def test_beats_of_a_soft_pulse_are_found_where_onsets_miss_them():
    signal, true = soft_pulse(112, 20)
    found, strength, tempo = beats(audio(signal))
    heard, _ = onsets(audio(signal))
    assert len(heard) < 0.7 * len(true)  # most hits are too soft to be onsets on their own
    assert len(found) == len(true) and np.abs(found - true).max() < 0.5 / 30  # every beat, within half a frame
    assert abs(tempo - 112) < 2 and ((strength > 0) & (strength <= 0.5)).all()
    changes = music_changes(audio(signal))
    assert changes.beats == len(true) and all(np.abs(changes.times - b).min() < 0.5 / 30 for b in true)


def test_music_without_a_steady_pulse_has_no_beats():
    rng = np.random.default_rng(3)
    t = np.arange(20 * RATE) / RATE
    for name, signal in [*((f"free notes {s}", free_notes(30, seed=s)) for s in range(3)),
                         ("irregular clicks", click_signal(np.cumsum(rng.uniform(0.3, 1.5, 20)), 25)),
                         ("tone", 0.3 * np.sin(2 * np.pi * 440 * t)), ("noise", 0.1 * rng.standard_normal(len(t))),
                         ("silence", np.zeros_like(t))]:
        found, _, tempo = beats(audio(signal))
        assert len(found) == 0 and tempo == 0, (name, found)


def test_cuts_land_on_soft_beats_that_onsets_alone_miss():
    # shots of 0.6-1.2 s, as in a music video; the pulse at 112 bpm (0.54 s), loud on one beat in eight
    signal, true = soft_pulse(112, 20)
    changes = music_changes(audio(signal))
    rng = np.random.default_rng(4)
    lengths = [int(n) for n in rng.integers(15, 30, 60)]
    generate, _ = ssmp_order(range(len(lengths)))
    fit = fit_to_music(generate, shot_bounds(lengths), changes, Fraction(FPS))
    cuts = np.array(fit.plan.cuts[1:-1]) / FPS
    assert fit.plan.off_change == 0 and not fit.cut_short and sum(fit.plan.lengths) == 20 * FPS
    assert all(np.abs(true - c).min() <= 1 / FPS for c in cuts)  # every cut within a frame of a beat
    # the onsets alone leave gaps (the loud beats are 4.3 s apart) no shot of the movie spans
    heard, strength = onsets(audio(signal))
    alone = fit_to_music(generate, shot_bounds(lengths), MusicChanges(heard, strength, changes.sections, 20.0), Fraction(FPS))
    assert alone.plan.off_change > 0


def test_section_changes_move_onto_the_onset_that_starts_them(work):
    from .video_clips import make_music

    segments = [1.5, 1.0, 2.0, 1.5, 3.0]
    changes = music_changes(load_audio(make_music(work / "sections.wav", segments)))
    bounds = np.cumsum(segments)[:-1]
    strong = changes.times[changes.strengths > 1]  # section changes add 1 to their onset's strength
    assert changes.section_changes == len(bounds) and len(strong) == len(bounds)
    assert np.abs(strong - bounds).max() < 0.02, strong  # on the beat that opens the section, not 50 ms off
    beats = np.arange(0.5, sum(segments), 0.5)
    assert all(np.abs(changes.times - b).min() < 0.02 for b in beats)  # every beat is a place to cut


# --- where the cuts go -------------------------------------------------------------------------------

def weights_at(times, total, fps=FPS, strength=1.0):
    w = np.zeros(total + 1)
    w[np.round(np.array(times) * fps).astype(int)] = strength
    w[0] = w[total] = 0
    return w


def test_cuts_fill_every_slot_with_its_shot_on_the_music():
    rng = np.random.default_rng(0)
    total = 40 * FPS
    weights = weights_at(np.arange(0.4, 40, 0.4), total)  # a beat every 10 frames
    on_music = 0
    for _ in range(30):
        shots = [int(n) for n in rng.integers(8, 70, rng.integers(25, 60))]  # 0.3-2.8 s, as in a music video
        plan = fit_cuts(shots, weights, FPS)
        if sum(shots) < total:
            assert plan is None
            continue
        assert plan.cuts[0] == 0 and plan.cuts[-1] == total and len(plan.cuts) == len(shots) + 1
        assert all(0 < n <= s for n, s in zip(plan.lengths, shots))  # no slot longer than its shot: no black
        # on the beats whenever the shots can be: each then gives a whole number of beats, at least one
        can = all(s >= 10 for s in shots) and sum(s // 10 * 10 for s in shots) >= total
        assert (plan.off_change == 0) == can, (plan.off_change, shots)
        assert all(weights[c] > 0 for c, on in zip(plan.cuts[1:-1], plan.on_change) if on)
        on_music += can
    assert on_music >= 5


def test_a_cut_leaves_the_music_only_where_no_plan_on_it_exists():
    total = 100
    weights = weights_at([1.0, 2.0, 3.0], total)  # changes at frames 25, 50, 75
    plan = fit_cuts([30, 30, 30, 30], weights, FPS)
    assert plan.cuts == [0, 25, 50, 75, 100] and plan.off_change == 0
    plan = fit_cuts([20, 40, 50], weights, FPS)  # the first shot ends before any change; the rest can be on them
    assert plan.lengths[0] <= 20 and plan.cuts[2:] == [50, 100] and plan.off_change == 1
    plan = fit_cuts([40, 40, 40], weights_at([], total), FPS)  # a steady tone: even slots, all off
    assert plan.off_change == 2 and max(plan.lengths) - min(plan.lengths) <= 1


def test_stronger_changes_win():
    total = 100
    weights = weights_at([1.6, 2.4], total, strength=0.2)
    weights[50] = 2.0  # a section change at 2.0 s
    plan = fit_cuts([60, 60], weights, FPS)
    assert plan.cuts == [0, 50, 100]


def test_the_length_grows_until_the_shots_fill_the_music():
    bounds = [(i * 20, i * 20 + 20) for i in range(50)]  # 50 shots of 0.8 s
    changes = MusicChanges(np.arange(0.4, 20, 0.4), np.ones(49), [0, 4, 8, 12, 16, 20], 20.0, 0)
    asked = []

    class Trailer:
        def __init__(self, n):
            self.shots, self.length = list(range(0, 2 * n, 2))[:n], n

    def generate(n):
        asked.append(n)
        return Trailer(n)

    fit = fit_to_music(generate, bounds, changes, Fraction(FPS))
    assert asked[0] == 5  # one shot per section first
    assert fit.plan.off_change == 0 and not fit.cut_short and fit.total == 500
    assert sum(fit.plan.lengths) == 500 and all(n <= 20 for n in fit.plan.lengths)
    assert fit.trailer.length == asked[3] == 25 and len(fit.plan.used) == 25  # 20 s of 0.8 s shots
    assert all(off is None for n, _, off in fit.tries if n != 25)  # fewer (tried after it too) cannot fill it


def test_an_overshooting_length_is_brought_back_to_the_fewest_shots_that_cut_on_the_music():
    from ssmp_infer.video.cuts import fewest_shots

    asked = []

    def generate(n):
        asked.append(n)
        return SimpleNamespace(length=n)

    def plan_for(trailer):  # a stand-in: 36 shots or more cut only on the music, fewer leave it 3 times
        return SimpleNamespace(used=list(range(trailer.length)), off_change=0 if trailer.length >= 36 else 3)

    tries = [(13, None, None), (27, 27, 14), (54, 53, 0)]
    best = fewest_shots((generate(54), plan_for(SimpleNamespace(length=54))), tries, plan_for, generate)
    assert 36 <= best[0].length <= 36 + 54 // 16 and best[1].off_change == 0
    assert asked[1:] == [40, 33, 36, 34] and [t[0] for t in tries[3:]] == asked[1:]  # each try recorded


def test_a_movie_shorter_than_its_music_ends_on_a_change():
    bounds = [(0, 20), (20, 45), (45, 60)]  # 2.4 s of picture
    changes = MusicChanges(np.array([0.5, 1.0, 1.6, 2.2, 3.0]), np.ones(5), [0, 4.0], 4.0, 0)

    class Trailer:
        def __init__(self, n):
            self.shots, self.length = list(range(n)), n

    fit = fit_to_music(Trailer, bounds, changes, Fraction(FPS))
    # 2.2 s, the last change the picture reaches, would need a cut off the music (the 0.6 s last shot
    # cannot span 1.0-2.2 s); 1.6 s lets every cut lie on a change
    assert fit.cut_short and fit.trailer.length == 3 and fit.total == 40 and fit.plan.cuts == [0, 12, 25, 40]
    assert all(n <= b - a for n, (a, b) in zip(fit.plan.lengths, bounds))


def ssmp_order(order):
    """A stand-in for `engine.generate`: the first `n` shots of a fixed ranking, in that order, SSMP surer
    of the earlier ones (asked lengths recorded)."""
    asked = []

    def generate(n):
        asked.append(n)
        return SimpleNamespace(shots=list(order[:n]), length=n, confidence=[1 - i / 100 for i in range(n)])

    return generate, asked


def shot_bounds(lengths):
    starts = np.cumsum([0] + list(lengths))
    return [(int(a), int(b)) for a, b in zip(starts, starts[1:])]


def test_shots_too_short_for_the_music_are_left_out_in_order():
    # changes every second; SSMP ranks short shots (0.4 s) among long ones (1.2 s); no short shot can reach
    # from a change to the next, so the cut leaves them out and asks for more shots
    lengths = [10, 30, 10, 30, 30, 10, 30, 30, 30, 10, 30, 30, 30, 30, 30, 30]
    changes = MusicChanges(np.arange(1.0, 6.0), np.ones(5), [0, 2.0, 4.0, 6.0], 6.0, 0)
    generate, asked = ssmp_order(range(len(lengths)))
    fit = fit_to_music(generate, shot_bounds(lengths), changes, Fraction(FPS))
    assert fit.plan.off_change == 0 and fit.total == 150 and sum(fit.plan.lengths) == 150
    assert set(fit.plan.cuts) <= {0, 25, 50, 75, 100, 125, 150}  # on the changes (every 25 frames) and the ends
    # the six long shots SSMP is surest of, in its order; the short ones and the least sure long ones left out
    assert [fit.trailer.shots[j] for j in fit.plan.used] == [1, 3, 4, 6, 7, 8]
    assert fit.left_out == [s for s in fit.trailer.shots if s not in (1, 3, 4, 6, 7, 8)]
    assert (fit.trailer.length, 6, 0) in fit.tries and max(asked) < len(lengths)


def test_a_shot_that_fits_somewhere_but_not_where_it_falls_is_left_out():
    # changes at 1.0, 1.6, 3.0 s; a 0.72 s shot fits the 1.0-1.6 gap, but SSMP puts it third, after two
    # 1.6 s shots, where it would start at 2.0-3.2 s
    lengths = [40, 18, 40, 40, 40, 40]
    changes = MusicChanges(np.array([1.0, 1.6, 3.0]), np.ones(3), [0, 2.0, 4.0], 4.0, 0)
    generate, asked = ssmp_order([0, 2, 1, 3, 4, 5])
    fit = fit_to_music(generate, shot_bounds(lengths), changes, Fraction(FPS))
    assert fit.plan.off_change == 0 and sum(fit.plan.lengths) == 100
    assert set(fit.plan.cuts) <= {0, 25, 40, 75, 100}
    assert fit.left_out == [1] and [fit.trailer.shots[j] for j in fit.plan.used] == [0, 2, 3]
    assert all(n <= lengths[fit.trailer.shots[j]] for n, j in zip(fit.plan.lengths, fit.plan.used))
    # without leaving it out, the same shots need a cut off the music
    assert fit_cuts([lengths[i] for i in fit.trailer.shots], changes.at_frames(Fraction(FPS)), FPS).off_change > 0


def test_a_movie_shorter_than_its_music_leaves_out_a_shot_that_cannot_cut_on_it():
    # 6 shots, 10 s of picture, for 40 s of music changing every 0.5 s; shot 2 lasts 0.32 s
    lengths = [50, 45, 8, 60, 40, 47]
    changes = MusicChanges(np.arange(0.5, 40, 0.5), np.ones(79), [0, 8, 16, 24, 32, 40], 40.0, 0)
    generate, asked = ssmp_order(range(6))
    fit = fit_to_music(generate, shot_bounds(lengths), changes, Fraction(FPS))
    assert fit.cut_short and fit.left_out == [2] and fit.plan.used == [0, 1, 3, 4, 5]
    weights = changes.at_frames(Fraction(FPS))
    assert fit.plan.off_change == 0 and all(weights[c] > 0 for c in fit.plan.cuts[1:])  # the end too: on a change
    assert all(n <= lengths[fit.trailer.shots[j]] for n, j in zip(fit.plan.lengths, fit.plan.used))
    assert len(asked) == len(set(asked))  # no trailer asked for twice
    # a steady tone has no changes to cut on: nothing is left out, every shot is used
    tone = MusicChanges(np.array([]), np.ones(0), [0, 20.0], 20.0, 0)
    fit = fit_to_music(generate, shot_bounds(lengths), tone, Fraction(FPS))
    assert fit.cut_short and not fit.left_out and fit.trailer.shots == list(range(6)) and fit.total == sum(lengths)


def test_plan_takes_the_middle_of_each_shot():
    bounds = [(0, 30), (30, 47), (47, 87), (87, 112)]
    slots = plan_slots(bounds, [2, 1, 0], Fraction(25), cuts=[0, 30, 45, 70])
    assert [(s.source_start, s.source_end) for s in slots] == [(52, 82), (31, 46), (2, 27)]
    assert [(s.record_start, s.record_end) for s in slots] == [(0, 30), (30, 45), (45, 70)]
    with pytest.raises(Exception, match="lasts 20 frames but shot 1 has 17"):
        plan_slots(bounds, [2, 1, 0], Fraction(25), cuts=[0, 30, 50, 70])


# --- the whole chain -----------------------------------------------------------------------------------

def test_trailer_cut_on_the_clicks_end_to_end(clip, clicks, work):
    out = work / "trailer"
    r = cli("trailer", clip, "--music", clicks, "--out", out, "--detector", "content", "--quiet")
    assert r.returncode == 0, r.stderr
    record = json.loads((out / "trailer.json").read_text())
    shots = load_shots(out / "shots.json")
    slots = record["slots"]
    total = round(CLICK_SECONDS * FPS)

    # the picture: no black frame, every clip one of the picked shots, as long as the music
    mp4 = out / "trailer.mp4"
    runs = colour_runs(mp4)
    assert all(shot >= 0 for shot, _ in runs), runs
    assert [shot for shot, _ in runs] == record["shots"]
    assert decoded_frames(mp4) == total == slots[-1]["record_end"] and record["duration"] == CLICK_SECONDS
    for s in slots:
        start, end = shots.bounds[s["shot"]]
        assert start <= s["source_start"] < s["source_end"] <= end  # every clip inside one shot
    # every cut of the decoded picture lies within one frame of a click
    cuts = np.cumsum([n for _, n in runs])[:-1] / FPS
    assert all(np.abs(np.array(CLICKS) - c).min() <= 1 / FPS for c in cuts), (cuts, CLICKS)
    assert record["cuts_off_music"] == 0
    # the music plays under it, to its end
    sound = load_audio(mp4)
    assert abs(sound.duration - CLICK_SECONDS) < 0.05
    heard, _ = onsets(sound)
    heard = heard[heard < CLICK_SECONDS - 0.1]  # the AAC stream's last packet ends in a burst of its own
    assert len(heard) == len(CLICKS) and np.abs(heard - CLICKS).max() < 0.03

    # the EDL carries the music as an audio event; OTIO reads both tracks back in sync
    edl = otio.adapters.read_from_file(str(out / "trailer.edl"), rate=FPS)
    assert [c.name for c in edl.video_tracks()[0].find_clips()] == [f"shot {i}" for i in record["shots"]]
    (music_clip,) = list(edl.audio_tracks()[0].find_clips())
    assert music_clip.name == clicks.name and music_clip.source_range.start_time.value == 0
    assert music_clip.source_range.duration.value == total == edl.video_tracks()[0].duration().value
    assert edl.audio_tracks()[0].range_of_child(music_clip).start_time.value == 0

    # the contact sheet: one tile per slot, in trailer order, each showing its shot
    check_sheet(out / "trailer.png", record["shots"])

    # `render` from trailer.json alone, with a fade: black only at the ends
    faded = work / "faded.mp4"
    r = cli("render", clip, out / "trailer.json", "--out", faded, "--fade", "0.4", "--quiet")
    assert r.returncode == 0, r.stderr
    means = [f.mean() for _, f in iter_frames(faded)]
    assert len(means) == total and means[0] < 20 and means[-1] < 20  # from and to black
    assert min(means[10:-10]) > 60  # nothing dark between the fades
    assert (work / "faded.png").is_file()


def iter_frames(path):
    from ssmp_infer.video.frames import iter_frames as frames

    return frames(path, 16, 16)


def check_sheet(path, shots):
    from PIL import Image

    from ssmp_infer.video import sheet

    image = np.asarray(Image.open(path).convert("RGB")).astype(np.float32)
    columns = min(sheet.COLUMNS, len(shots))
    tile_h = round(sheet.TILE_WIDTH * 96 / 160)
    header, caption = sheet.FONT_SIZE + 3 * sheet.PAD, 2 * (sheet.FONT_SIZE + 4)
    rows = -(-len(shots) // columns)
    assert image.shape[1] == sheet.PAD + columns * (sheet.TILE_WIDTH + sheet.PAD)
    assert image.shape[0] == header + rows * (tile_h + caption + sheet.PAD) + sheet.PAD
    palette = np.array(PALETTE[: len(SHOT_LENGTHS)], np.float32)
    for k, shot in enumerate(shots):
        x = sheet.PAD + (k % columns) * (sheet.TILE_WIDTH + sheet.PAD)
        y = header + (k // columns) * (tile_h + caption + sheet.PAD)
        mean = image[y + 10 : y + tile_h - 10, x + 10 : x + sheet.TILE_WIDTH - 10].reshape(-1, 3).mean(axis=0)
        assert int(np.linalg.norm(palette - mean, axis=1).argmin()) == shot, (k, shot, mean)
        below = image[y + tile_h : y + tile_h + caption]  # the caption: light text on the dark ground
        assert below.max() > 200 and np.median(below) < 40


def test_a_length_too_long_is_refused_before_the_embedding(capsys, clip, work):
    out = work / "too_long"
    code = main(["trailer", str(clip), "--length", "50", "--out", str(out), "--quiet", "--detector", "content"])
    assert code == 2 and "larger than the movie's 7 shots" in one_sentence(capsys.readouterr().err)
    assert {p.name for p in out.iterdir()} == {"shots.json"}  # the shots are kept; nothing was embedded


def test_a_late_failure_keeps_the_cache_and_leaves_no_trailer_file(capsys, clip, clicks, work, monkeypatch):
    from ssmp_infer.video import sheet

    out = work / "late"

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sheet, "write_sheet", broken)
    code = main(["trailer", str(clip), "--music", str(clicks), "--out", str(out), "--quiet", "--detector", "content"])
    assert code != 0
    assert {p.name for p in out.iterdir()} == {"shots.json", "features.npy", "features.json"}
    monkeypatch.undo()
    capsys.readouterr()
    r = cli("trailer", clip, "--music", clicks, "--out", out, "--detector", "content")
    assert r.returncode == 0, r.stderr
    assert "shots: reused" in r.stderr and "embed: reused" in r.stderr


def test_a_default_length_of_one_shot_is_said(clip, work):
    r = cli("trailer", clip, "--out", work / "default", "--detector", "content")
    assert r.returncode == 0, r.stderr
    assert "gives 1 shot; pass --length or --music" in r.stderr
    assert json.loads((work / "default" / "trailer.json").read_text())["length"] == 1


@pytest.mark.parametrize("option, expected", [
    (["--cuda-graphs"], "CUDA"),
    (["--engines", "nowhere"], "TensorRT engine directory"),
    (["--backend", "onnxruntime", "--onnx", "nowhere"], "nowhere"),
])
def test_trailer_takes_the_backend_options(capsys, clip, work, option, expected):
    out = work / "backend"
    code = main(["trailer", str(clip), "--out", str(out), "--quiet", "--device", "cpu", *option])
    assert code == 2 and expected in one_sentence(capsys.readouterr().err)
    assert not out.exists()


def test_trailer_and_run_turn_the_same_options_into_the_same_engine():
    from ssmp_infer.cli import build_parser
    from ssmp_infer.cli_backend import engine_options
    from ssmp_infer.cli_video import trailer_engine_options

    options = ["--backend", "onnxruntime", "--precision", "int8", "--onnx", "O", "--engines", "E", "--cuda-graphs"]
    parser = build_parser()
    run = engine_options(parser.parse_args(["run", "f.npy", *options]))
    trailer = trailer_engine_options(parser.parse_args(["trailer", "v.mp4", "--out", "d", *options]))
    assert trailer == {k: v for k, v in run.items() if k not in ("model_dir", "device")}
    assert trailer["engine_dir"] == "E" and trailer["cuda_graphs"] is True and trailer["onnx_dir"] == "O"
