"""The synthetic generator: its rules hold, it is deterministic, hard to shortcut, and `synth` checks its options."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ssmp_infer.cli import main
from ssmp_infer.data import MOVIE_DIR, TRAILER_DIR, load_split, shot_targets
from ssmp_infer.metrics import score_trailer, summarise
from ssmp_infer.synth import (
    CEILING_FILE,
    DEFAULT_SHOTS,
    MARKER,
    NUM_FACTORS,
    ORDER_RULES,
    WORTH_RULES,
    World,
    arrange,
    make_movie,
    movie_rng,
    reencode,
    select,
    shot_range,
    trailer_length,
    write_dataset,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "data"
    write_dataset(root, movies=12, seed=7, test_fraction=0.5, min_shots=100, max_shots=160)
    return root


def movies(world: World, count: int, shots: int, stream: int):
    return [make_movie(np.random.default_rng([stream, k]), world, shots) for k in range(count)]


def top_f1(scores: np.ndarray, movie) -> float:
    """F1 of the top-J shots by `scores` against the trailer's shots (selection only)."""
    pick = np.argsort(-scores, kind="stable")[: len(movie.order)]
    return score_trailer(pick.tolist(), movie.order.tolist()).f1


# --- rules --------------------------------------------------------------------------------------


def test_trailer_length_rule():
    at_cmtd = [trailer_length(1909, u) for u in np.linspace(-1, 1, 41)]
    assert 60 <= min(at_cmtd) and max(at_cmtd) <= 80 and trailer_length(1909) == 71
    assert max(at_cmtd) - min(at_cmtd) >= 15  # the jitter is real
    assert [trailer_length(n, u) for n in (8, 40, 100) for u in (-1, 1)] == [4, 4, 4, 4, 4, 4]
    assert trailer_length(4, 1) == 4 and trailer_length(3, 0) == 3  # never more shots than the movie
    assert trailer_length(100_000, 0) == 3700


def test_select_caps_scenes_and_setups_then_loosens():
    keys = np.array([9, 8, 7, 6, 5, 4, 3, 2.0])
    scene = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    setup = np.array([0, 0, 2, 3, 4, 5, 6, 7])  # shot 1 repeats shot 0's set-up
    assert select(keys, scene, setup, 4).tolist() == [0, 2, 4, 5]
    assert sorted(select(keys, scene, setup, 8).tolist()) == list(range(8))  # a length past the caps is met
    picked = select(keys, scene, setup, 6)
    assert len(set(picked.tolist())) == 6 and picked[:4].tolist() == [0, 2, 4, 5]


def test_arrange_opens_in_movie_order_then_scene_blocks():
    x = np.repeat([0.05, 0.15, 0.5, 0.7, 0.9], 2)  # five 2-shot scenes
    scene = np.repeat(np.arange(5), 2)
    intensity = np.repeat([0.0, 0.0, 2.0, -1.0, 1.0], 2)
    chosen = np.array([9, 2, 5, 0, 6, 4])
    assert arrange(chosen, x, scene, intensity, opening=0.3, noise=None).tolist() == [0, 2, 6, 9, 4, 5]
    noisy = arrange(chosen, x, scene, intensity, 0.3, noise=lambda n: np.array([0.0, 20.0, 0.0])[:n])
    assert noisy.tolist() == [0, 2, 9, 4, 5, 6]  # the editor's noise moved a scene block, kept the opening


