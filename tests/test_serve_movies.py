"""A movie uploaded once, many trailers by its id: `POST /v1/movies`, `POST /v1/movies/{id}/trailers`.

The real server (two generator replicas on the loopback), started as a user starts it: every trailer
of an uploaded movie is the one `ssmp-infer run` gives with the same options; trailers of a movie go to
the replica that holds its states (the replicas' cache hits, read from /metrics); a movie the server
does not hold is a 404 that says to upload again.
"""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="ssmp-infer serve needs the serve extra: pip install 'ssmp-infer[serve]'")

from ssmp_infer.client import ServerError, movie_trailer, npy_bytes, upload_movie  # noqa: E402
from ssmp_infer.serve.launch import ServerProcess  # noqa: E402
from ssmp_infer.serve.metrics import parse  # noqa: E402
from ssmp_infer.serve.movies import MovieRef, MovieStore  # noqa: E402

FEATURE_DIM = 1024
STORE_MB = 3  # three movies of 300 shots (1.2 MB each) do not fit: the oldest is dropped


def movie(shots: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((shots, FEATURE_DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def server():
    flags = ["--replicas", 2, "--num-cpus", 2, "--device", "cpu", "--movie-store-mb", STORE_MB, "--max-shots", 2000]
    with ServerProcess(flags) as s:
        yield s


def call(url: str, method: str = "POST", body: bytes | None = None):
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def run_cli(tmp_path, features: np.ndarray, flags) -> dict:
    np.save(tmp_path / "m.npy", features)
    run = subprocess.run([sys.executable, "-m", "ssmp_infer.cli", "run", str(tmp_path / "m.npy"), "--device", "cpu",
                          *map(str, flags)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


FLAG_SETS = [("--length", 6, "--seed", 5), ("--mode", "topk", "--steps", 4, "--length", 7, "--seed", 2),
             ("--ban", "0-9", "--pin", "0:20", "--pin", "3:41", "--length", 5), ("--seed", 9)]


def test_every_trailer_of_an_uploaded_movie_is_the_one_ssmp_infer_run_gives(server, tmp_path):
    features = movie(64, 11)
    status, answer = call(server.url + "/v1/movies", body=npy_bytes(features))
    assert status == 201 and answer["shots"] == 64 and answer["feature_dim"] == FEATURE_DIM
    key = answer["movie_id"]
    assert upload_movie(server.url, features) == key  # the same content, the same id, stored once
    assert upload_movie(server.url, movie(64, 12)) != key
    for flags in FLAG_SETS:
        expected = run_cli(tmp_path, features, flags)
        options = {}
        for flag, value in zip(flags[::2], flags[1::2]):
            options.setdefault(flag, []).append(str(value))
        one = {k: v[0] for k, v in options.items()}
        got = movie_trailer(server.url, key, length=one.get("--length"), mode=one.get("--mode"), steps=one.get("--steps"),
                            seed=one.get("--seed"), pins=options.get("--pin"), bans=options.get("--ban"))
        assert set(got) == set(expected)
        assert got["shots"] == expected["shots"], flags
        np.testing.assert_allclose(got["confidence"], expected["confidence"], rtol=1e-4, atol=1e-6)
        for name in ("num_movie_shots", "length", "steps", "mode", "backend", "model", "seed", "pinned"):
            assert got[name] == expected[name], (flags, name)
    # A product's rounding follows the threads that share it (a near tie between shots can follow it):
    # the replicas compute with the threads `run` gets here, not the one Ray gives an actor.
    threads = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], capture_output=True,
                             text=True, check=True).stdout
    assert parse(server.metrics_text())["ssmp_replica_threads"] == int(threads)


def test_trailers_of_a_movie_go_to_the_replica_that_holds_its_states(server):
    """16 edits of each of two movies from 8 clients, over two replicas: every one runs only its rounds (a
    replica's cache hit), which it does only on the replica that prepared the movie at its upload. Random
    routing would send about half of them to the other replica, which would prepare the movie again."""
    before = parse(server.metrics_text())
    movies = [movie(300, 20), movie(250, 21)]
    keys = [upload_movie(server.url, m) for m in movies]
    time.sleep(1.0)  # a replica tells the routers what it holds every 0.1 s: till then a request may go elsewhere
    edits = [(k, seed) for seed in range(16) for k in range(2)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda e: movie_trailer(server.url, keys[e[0]], seed=e[1], length=8), edits))
    assert [a["num_movie_shots"] for a in answers] == [(300, 250)[k] for k, _ in edits]
    assert len({tuple(a["shots"]) for a in answers}) > 2  # the seeds made different trailers
    after = parse(server.metrics_text())
    hits = after["ssmp_state_cache_hits_total"] - before["ssmp_state_cache_hits_total"]
    misses = after["ssmp_state_cache_misses_total"] - before["ssmp_state_cache_misses_total"]
    assert (hits, misses) == (len(edits), 2)  # the two uploads prepared their movies; no edit did
    assert after["ssmp_state_cache_bytes"] > 0 and after["ssmp_state_cache_entries"] >= 2


def test_a_movie_the_server_does_not_hold_is_a_404_that_says_upload_again(server):
    status, answer = call(server.url + "/v1/movies/0123456789abcdef01234567/trailers")
    assert status == 404 and answer["kind"] == "unknown_movie" and "upload it again" in answer["error"]
    key = upload_movie(server.url, movie(40, 30))
    assert call(server.url + f"/v1/movies/{key}", "GET") == (200, {"movie_id": key, "shots": 40, "feature_dim": FEATURE_DIM,
                                                                    "removed": False})
    assert call(server.url + f"/v1/movies/{key}", "DELETE")[0] == 200
    with pytest.raises(ServerError) as forgotten:
        movie_trailer(server.url, key)
    assert forgotten.value.status == 404 and forgotten.value.kind == "unknown_movie"
    # more than the store holds: the least recently used is dropped, and said to be
    before = parse(server.metrics_text())["ssmp_movie_store_evictions_total"]
    first, second, third = (upload_movie(server.url, movie(300, 40 + k)) for k in range(3))
    assert movie_trailer(server.url, third, length=4)["length"] == 4
    with pytest.raises(ServerError) as dropped:
        movie_trailer(server.url, first)
    assert dropped.value.status == 404 and "upload it again" in str(dropped.value)
    after = parse(server.metrics_text())
    assert after["ssmp_movie_store_evictions_total"] > before
    assert after["ssmp_movie_store_bytes"] <= STORE_MB * 2**20


@pytest.mark.parametrize("path, body, status, words", [
    ("/v1/movies", b"not a npy file", 400, "npy"),
    ("/v1/movies?length=5", None, 400, "no query parameters"),
    ("/v1/movies", None, 413, "keeps for uploaded movies"),  # 2000 shots: 8 MB, past the 3 MB store
])
def test_a_bad_upload_is_one_sentence(server, path, body, status, words):
    body = npy_bytes(movie(2000, 1) if status == 413 else movie(10, 1)) if body is None else body
    got, answer = call(server.url + path, body=body)
    assert got == status and words in answer["error"], answer
    assert answer["error"].count(". ") == 0 and "\n" not in answer["error"]


def test_a_bad_option_for_a_held_movie_is_a_400(server):
    key = upload_movie(server.url, movie(30, 50))
    status, answer = call(server.url + f"/v1/movies/{key}/trailers?length=31")
    assert status == 400 and "31" in answer["error"] and "30 shots" in answer["error"]
    status, answer = call(server.url + f"/v1/movies/{key}/trailers?pin=0:99")
    assert status == 400 and "99" in answer["error"]
    assert movie_trailer(server.url, key, length=3)["length"] == 3  # and the movie is still there


def test_the_movie_store_drops_the_least_recently_used_first():
    store = MovieStore(limit_bytes=300)
    for k in "abc":
        store.put(k, MovieRef(None, 1), 100)
    assert store.get("a") is not None  # a is now the most recently used: b goes first
    store.put("d", MovieRef(None, 1), 100)
    assert [k for k in "abcd" if store.get(k) is not None] == ["a", "c", "d"]
    assert store.held_bytes == 300 and store.evictions == 1 and store.uploads == 4
    store.put("big", MovieRef(None, 1), 250)
    assert [k for k in ("a", "c", "d", "big") if store.get(k) is not None] == ["big"]
    assert store.remove("big") and not store.remove("big") and store.held_bytes == 0
