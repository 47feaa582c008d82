"""`ssmp-infer run --ray`: many movies on Ray Data (a local Ray, an Engine per actor) give the records the
local run gives, in input order, with a bad file reported in its place and the rest still generated."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ray.data", reason="run --ray needs the serve extra: pip install 'ssmp-infer[serve]'")

from ssmp_infer.serve.ray_run import looks_like_address  # noqa: E402

FAST = ("--mode", "topk", "--steps", "4", "--length", "6", "--batch-size", "2", "--device", "cpu")


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssmp_infer.cli", "run", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", "RAY_USAGE_STATS_ENABLED": "0"})


@pytest.fixture(scope="module")
def movies(tmp_path_factory):
    root = tmp_path_factory.mktemp("movies")
    for k, shots in enumerate((40, 73, 55, 80, 61, 47)):
        np.save(root / f"movie_{k:02d}.npy", np.random.default_rng(k).standard_normal((shots, 1024)).astype(np.float32))
    nan = np.random.default_rng(9).standard_normal((50, 1024))
    nan[7, 3] = np.nan
    np.save(root / "movie_02b.npy", nan)
    (root / "movie_04b.npy").write_bytes(os.urandom(300))  # garbage between good movies
    return root


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_ray_gives_the_local_runs_records_in_input_order(movies, tmp_path):
    local = run(movies, "--out", tmp_path / "local.jsonl", *FAST)
    on_ray = run("--ray", movies, "--out", tmp_path / "ray.jsonl", *FAST)  # `--ray DIR`: DIR is an input, Ray is local
    for result in (local, on_ray):
        assert result.returncode == 2, result.stderr[-2000:]  # two bad files: reported, the run still finishes
        assert "2 of 8 movies failed" in result.stderr
    got, expected = records(tmp_path / "ray.jsonl"), records(tmp_path / "local.jsonl")
    assert [r["name"] for r in got] == [r["name"] for r in expected] == sorted(p.stem for p in movies.iterdir())
    assert [("error" in r) for r in got] == [n in ("movie_02b", "movie_04b") for n in sorted(p.stem for p in movies.iterdir())]
    for a, b in zip(got, expected):
        assert set(a) == set(b), a["name"]
        if "error" in b:
            assert a["error"] == b["error"]
            continue
        assert a["shots"] == b["shots"], a["name"]
        np.testing.assert_allclose(a["confidence"], b["confidence"], rtol=1e-4, atol=1e-6)
        for key in ("num_movie_shots", "length", "steps", "mode", "backend", "model", "seed"):
            assert a[key] == b[key], (a["name"], key)


def test_run_ray_refuses_what_run_refuses_before_starting_ray(movies, tmp_path):
    result = run("--ray", "--length", "0", movies, "--out", tmp_path / "x.jsonl")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--length" in result.stderr
    assert not (tmp_path / "x.jsonl").exists()
    result = run("--ray", "--format", "csv", movies)
    assert result.returncode == 2 and "csv" in result.stderr


def test_an_address_is_told_from_an_input_path(tmp_path, monkeypatch):
    assert looks_like_address("auto") and looks_like_address("10.0.0.5:6379") and looks_like_address("ray://head:10001")
    assert not looks_like_address(str(tmp_path)) and not looks_like_address("movies/")
    monkeypatch.chdir(tmp_path)
    assert looks_like_address("host:1234")
    (tmp_path / "host:1234").mkdir()  # a directory that happens to look like an address is an input
    assert not looks_like_address("host:1234")