def test_ground_truth_is_the_source_shot_mostly_but_not_always():
    world = World(3)
    swapped = slots = 0
    for k in range(40):
        rng = np.random.default_rng(k)
        movie = make_movie(rng, world, 300)
        trailer = reencode(rng, movie.features[movie.order]).astype(np.float16).astype(np.float32)
        truth = shot_targets(movie.features.astype(np.float16).astype(np.float32), trailer)
        cos = (trailer * movie.features[movie.order]).sum(1) / np.linalg.norm(trailer, axis=1) / np.linalg.norm(
            movie.features[movie.order], axis=1
        )
        assert 0.9 < cos.min() and cos.max() < 0.995  # re-encoded: close to its shot, never the same vector
        wrong = truth != movie.order
        # a near-duplicate set-up of the same scene (at most 12 shots away, the same look) took the slot
        assert (np.abs(truth[wrong] - movie.order[wrong]) <= 12).all()
        near = (unit(movie.features[truth[wrong]]) * unit(movie.features[movie.order[wrong]])).sum(1)
        assert (near > 0.999).all()
        swapped += wrong.sum()
        slots += len(truth)
    assert 0.002 < swapped / slots < 0.05, (swapped, slots)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_order_follows_the_movie_in_part():
    world = World(2)
    ordered, aa = [], []
    for movie in movies(world, 20, 600, stream=3):
        ordered.append(np.mean(np.diff(movie.order) > 0))
        common = [s for s in movie.guess.tolist() if s in set(movie.order.tolist())]
        aa.append(score_trailer(common, movie.order.tolist()).aa)
    assert 0.5 < np.mean(ordered) < 0.9, np.mean(ordered)  # neither movie order nor shuffled
    assert 0.6 < np.mean(aa) < 0.97, np.mean(aa)  # the rule's order, without its noise, is close but not exact


# --- worlds -------------------------------------------------------------------------------------


def test_seeds_draw_different_worlds():
    a, b = World(0), World(1)
    subspace = np.vstack([a.factors, a.intensity[None]])
    other = np.vstack([b.factors, b.intensity[None]])
    assert np.abs(subspace @ other.T).max() < 0.2  # unrelated directions, not a shared fixed world
    assert not np.allclose(a.kind_weights, b.kind_weights)

    # the best fixed projection of world 0's worthiness reads world 0 better than chance, world 1 not
    direction = a.kind_probs @ a.kind_weights @ a.factors
    own = np.mean([top_f1(m.features @ direction, m) for m in movies(a, 15, 400, stream=1)])
    foreign = np.mean([top_f1(m.features @ direction, m) for m in movies(b, 15, 400, stream=1)])
    chance = trailer_length(400) / 400
    assert own > 2 * chance and foreign < 2 * chance, (own, foreign, chance)


def test_no_linear_probe_reaches_the_ceiling():
    """A least-squares probe on every factor direction (what the old generator's rule was) is far from
    the rule: worthiness changes with the scene's kind and has products, contrasts and position."""
    world = World(0)
    probe_dirs = np.vstack([world.factors, world.intensity[None]]).T  # (D, F + 1)

    def coords(m):
        return np.c_[m.features @ probe_dirs, np.ones(len(m.features))]

    train, test = movies(world, 30, 400, stream=1), movies(world, 15, 400, stream=2)
    x = np.vstack([coords(m) for m in train])
    y = np.concatenate([np.isin(np.arange(len(m.features)), m.order) for m in train]).astype(float)
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    probe = np.mean([top_f1(coords(m) @ beta, m) for m in test])
    best_single = max(np.mean([top_f1(s * m.features @ d, m) for m in test]) for d in probe_dirs.T for s in (1, -1))
    ceiling = np.mean([score_trailer(m.guess.tolist(), m.order.tolist()).f1 for m in test])
    chance = trailer_length(400) / 400
    assert ceiling > 0.35
    assert chance < probe < 0.55 * ceiling and best_single < 0.55 * ceiling, (probe, best_single, ceiling)


def test_factors_are_in_the_features():
    """What the rule uses is readable: projecting on a factor direction recovers the factor closely."""
    world = World(5)
    movie = make_movie(np.random.default_rng(0), world, 500)
    z = movie.features @ world.factors.T  # (I, F) = 0.45 z + small leakage
    assert z.shape == (500, NUM_FACTORS)
    assert 0.3 < z.std() < 0.8


