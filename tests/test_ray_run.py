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


def test_run_ray_resumes_after_the_records_a_stopped_run_left(movies, tmp_path):
    local = run(movies, "--out", tmp_path / "local.jsonl", *FAST)
    assert local.returncode == 2
    lines = (tmp_path / "local.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "ray.jsonl").write_text("".join(lines[:3]) + lines[3][:30])  # three whole records, a torn fourth
    on_ray = run("--ray", movies, "--out", tmp_path / "ray.jsonl", *FAST, "--resume")
    assert on_ray.returncode == 2 and "resuming after 3 of 8" in on_ray.stderr, on_ray.stderr[-2000:]
    assert "2 of 8 movies failed" in on_ray.stderr  # movie_02b among the kept records, movie_04b made now
    got, expected = records(tmp_path / "ray.jsonl"), records(tmp_path / "local.jsonl")
    assert (tmp_path / "ray.jsonl").read_text().splitlines()[:3] == [line.rstrip("\n") for line in lines[:3]]
    assert [r["name"] for r in got] == [r["name"] for r in expected]
    for a, b in zip(got, expected):
        assert a.get("shots") == b.get("shots") and a.get("error") == b.get("error"), a["name"]


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


# --- a cluster that does not answer: one sentence within seconds, nothing written --------------------

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_one_sentence(result, *words):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(w in lines[0] for w in words), lines[0]


def test_an_address_nobody_listens_on_is_one_sentence_within_seconds(movies, tmp_path):
    import time

    port = free_port()
    for address, env in ((f"127.0.0.1:{port}", {}), (f"ray://127.0.0.1:{port}", {}),
                         ("auto", {"RAY_ADDRESS": f"127.0.0.1:{port}"})):  # a note left by a cluster that is gone
        start = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "ssmp_infer.cli", "run", "--ray", address, str(movies),
                                 "--out", str(tmp_path / "out.jsonl"), *FAST], capture_output=True, text=True,
                                env={**os.environ, "PYTHONWARNINGS": "ignore", "RAY_USAGE_STATS_ENABLED": "0", **env})
        assert time.monotonic() - start < 60  # start-up plus a 5 s probe: seconds, where Ray alone waits for ever
        assert_one_sentence(result, "does not answer", str(port))
        assert list(tmp_path.iterdir()) == []  # no output, no temporary file beside it


def test_a_port_that_accepts_but_never_answers_gives_up_at_the_stated_time(movies, tmp_path):
    import socket
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held, stop = [], threading.Event()

    def accept():  # accept every connection and say nothing
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    address = f"127.0.0.1:{server.getsockname()[1]}"
    try:
        start = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "ssmp_infer.cli", "run", "--ray", address, str(movies),
                                 "--out", str(tmp_path / "out.jsonl"), *FAST], capture_output=True, text=True,
                                env={**os.environ, "PYTHONWARNINGS": "ignore", "RAY_USAGE_STATS_ENABLED": "0",
                                     "SSMP_INFER_RAY_CONNECT_S": "6"})
        took = time.monotonic() - start
    finally:
        stop.set()
        for conn in held:
            conn.close()
        server.close()
    assert_one_sentence(result, address, "did not answer within 6 s")
    assert 6 <= took < 60
    assert list(tmp_path.iterdir()) == []
