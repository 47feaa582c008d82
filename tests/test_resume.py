"""`run MANY... --out trailers.jsonl --resume`: a run killed at any moment, then resumed, ends with the
records of an uninterrupted run; a file that is not this run's is refused in one sentence."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ssmp_infer.checkpoint import DEFAULT_MODEL_DIR

from .test_cli import assert_clean_failure, cli

FAST = ("--mode", "topk", "--steps", "4", "--length", "5", "--batch-size", "2")
MOVIES = 40
KILLS = 6  # kills that land while records are being written, before a try is let finish


def written(path) -> int:
    """Records in the file so far (whole lines)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


def comparable(path) -> list[dict]:
    """The records, without the wall time."""
    out = []
    for line in open(path, encoding="utf-8"):
        record = json.loads(line)
        record.pop("elapsed_ms", None)
        out.append(record)
    return out


def assert_same_records(got: list[dict], expected: list[dict]) -> None:
    """Record for record equal; confidences to float32 rounding (a batch's padding moves the last digits,
    not the shots)."""
    assert [r["name"] for r in got] == [r["name"] for r in expected]
    for a, b in zip(got, expected):
        a, b = dict(a), dict(b)
        np.testing.assert_allclose(a.pop("confidence", []), b.pop("confidence", []), rtol=1e-5, atol=1e-6)
        assert a == b


@pytest.fixture(scope="module")
def movies(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(3)
    for k in range(MOVIES):
        np.save(root / f"movie_{k:02d}.npy", rng.standard_normal((int(rng.integers(30, 70)), 1024)).astype(np.float32))
    np.save(root / "movie_06.npy", np.full((40, 1024), np.nan, np.float32))  # an error record in its place
    return root


@pytest.fixture(scope="module")
def uninterrupted(movies, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "trailers.jsonl"
    result = cli("run", movies, "--out", out, *FAST)
    assert result.returncode == 2 and "1 of 40 movies failed" in result.stderr  # movie_06
    records = comparable(out)
    assert [r["name"] for r in records] == [f"movie_{k:02d}" for k in range(MOVIES)]
    assert "error" in records[6] and all("shots" in r for k, r in enumerate(records) if k != 6)
    return records


def test_a_torn_last_line_is_made_again_and_the_rest_appended(movies, uninterrupted, tmp_path):
    out = tmp_path / "trailers.jsonl"
    whole = [json.dumps(r) for r in uninterrupted[:5]]
    out.write_text("\n".join(whole) + "\n" + whole[4][:-1][:40])  # five records, then half of a sixth
    result = cli("run", movies, "--out", out, *FAST, "--resume")
    assert result.returncode == 2 and "resuming after 5 of 40" in result.stderr
    assert "1 of 40 movies failed" in result.stderr  # the kept and the new records both count
    assert_same_records(comparable(out), uninterrupted)


def test_resume_of_a_finished_run_changes_nothing(movies, uninterrupted, tmp_path):
    out = tmp_path / "trailers.jsonl"
    assert cli("run", movies, "--out", out, *FAST).returncode == 2
    before = out.read_bytes()
    result = cli("run", movies, "--out", out, *FAST, "--resume")
    assert result.returncode == 2 and "resuming after 40 of 40" in result.stderr
    assert out.read_bytes() == before


def test_resume_without_a_file_starts_from_the_first_movie(movies, uninterrupted, tmp_path):
    out = tmp_path / "new.jsonl"
    result = cli("run", movies, "--out", out, *FAST, "--resume")
    assert result.returncode == 2 and "resuming" not in result.stderr
    assert_same_records(comparable(out), uninterrupted)


def test_killed_at_random_moments_and_resumed_gives_the_uninterrupted_records(movies, uninterrupted, tmp_path):
    """SIGKILL at random moments of each try (start-up, mid-batch, mid-write), then --resume, until a try
    finishes: the file then holds exactly the uninterrupted run's records, each once, in order."""
    out = tmp_path / "trailers.jsonl"
    rng = random.Random(7)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ssmp_infer.cli", "run", str(movies), "--out", str(out), *FAST, "--resume",
               "--batch-size", "1"]
    landed = []  # the records in the file after each kill that came while records were being written
    for attempt in range(40):
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        if len(landed) < KILLS and attempt < 30:  # then let a try finish
            if attempt % 3 == 2:  # a kill at a random moment of start-up, before any new record
                time.sleep(rng.uniform(0.2, 3.0))
            else:  # a kill a few records further on, a random fraction of a record's time after one
                target = written(out) + rng.randint(1, 8)
                while proc.poll() is None and written(out) < target:
                    time.sleep(0.002)
                time.sleep(rng.uniform(0.0, 0.03))
            if proc.poll() is None:
                before = written(out)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                if attempt % 3 != 2:
                    landed.append(before)
                continue
        proc.wait()
        assert proc.returncode == 2, proc.stderr.read()  # movie_06 fails, as uninterrupted
        break
    else:
        pytest.fail("no try finished")
    assert len(landed) >= 3, f"only {len(landed)} kills came while records were written: the test means little"
    assert_same_records(comparable(out), uninterrupted)


def test_resume_refuses_what_is_not_this_runs(movies, uninterrupted, tmp_path):
    out = tmp_path / "trailers.jsonl"
    other = tmp_path / "other.jsonl"
    records = [json.dumps(r) for r in uninterrupted]

    other.write_text("shot,slot\n1,2\n")
    assert_clean_failure(cli("run", movies, "--out", other, *FAST, "--resume"), "not a JSON record")
    other.write_text("my notes, no newline")  # not taken for a record torn by a kill: refused, not cut
    assert_clean_failure(cli("run", movies, "--out", other, *FAST, "--resume"), "not a record")
    assert other.read_text() == "my notes, no newline"
    other.write_text(json.dumps({"name": "movie_00", "f1": 0.3}) + "\n")
    assert_clean_failure(cli("run", movies, "--out", other, *FAST, "--resume"), "not a trailer or error record")
    other.write_text(records[1] + "\n")  # movie_01 where movie_00 comes first
    assert_clean_failure(cli("run", movies, "--out", other, *FAST, "--resume"), "movie_01", "other inputs")
    other.write_text(records[0] + "\n")
    model = tmp_path / "model"  # the bundled model's files under another name: another model to a record
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        (model / name).write_bytes((DEFAULT_MODEL_DIR / name).read_bytes())
    for options, word in ((("--seed", "3"), "seed"), (("--mode", "paper"), "mode"), (("--length", "4"), "length"),
                          (("--model", model), "model")):
        result = cli("run", movies, "--out", other, *FAST, *options, "--resume")  # the last of a repeated option wins
        assert_clean_failure(result, word, "same options")
        assert other.read_text() == records[0] + "\n"  # untouched
    out.write_text(records[0] + "\n")
    assert_clean_failure(cli("run", movies, "--out", out, *FAST, "--resume", "--force"), "--resume", "--force")
    assert_clean_failure(cli("run", movies / "movie_00.npy", "--out", out, *FAST, "--resume"), "several movies")
    assert_clean_failure(cli("run", movies, *FAST, "--resume"), "--out")
    assert_clean_failure(cli("run", movies, "--out", tmp_path, *FAST, "--resume"), "not a regular file")
    assert out.read_text() == records[0] + "\n"
