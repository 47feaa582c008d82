"""Many movies per `run`: directories, .npz archives, lists of files; bad movies as error records in place;
the streaming API behind it (`ssmp_infer.many`) batches without holding more than a batch."""

import itertools
import json
import os
import pty
import subprocess
import sys

import numpy as np
import pytest

from ssmp_infer import DecodeConfig, Engine, InputError
from ssmp_infer.many import generate_many, iter_inputs

from .test_cli import assert_clean_failure, cli

FAST = ("--mode", "topk", "--steps", 4, "--length", 6)
DECODE = DecodeConfig(mode="topk", steps=4)
GOOD = {"movie_00": 40, "movie_01": 73, "movie_03": 55, "movie_04": 80, "movie_05": 61}
BAD = {"movie_02": "NaN", "movie_02b": "npy", "movie_06": "larger"}  # file stem -> a word its error names


def features(shots: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((shots, 1024)).astype(np.float32)


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load(device="cpu")


@pytest.fixture(scope="module")
def movies(tmp_path_factory):
    """A directory of good movies with three bad files among them (NaN, garbage bytes, 4 shots for a
    trailer of 6) and a file that is not a movie."""
    root = tmp_path_factory.mktemp("movies")
    for seed, (name, shots) in enumerate(GOOD.items()):
        np.save(root / f"{name}.npy", features(shots, seed))
    nan = features(50, 10)
    nan[7, 3] = np.nan
    np.save(root / "movie_02.npy", nan)
    (root / "movie_02b.npy").write_bytes(os.urandom(300))
    np.save(root / "movie_06.npy", features(4, 11))
    (root / "README.txt").write_text("not a movie")
    return root


@pytest.fixture(scope="module")
def alone(engine, movies) -> dict:
    """Each good movie's trailer generated on its own."""
    return {name: engine.generate(np.load(movies / f"{name}.npy"), length=6, decode=DECODE).shots for name in GOOD}


def test_a_directory_writes_every_good_movie_in_order_and_each_bad_one_in_its_place(movies, alone):
    result = cli("run", movies, *FAST, "--batch-size", 2)
    assert result.returncode == 2
    out = records(result.stdout)
    assert [r["name"] for r in out] == sorted([*GOOD, *BAD])  # sorted by file name; README.txt ignored
    for r in out:
        if r["name"] in BAD:
            assert set(r) == {"name", "error"} and BAD[r["name"]].lower() in r["error"].lower(), r
            continue
        shots = r["shots"]
        assert len(shots) == len(set(shots)) == r["length"] == 6
        assert all(0 <= s < GOOD[r["name"]] for s in shots) and r["num_movie_shots"] == GOOD[r["name"]]
        assert shots == alone[r["name"]], r["name"]  # batching does not change a movie's trailer

    # one sentence per bad file, then one summing up; never a traceback
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(BAD) + 1, result.stderr
    for name in BAD:
        assert sum(line.startswith(f"ssmp-infer: error: {name}: ") for line in lines) == 1, (name, lines)
    assert "3 of 8 movies failed" in lines[-1]


def test_a_single_file_run_gives_the_same_trailer(movies, alone):
    single = json.loads(cli("run", movies / "movie_04.npy", *FAST).stdout)
    assert "name" not in single  # one .npy alone: one JSON object, no name
    assert single["shots"] == alone["movie_04"]


def test_an_npz_is_one_movie_per_array_named_by_key(engine, tmp_path):
    arrays = {"zeta": features(47, 20), "alpha": features(62, 21), "flat": np.ones((30, 8), np.float32)}
    np.savez(tmp_path / "pack.npz", **arrays)
    result = cli("run", tmp_path / "pack.npz", *FAST)
    assert result.returncode == 2
    out = records(result.stdout)
    assert [r["name"] for r in out] == ["pack.npz:zeta", "pack.npz:alpha", "pack.npz:flat"]  # archive order
    for r, key in zip(out[:2], ("zeta", "alpha")):
        assert r["shots"] == engine.generate(arrays[key], length=6, decode=DECODE).shots
    assert "8-d features" in out[2]["error"] and "error: pack.npz:flat: the movie has 8-d" in result.stderr


def test_a_mix_of_files_directories_and_archives_keeps_input_order(movies, tmp_path, alone):
    np.savez(tmp_path / "pack.npz", only=features(44, 30))
    args = (movies / "movie_05.npy", tmp_path / "missing.npy", tmp_path / "pack.npz", movies, movies / "movie_00.npy")
    out = records(cli("run", *args, *FAST).stdout)
    assert [r["name"] for r in out] == ["movie_05", "missing", "pack.npz:only", *sorted([*GOOD, *BAD]), "movie_00"]
    assert "no such file" in out[1]["error"]
    assert out[0]["shots"] == alone["movie_05"] and out[-1]["shots"] == alone["movie_00"]


def test_two_good_movies_exit_zero(movies):
    result = cli("run", movies / "movie_00.npy", movies / "movie_01.npy", *FAST)
    assert result.returncode == 0 and result.stderr == ""
    assert [r["name"] for r in records(result.stdout)] == ["movie_00", "movie_01"]


def test_csv_with_several_movies_is_one_clear_error(movies):
    assert_clean_failure(cli("run", movies, "--format", "csv"), "csv", "JSON Lines")
    assert_clean_failure(cli("run", movies, "--batch-size", 0), "batch-size")


def test_out_is_atomic_and_never_clobbered(movies, tmp_path):
    out = tmp_path / "trailers.jsonl"
    base = ("run", movies / "movie_00.npy", movies / "movie_02.npy", *FAST, "--out", out)
    result = cli(*base)
    assert result.returncode == 2 and result.stdout == ""
    assert [r["name"] for r in records(out.read_text())] == ["movie_00", "movie_02"]

    out.write_text("the user's own notes")
    assert_clean_failure(cli(*base), "exists", "--force")
    assert out.read_text() == "the user's own notes"

    cli(*base, "--force")
    assert [r["name"] for r in records(out.read_text())] == ["movie_00", "movie_02"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trailers.jsonl"]  # no temp files left behind


def test_progress_bar_on_a_terminal(movies):
    """On a TTY the bar counts movies in place (\\r) and ends on its own line; error lines stay whole."""
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    args = [movies / "movie_00.npy", movies / "movie_02.npy", movies / "movie_01.npy"]
    proc = subprocess.run([sys.executable, "-m", "ssmp_infer.cli", "run", *map(str, args), *map(str, FAST)],
                          stdout=subprocess.PIPE, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the writer is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    tty = b"".join(chunks).decode().replace("\r\n", "\n")
    assert proc.returncode == 2 and len(proc.stdout.splitlines()) == 3
    assert "\r[1/3] movie_00" in tty and "\r[2/3] movie_02" in tty
    assert tty.rstrip().splitlines()[-1].startswith("ssmp-infer: error: 1 of 3 movies failed")
    shown = [line.split("\r")[-1] for line in tty.split("\n")]  # what the terminal shows once \r has run
    assert shown[0].startswith("ssmp-infer: error: movie_02: ") and "NaN" in shown[0]  # the error replaced the bar
    assert shown[1].strip() == "[3/3] movie_01"


# --- the Python API ------------------------------------------------------------------------------


def test_generate_many_is_lazy(engine):
    loaded = []

    def items():
        for k in range(100):
            yield f"m{k}", (lambda k=k: loaded.append(k) or features(40 + k, k))
        raise AssertionError("consumed past the end")

    results = generate_many(engine, items(), length=3, decode=DECODE, batch_movies=2)
    assert loaded == []  # nothing read before a result is asked for
    first = next(results)
    assert first.name == "m0" and first.ok and loaded == [0, 1]  # one batch read, no more
    assert [r.name for r in itertools.islice(results, 4)] == ["m1", "m2", "m3", "m4"]
    assert loaded == [0, 1, 2, 3, 4, 5]


def test_iter_inputs_reads_nothing_until_asked(movies, tmp_path):
    items = list(iter_inputs([movies]))  # a garbage .npy is among them: no error yet
    assert [name for name, _ in items] == sorted([*GOOD, *BAD])
    loader = dict(items)["movie_02b"]
    with pytest.raises(InputError, match="npy"):
        loader()
    np.savez(tmp_path / "p.npz", a=features(3, 0), b=features(4, 0))
    (name_a, load_a), (name_b, load_b) = iter_inputs([tmp_path / "p.npz"])
    assert (name_a, name_b) == ("p.npz:a", "p.npz:b")
    assert load_b().shape == (4, 1024) and load_a().shape == (3, 1024) and load_a().shape == (3, 1024)


def test_a_batch_that_raises_falls_back_to_one_by_one(engine):
    """If the engine refuses a whole batch, only the movie it refuses alone fails."""

    class Picky:
        feature_dim = engine.feature_dim

        def generate_batch(self, movies, lengths, decode):
            if any(m.shape[0] == 47 for m in movies):
                raise InputError("movie 1 is one the engine will not take")
            return engine.generate_batch(movies, lengths, decode)

        def generate(self, movie, length=None, decode=None):
            return self.generate_batch([movie], [length], decode)[0]

    arrays = [features(n, n) for n in (40, 47, 52, 60)]
    results = list(generate_many(Picky(), [(f"m{k}", a) for k, a in enumerate(arrays)], length=5, decode=DECODE,
                                 batch_movies=4))
    assert [r.name for r in results] == ["m0", "m1", "m2", "m3"]
    assert [r.ok for r in results] == [True, False, True, True]
    assert results[1].to_dict() == {"name": "m1", "error": "movie 1 is one the engine will not take"}
    for r, a in zip(results, arrays):
        if r.ok:
            assert r.trailer.shots == engine.generate(a, length=5, decode=DECODE).shots
            assert r.to_dict()["name"] == r.name and r.to_dict()["shots"] == r.trailer.shots


def test_generate_many_rejects_bad_options_at_the_call(engine):
    with pytest.raises(InputError, match="batch_movies"):
        generate_many(engine, [], batch_movies=0)
    with pytest.raises(InputError, match="positive"):
        generate_many(engine, [], length=0)
