"""Editor controls on the bundled model: pins kept and decoded around, bans never chosen, candidates
equal to single runs with their seeds; bad pins and bans refused in one sentence."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ssmp_infer import DecodeConfig, Engine
from ssmp_infer.controls import EditorControls, parse_bans, parse_pins
from ssmp_infer.errors import InputError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "movie.npy"
MODES = ("paper", "topk", "greedy")


@pytest.fixture(scope="module")
def engine():
    return Engine.load(device="cpu")


@pytest.fixture(scope="module")
def movie():
    return np.load(EXAMPLE)[:300]  # the example's first 300 shots: a real movie, a quick test


@pytest.mark.parametrize("mode", MODES)
def test_pins_are_kept_and_the_rest_is_decoded_around_them(engine, movie, mode):
    decode = DecodeConfig(mode=mode, seed=3)
    free = engine.generate(movie, length=16, decode=decode)
    # shots the free trailer did not choose, in slots where they change the context most: first and middle
    outside = [i for i in range(movie.shape[0]) if i not in free.shots]
    pins = {0: outside[0], 8: outside[len(outside) // 2]}
    pinned = engine.generate(movie, length=16, decode=decode, controls=EditorControls(pins=pins))
    assert [pinned.shots[s] for s in pins] == list(pins.values())
    assert pinned.confidence[0] == 1.0 and pinned.pinned == sorted(pins)
    assert len(set(pinned.shots)) == 16  # the pinned shots were offered to no other slot
    rest = [s for s in range(16) if s not in pins]
    # the decoder reads the pins: some other slot changes (a decoder that ignored them, or filled the
    # pinned slots after the fact, would reproduce the free trailer everywhere else)
    assert any(pinned.shots[s] != free.shots[s] for s in rest)


def test_pins_and_bans_in_a_batch_match_each_movie_alone(engine, movie):
    other = np.load(EXAMPLE)[300:520]
    controls = [EditorControls(pins={2: 40}), None, EditorControls(bans=frozenset(range(10, 60)))]
    decode = DecodeConfig(mode="paper", seed=5)
    batch = engine.generate_batch([movie, other, movie], [12, 9, 14], decode, controls)
    for trailer, features, n, c in zip(batch, [movie, other, movie], [12, 9, 14], controls):
        alone = engine.generate(features, length=n, decode=decode, controls=c)
        assert trailer.shots == alone.shots


@pytest.mark.parametrize("mode", ("paper", "topk"))
def test_banned_shots_never_appear(engine, movie, mode):
    favourites = engine.generate(movie, length=16, decode=DecodeConfig(mode=mode)).shots
    bans = frozenset(favourites) | frozenset(range(100, 140))
    for seed in range(6 if mode == "paper" else 1):
        trailer = engine.generate(movie, length=16, decode=DecodeConfig(mode=mode, seed=seed),
                                  controls=EditorControls(bans=bans))
        assert not bans & set(trailer.shots)
        assert len(set(trailer.shots)) == 16


def test_candidates_equal_single_runs_and_differ_by_seed(engine, movie):
    decode = DecodeConfig(mode="paper", seed=11)
    found = engine.candidates(movie, 4, length=16, decode=decode, controls=EditorControls(pins={5: 7}))
    assert sorted(t.seed for t in found) == [11, 12, 13, 14]
    means = [t.mean_confidence for t in found]
    assert means == sorted(means, reverse=True)
    for t in found:
        alone = engine.generate(movie, length=16, decode=DecodeConfig(mode="paper", seed=t.seed),
                                controls=EditorControls(pins={5: 7}))
        assert t.shots == alone.shots and t.confidence == pytest.approx(alone.confidence, abs=1e-6)
        assert t.shots[5] == 7
    assert len({tuple(t.shots) for t in found}) == 4


def test_greedy_locks_one_slot_per_round(engine, movie):
    trailer = engine.generate(movie, length=10, decode=DecodeConfig(mode="greedy"),
                              controls=EditorControls(pins={4: 0}))
    assert trailer.steps == 9  # one encoder pass per open slot


@pytest.mark.parametrize(
    "pins, bans, message",
    [
        (["0:5", "0:6"], None, "pinned twice"),
        (["0:5", "1:5"], None, "pinned to two slots"),
        (["a:5"], None, "not a shot or slot number"),
        (["5"], None, "not SLOT:SHOT"),
        (None, ["9-3"], "runs backwards"),
        (None, ["0-2000000"], "more than"),
    ],
)
def test_bad_specs_are_one_sentence(pins, bans, message):
    with pytest.raises(InputError, match=message):
        EditorControls(parse_pins(pins), parse_bans(bans))


def test_ban_parsing():
    assert parse_bans(["100-103,512", "7", " 9 ,"]) == frozenset({100, 101, 102, 103, 512, 7, 9})
    assert parse_pins(["3:120", "0:7"]) == {3: 120, 0: 7}


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "ssmp_infer.cli", "run", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def movie_file(tmp_path_factory, movie):
    path = tmp_path_factory.mktemp("controls") / "movie.npy"
    np.save(path, movie)
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pin", "16:3"], "outside the trailer"),
        (["--pin", "0:300"], "outside the movie"),
        (["--pin", "1:3", "--ban", "3"], "also banned"),
        (["--ban", "0-290"], "not banned"),
        (["--ban", "300"], "outside the movie"),
        (["--candidates", "3", "--mode", "topk"], "deterministic"),
        (["--candidates", "0"], "--candidates"),
    ],
)
def test_cli_refuses_bad_controls(movie_file, tmp_path, args, message):
    r = run_cli(movie_file, "--length", 16, *args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_cli_candidates_json_and_csv(movie_file, tmp_path):
    r = run_cli(movie_file, "--length", 16, "--candidates", 3, "--seed", 2, "--pin", "0:9", "--ban", "10-20",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [set(c) for c in out["candidates"]] == [{"seed", "shots", "confidence", "mean_confidence", "steps"}] * 3
    assert sorted(c["seed"] for c in out["candidates"]) == [2, 3, 4] and out["pinned"] == [0]
    for c in out["candidates"]:
        assert c["shots"][0] == 9 and not set(range(10, 21)) & set(c["shots"])
        assert c["mean_confidence"] == pytest.approx(sum(c["confidence"]) / 16)
    r = run_cli(movie_file, "--length", 16, "--candidates", 3, "--seed", 2, "--pin", "0:9", "--ban", "10-20",
                "--format", "csv", cwd=tmp_path)
    rows = [line.split(",") for line in r.stdout.splitlines()]
    assert rows[0] == ["candidate", "seed", "slot", "shot", "confidence"] and len(rows) == 1 + 3 * 16
    by_seed = {int(c["seed"]): c["shots"] for c in out["candidates"]}
    for row in rows[1:]:
        assert by_seed[int(row[1])][int(row[2])] == int(row[3])


def test_decoder_pins_with_copies_share_one_prepare(engine, movie):
    """`copies` runs `prepare` once for all candidates (the point of batching them). An engine that keeps
    no states: the shared one may have kept this movie's, and then runs no `prepare` at all."""
    backend = engine.backend
    engine = Engine(engine.model_config, backend, state_cache_mb=0)
    calls = []
    original = backend.prepare

    def counting(*args, **kwargs):
        calls.append(args[0].shape[0])
        return original(*args, **kwargs)

    backend.prepare = counting
    try:
        engine.candidates(movie, 5, length=8, decode=DecodeConfig(mode="paper"))
    finally:
        del backend.prepare
    assert calls == [1]