def test_direction_world_is_read_by_its_hidden_direction_and_scene_changes():
    """A direction world's worthiness is a hidden unit direction's latent plus scene openings: reading u
    from the features, and the drop in cosine to the shot before, gets most of the trailer; the same read
    of u in the mixed world of the same seed (where u is just a random direction) is chance."""
    mixed, direction = World(4), World(4, worth="direction")
    others = np.vstack([mixed.factors, mixed.intensity[None], mixed.themes.reshape(-1, 1024)])
    assert mixed.hidden is None and abs(np.linalg.norm(direction.hidden) - 1) < 1e-5
    assert np.abs(others @ direction.hidden).max() < 1e-5  # orthogonal to every other direction
    assert np.array_equal(direction.factors, mixed.factors) and np.array_equal(direction.themes, mixed.themes)
    assert 0.15 <= direction.open_share <= 0.35

    def change(m):  # high where a shot does not look like the one before: a new scene's first shot
        f = m.features / np.linalg.norm(m.features, axis=1, keepdims=True)
        return -np.r_[1.0, (f[1:] * f[:-1]).sum(1)]

    def coords(m):
        return np.c_[m.features @ direction.hidden, change(m), np.ones(len(m.features))]

    chance = trailer_length(400) / 400
    own, other = movies(direction, 15, 400, stream=1), movies(mixed, 15, 400, stream=1)
    read = np.mean([top_f1(m.features @ direction.hidden, m) for m in own])
    random_read = np.mean([top_f1(m.features @ direction.hidden, m) for m in other])
    cuts = np.mean([top_f1(change(m), m) for m in own])
    # a least-squares scorer on the two readings, fitted on other movies of the world
    train = movies(direction, 15, 400, stream=2)
    y = np.concatenate([np.isin(np.arange(len(m.features)), m.order) for m in train]).astype(float)
    beta = np.linalg.lstsq(np.vstack([coords(m) for m in train]), y, rcond=None)[0]
    both = np.mean([top_f1(coords(m) @ beta, m) for m in own])
    ceiling = np.mean([score_trailer(m.guess.tolist(), m.order.tolist()).f1 for m in own])
    assert read > 4 * chance and cuts > 2 * chance and random_read < 2 * chance, (read, cuts, random_read, chance)
    assert both > max(read, cuts) and both > 0.75 * ceiling, (both, read, cuts, ceiling)


def test_movie_order_keeps_the_selection_and_sorts_it():
    """`order="movie"` changes only the order: the same shots as the arc world's, in movie order, and the
    noise-free guess too (checked on make_movie's own shots, not through the labels' noise)."""
    for worth in WORTH_RULES:
        arc, plain = World(6, worth=worth), World(6, worth=worth, order="movie")
        for k in range(8):
            a, m = (make_movie(np.random.default_rng([2, k]), w, 300) for w in (arc, plain))
            assert np.array_equal(a.features, m.features)
            assert sorted(a.order.tolist()) == m.order.tolist() and sorted(a.guess.tolist()) == m.guess.tolist()
            assert m.order.dtype == m.guess.dtype == np.int64
        assert not all(np.all(np.diff(m.order) > 0) for m in movies(arc, 8, 300, stream=2))  # arc is not movie order


# --- data sets ----------------------------------------------------------------------------------


def test_default_world_remakes_the_example_movie(capsys, tmp_path):
    """Default worlds are untouched by the rule options: the README's command remakes examples/ bit for bit."""
    root = tmp_path / "ex"
    args = ("--out", root, "--movies", 2, "--seed", 7, "--world-seed", 0, "--shots", "500-700", "--test-fraction", 0.5)
    assert run_cli(capsys, *args)[0] == 0
    for sub, name in ((MOVIE_DIR, "movie.npy"), (TRAILER_DIR, "ground_truth/trailer.npy")):
        assert (root / "test" / sub / "movie_0001.npy").read_bytes() == (EXAMPLES / name).read_bytes(), name
    ceiling = json.loads((root / CEILING_FILE).read_text())
    assert (ceiling["worth"], ceiling["order"], ceiling["f1"]) == ("mixed", "arc", 0.56)
    assert "rising mean intensity" in ceiling["rule"]


