"""`ssmp-infer bench`: its plain baseline decodes what the engine decodes, and a real run reports it."""

import json
import subprocess
import sys

import pytest

from ssmp_infer import DecodeConfig, Engine
from ssmp_infer.bench import plain_generate, synthetic_movies

from .helpers import with_position_keys


@pytest.fixture(scope="module")
def engine():
    return Engine.load(device="cpu")


@pytest.mark.parametrize("seed,position_keys", [(0, False), (1, False), (0, True)])
def test_plain_loop_gives_the_engines_topk_trailer(engine, seed, position_keys):
    # 24 slots over 12 rounds: most rounds lock several slots, so the order of locking within a round
    # (most probable first, a taken shot re-scored away) decides the trailer, not the schedule alone.
    # With position keys both score against the keys and feed them to locked slots.
    engine = with_position_keys(engine, position_keys)
    movie = synthetic_movies(1, 150, engine.feature_dim, seed)[0]
    shots, passes = plain_generate(engine.backend.model, movie, 24, steps=12)
    trailer = engine.generate(movie, length=24, decode=DecodeConfig(mode="topk", steps=12))
    assert shots == trailer.shots
    assert len(set(shots)) == 24
    assert passes == trailer.steps  # both skip a round whose scheduled count does not rise


def test_bench_quick_run_reports_every_setting():
    done = subprocess.run(
        [sys.executable, "-m", "ssmp_infer.cli", "bench", "--quick", "--device", "cpu"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert len(lines) > 1  # the readable table comes first
    assert result["model"]["movie_attention"] == "prefix"
    engine_rows = [r for r in result["rows"] if r["subject"] == "engine"]
    plain_rows = [r for r in result["rows"] if r["subject"] == "plain"]
    assert {(r["mode"], r["refresh_every"]) for r in engine_rows} == {
        ("paper", None), ("paper", 1), ("topk", None), ("topk", 1)
    }
    assert len(plain_rows) == 1 and plain_rows[0]["mode"] == "topk"
    for row in result["rows"]:
        assert row["median_ms"] > 0 and row["ms_per_trailer"] > 0 and row["trailers_per_s"] > 0, row
        assert row["speedup_vs_plain"] > 0 and row["speedup_vs_recompute"] > 0, row
    # prefix attention: the cached movie states are exact, so reuse changes no shot
    assert all(r["same_as_recompute"] for r in engine_rows)
    assert all(r["same_as_plain"] for r in engine_rows if r["mode"] == "topk" and r["precision"] == "fp32")
    recompute = [r for r in engine_rows if r["refresh_every"] == 1 and r["batch_size"] == 1 and r["precision"] == "fp32"]
    assert all(r["speedup_vs_recompute"] == 1.0 for r in recompute)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--modes", "paper,fast"], ["--modes", "fast"]),
        (["--batch-sizes", "1,0"], ["--batch-sizes", "at least 1"]),
        (["--shots", "many"], ["--shots", "many"]),
        (["--precisions", "fp8"], ["--precisions", "fp8"]),
        (["--repeats", "0"], ["--repeats"]),
    ],
)
def test_bench_bad_options_are_one_line(args, words, capsys):
    from ssmp_infer import cli

    assert cli.main(["bench", *args]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("ssmp-infer: error:") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