def test_direction_movie_world_on_disk(tmp_path):
    """A direction world in movie order: ceiling.json and the marker name its rules, the ceiling is the
    world's own rule scored against the files (far above chance), and every test trailer's targets rise."""
    root = tmp_path / "d"
    write_dataset(root, movies=8, seed=5, test_fraction=0.5, min_shots=200, max_shots=300, worth="direction", order="movie")
    ceiling = json.loads((root / CEILING_FILE).read_text())
    marker = json.loads((root / MARKER).read_text())
    assert (ceiling["worth"], ceiling["order"]) == (marker["worth"], marker["order"]) == ("direction", "movie")
    assert "hidden direction" in ceiling["rule"] and "in movie order" in ceiling["rule"]
    assert ceiling["f1"] > 6 * ceiling["chance_f1"] and ceiling["aa"] > 0.9, ceiling
    world = World(5, worth="direction", order="movie")
    scores, rising = [], []
    for example in load_split(root, "test"):
        rng = movie_rng(5, int(example.name.split("_")[1]))
        guess = make_movie(rng, world, int(rng.integers(200, 301))).guess
        scores.append(score_trailer(guess.tolist(), example.targets.tolist(), 0))
        rising.append(np.mean(np.diff(example.targets) > 0))
    assert {k: summarise(scores)[k] for k in ("f1", "ld", "aa")} == {k: ceiling[k] for k in ("f1", "ld", "aa")}
    assert min(rising) > 0.8 and np.mean(rising) > 0.95, rising  # movie order, up to the labels' own noise




def test_dataset_sizes_layout_and_dtype(data):
    for split, count in (("train", 6), ("test", 6)):
        names = sorted(p.name for p in (data / split / MOVIE_DIR).glob("*.npy"))
        assert len(names) == count and names == sorted(p.name for p in (data / split / TRAILER_DIR).glob("*.npy"))
        for name in names:
            movie, trailer = np.load(data / split / MOVIE_DIR / name), np.load(data / split / TRAILER_DIR / name)
            assert movie.dtype == trailer.dtype == np.float16 and movie.shape[1] == trailer.shape[1] == 1024
            assert 100 <= movie.shape[0] <= 160 and 4 <= trailer.shape[0] <= 7


def test_ceiling_is_the_rule_scored_as_eval_scores(data):
    ceiling = json.loads((data / CEILING_FILE).read_text())
    assert ceiling["seed"] == ceiling["world_seed"] == 7 and ceiling["shots"] == [100, 160]
    assert ceiling["movies"] == ceiling["test_movies"] == 6 and ceiling["tolerance"] == 0
    assert 3 * ceiling["chance_f1"] < ceiling["f1"] < 1 and 0.5 < ceiling["aa"] <= 1
    # regenerate each test movie's guess and score it against the targets eval reads from the files
    world = World(7)
    scores = []
    for example in load_split(data, "test"):
        index = int(example.name.split("_")[1])
        rng = movie_rng(7, index)
        guess = make_movie(rng, world, int(rng.integers(100, 161))).guess
        scores.append(score_trailer(guess.tolist(), example.targets.tolist(), 0))
    assert {k: summarise(scores)[k] for k in ("f1", "ld", "aa")} == {k: ceiling[k] for k in ("f1", "ld", "aa")}


def test_same_seed_same_bytes_other_seed_other_data(data, tmp_path):
    write_dataset(tmp_path / "again", movies=12, seed=7, test_fraction=0.5, min_shots=100, max_shots=160)
    files = sorted(p.relative_to(data) for p in data.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file())
    assert all((data / f).read_bytes() == (tmp_path / "again" / f).read_bytes() for f in files)
    assert not any(p.name.startswith(".") for p in (tmp_path / "again").iterdir())  # no work folder left

    write_dataset(tmp_path / "other", movies=2, seed=8, min_shots=100, max_shots=160)
    rel = "train/movie_shot_embs/movie_0000.npy"
    assert (data / rel).read_bytes() != (tmp_path / "other" / rel).read_bytes()


def test_world_seed_makes_fresh_movies_of_a_known_world(tmp_path):
    write_dataset(tmp_path / "a", movies=2, seed=1, min_shots=40, max_shots=40, world_seed=9)
    write_dataset(tmp_path / "b", movies=2, seed=2, min_shots=40, max_shots=40, world_seed=9)
    a, b = (np.load(tmp_path / d / "train/movie_shot_embs/movie_0000.npy").astype(np.float32) for d in "ab")
    # same world: the same factor and theme directions carry both movies' variation
    world = World(9)
    basis = np.vstack([world.factors, world.intensity[None], world.themes.reshape(-1, 1024)])
    for m in (a, b):
        captured = np.linalg.norm(m @ basis.T) ** 2 / np.linalg.norm(m) ** 2
        assert captured > 0.4
    assert not np.array_equal(a, b)


# --- options ------------------------------------------------------------------------------------


def run_cli(capsys, *args):
    code = main(["synth", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(result, *words):
    code, out, err = result
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]


def test_every_split_gets_a_movie(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "--out", tmp_path / "d", "--movies", 3, "--test-fraction", 0.9, "--shots", "8-12")
    assert code == 0 and (json.loads(out)["train"], json.loads(out)["test"]) == (1, 2)
    assert len(list((tmp_path / "d" / "train" / MOVIE_DIR).glob("*.npy"))) == 1
    summary = write_dataset(tmp_path / "e", movies=2, test_fraction=0.01, min_shots=8, max_shots=8)
    assert (summary["train"], summary["test"]) == (1, 1)


@pytest.mark.parametrize("seed", [-1, 2**63, 2**70])
def test_seed_out_of_range_is_one_sentence(capsys, tmp_path, seed):
    assert_one_line_error(run_cli(capsys, "--out", tmp_path / "d", "--seed", seed, "--shots", 8), "--seed", "2^63")
    assert not (tmp_path / "d").exists()


def test_largest_seed_works(tmp_path):
    summary = write_dataset(tmp_path / "d", movies=2, seed=2**63 - 1, min_shots=8, max_shots=8)
    assert summary["seed"] == 2**63 - 1


@pytest.mark.parametrize(
    "args, words",
    [
        (("--max-shots", 10**23, "--min-shots", 10), ("100000",)),
        (("--max-shots", "1e23"), ("max-shots",)),
        (("--shots", f"8-{10**23}"), ("100000",)),
        (("--shots", "5-9"), ("min-shots",)),
        (("--shots", "abc"), ("--shots", "LO-HI")),
        (("--shots", "40-60", "--min-shots", 40), ("not both",)),
        (("--movies", 10**9), ("movies",)),
        (("--movies", 1), ("movies",)),
        (("--test-fraction", 1.0), ("test-fraction",)),
        (("--world-seed", -3), ("world-seed",)),
    ],
)
def test_bad_options_create_nothing(capsys, tmp_path, args, words):
    out = tmp_path / "parent" / "d"
    assert_one_line_error(run_cli(capsys, "--out", out, *args), *words)
    assert not (tmp_path / "parent").exists()


@pytest.mark.parametrize("option, allowed", [("--worth", WORTH_RULES), ("--order", ORDER_RULES)])
def test_unknown_rule_is_one_sentence_from_the_command(tmp_path, option, allowed):
    out = tmp_path / "d"
    result = subprocess.run(
        [sys.executable, "-m", "ssmp_infer.cli", "synth", "--out", str(out), option, "nope", "--shots", "8"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"unknown {option} 'nope'; expected one of [{', '.join(allowed)}]" in lines[0], lines
    assert not out.exists()


def test_direction_world_needs_room_for_its_direction(capsys, tmp_path):
    assert_one_line_error(run_cli(capsys, "--out", tmp_path / "d", "--worth", "direction", "--feature-dim", 39), "40")
    assert World(0, feature_dim=39).factors.shape == (NUM_FACTORS, 39)  # a mixed world needs one fewer


def test_shot_range():
    assert shot_range(None) == DEFAULT_SHOTS and 1800 <= sum(DEFAULT_SHOTS) / 2 <= 2000
    assert shot_range("250-700") == (250, 700) and shot_range("300") == (300, 300)
    assert shot_range(None, 40, None) == (40, DEFAULT_SHOTS[1])


def test_force_replaces_only_what_synth_wrote(capsys, tmp_path):
    root = tmp_path / "d"
    assert run_cli(capsys, "--out", root, "--movies", 3, "--shots", "8-10")[0] == 0
    (root / "notes.txt").write_text("mine")
    assert_one_line_error(run_cli(capsys, "--out", root, "--movies", 2, "--shots", "8-10"), "--force")
    assert len(list(root.rglob("*.npy"))) == 6
    assert run_cli(capsys, "--out", root, "--movies", 2, "--shots", "8-10", "--seed", 4, "--force")[0] == 0
    assert len(list(root.rglob("*.npy"))) == 4 and (root / "notes.txt").read_text() == "mine"
    assert json.loads((root / CEILING_FILE).read_text())["seed"] == 4


# --- trailer fraction ---------------------------------------------------------------------------


def test_trailer_fraction_sets_the_trailer_share_and_nothing_else():
    """A 7% world (the held-out set's 24-48 of 250-700 shots): each J is 7% of I within the ±13% jitter,
    at least 4, never more than I, and the movies are those of the default world of the same seed."""
    seven, default = World(3, trailer_fraction=0.07), World(3)
    assert seven.trailer_fraction == 0.07 and default.trailer_fraction == 0.037
    assert trailer_length(500, 0, 0.07) == 35 and trailer_length(100_000, 0, 0.07) == 7000
    shares = []
    for k, shots in enumerate((250, 310, 420, 530, 700, 260, 380, 640)):
        a, b = (make_movie(np.random.default_rng([4, k]), w, shots) for w in (seven, default))
        assert np.array_equal(a.features, b.features)  # the fraction draws nothing
        J = len(a.order)
        assert max(4, round(0.07 * shots * 0.87)) <= J <= max(4, round(0.07 * shots * 1.13)), (shots, J)
        assert len(a.guess) == J and len(set(a.order.tolist())) == J and J > 1.5 * len(b.order)
        shares.append(J / shots)
    assert 0.07 * 0.87 <= np.mean(shares) <= 0.07 * 1.13, shares
    for shots in (3, 8, 20):  # short movies: at least 4 shots, never more than the movie
        assert len(make_movie(np.random.default_rng(shots), seven, shots).order) == min(4, shots)


def test_trailer_fraction_on_disk(tmp_path):
    root = tmp_path / "seven"
    summary = write_dataset(root, movies=6, seed=5, test_fraction=0.5, min_shots=250, max_shots=350,
                            feature_dim=64, trailer_fraction=0.07)
    ceiling = json.loads((root / CEILING_FILE).read_text())
    marker = json.loads((root / MARKER).read_text())
    assert summary["trailer_fraction"] == ceiling["trailer_fraction"] == marker["trailer_fraction"] == 0.07
    assert 0.07 * 0.87 <= ceiling["mean_trailer_shots"] / ceiling["mean_shots"] <= 0.07 * 1.13, ceiling
    for split in ("train", "test"):
        for path in (root / split / TRAILER_DIR).glob("*.npy"):
            shots = len(np.load(root / split / MOVIE_DIR / path.name))
            assert round(0.07 * shots * 0.87) <= len(np.load(path)) <= round(0.07 * shots * 1.13)


def test_room_check_counts_the_trailer_fraction(monkeypatch, tmp_path):
    """10 movies of 1000 shots, 64-d float16: about 1.33 MB at 3.7%, 2.0 MB at 50%; 1.6 MB free holds only the first."""
    from types import SimpleNamespace

    from ssmp_infer import synth

    monkeypatch.setattr(synth.shutil, "disk_usage", lambda path: SimpleNamespace(free=1_600_000))
    synth.check_room(tmp_path / "d", 10, 1000, 1000, 2, 64)
    with pytest.raises(synth.InputError, match="on disk"):
        synth.check_room(tmp_path / "d", 10, 1000, 1000, 2, 64, trailer_fraction=0.5)


@pytest.mark.parametrize("value", ["0.9", "0", "-0.1", "nan"])
def test_bad_trailer_fraction_is_one_sentence_from_the_command(tmp_path, value):
    out = tmp_path / "parent" / "d"
    result = subprocess.run(
        [sys.executable, "-m", "ssmp_infer.cli", "synth", "--out", str(out), "--trailer-fraction", value, "--shots", "8"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--trailer-fraction must be in (0, 0.5], got {float(value)}" in lines[0], lines
    assert not (tmp_path / "parent").exists()
    assert World(0, trailer_fraction=0.5).trailer_fraction == 0.5  # the upper end is allowed
