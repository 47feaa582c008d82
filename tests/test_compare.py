"""`ssmp-infer compare`: every method and metric in one table, the numbers `eval` gives, resumable."""

import json
import shlex
import subprocess
import sys

import numpy as np
import pytest

from ssmp_infer import compare
from ssmp_infer.compare import ROW_NAMES, ROWS, mean_std, select_rows
from ssmp_infer.errors import InputError
from ssmp_infer.metrics import TrailerScore
from ssmp_infer.synth import write_dataset

# `--minutes` of every trained method: seconds of training on tiny movies. The quality of the table is
# not the point here (tests/test_baselines.py checks that the baselines learn); its shape and its
# agreement with `eval` are.
MINUTES = "0.03"


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "ssmp_infer.cli", *args], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, movies=24, seed=3, min_shots=30, max_shots=50, test_fraction=0.25)
    return root


@pytest.fixture(scope="module")
def compared(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    proc = cli("compare", "--data", str(data), "--minutes", MINUTES, "--seeds", "1", "--out", str(out), "--device", "cpu")
    return out, proc


def test_table_has_every_method_and_metric(compared):
    out, proc = compared
    table = (out / "table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| method"))
    for metric in ("F1 (R 0)", "F1 (R 2)", "LD", "AA (R 0)", "steps"):
        assert metric in header
    body = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert [line.split("|")[1].strip() for line in body] == list(ROW_NAMES)
    for line in body:  # every metric cell is a number (AA may be "-" only where no movie had two matches)
        cells = [c.strip() for c in line.split("|")[3:6]]
        assert all(float(c.split(" ± ")[0]) >= 0 for c in cells), line
    report = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in report["rows"]] == list(ROW_NAMES)
    for row in report["rows"]:
        assert {"f1_r0", "f1_r2", "ld_r0", "aa_r0", "aa_r2"} <= set(row["mean"])
        assert row["mean"]["f1_r2"] >= row["mean"]["f1_r0"]  # a tolerance only adds matches
        if row["run"] is not None:
            assert row["steps"][0] > 0
    # the decoding ablation reads one checkpoint three ways; the schedule ablation trains its own
    runs = {r["name"]: r["seeds"][0].get("model_dir") for r in report["rows"]}
    assert runs["ssmp"] == runs["ssmp-topk"] == runs["ssmp-greedy"] != runs["ssmp-uniform"]
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[1/9]" in proc.stderr and "[9/9]" in proc.stderr  # progress, one line per step of the plan
    assert proc.stdout.splitlines()[-1].startswith("{")  # the last line is JSON


@pytest.mark.parametrize("row_name", ["random", "select-rank", "autoregressive", "ssmp-greedy"])
def test_numbers_are_those_of_ssmp_infer_eval(compared, row_name):
    """The row's recorded `ssmp-infer eval` command, run in its own process, gives the same numbers."""
    out, _ = compared
    result = json.loads((out / "results" / row_name / "seed0.json").read_text())
    command = shlex.split(result["eval_command"])
    assert command[:2] == ["ssmp-infer", "eval"]
    for tolerance in (0, 2):
        args = command[2:]
        args[args.index("--tolerance") + 1] = str(tolerance)
        got = json.loads(cli("eval", *args).stdout.strip().splitlines()[-1])
        want = result[f"r{tolerance}"]
        for key in ("precision", "recall", "f1", "ld", "aa", "aa_movies", "movies"):
            assert got[key] == want[key], (row_name, tolerance, key, got[key], want[key])


def test_resume_trains_nothing_again_and_refuses_other_settings(compared, data):
    out, _ = compared
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("model.safetensors")}
    proc = cli("compare", "--data", str(data), "--minutes", MINUTES, "--seeds", "1", "--out", str(out), "--device", "cpu")
    assert proc.stderr.count("done before, kept") == len(ROWS) and "training" not in proc.stderr
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("model.safetensors")}
    proc = cli("compare", "--data", str(data), "--minutes", "5", "--seeds", "1", "--out", str(out), check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "minutes" in proc.stderr


def test_metrics_come_from_the_shared_module(monkeypatch):
    """compare scores with ssmp_infer.metrics, the module eval uses: replacing it changes compare's numbers."""
    calls = []

    def fake(pred, truth, tolerance=0):
        calls.append(tolerance)
        return TrailerScore(0.25, 0.25, 0.25, 7, 0.5)

    monkeypatch.setattr("ssmp_infer.metrics.score_trailer", fake)

    class Example:
        targets = np.array([1, 2])

    scores = compare.score([[1, 2], [3, 4]], [Example(), Example()])
    assert scores["r0"]["f1"] == scores["r2"]["f1"] == 0.25 and scores["r0"]["ld"] == 7
    assert sorted(calls) == [0, 0, 2, 2]


def test_mean_and_sample_std_over_seeds():
    mean, std = mean_std([0.1, 0.3, None])
    assert mean == pytest.approx(0.2) and std == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert mean_std([0.4]) == (0.4, None) and mean_std([None]) == (None, None)


def test_methods_subset_and_bad_options():
    assert [r.name for r in select_rows("ssmp-greedy,random")] == ["random", "ssmp-greedy"]
    with pytest.raises(InputError, match="unknown --methods"):
        select_rows("ssmp,tgt")
    proc = cli("compare", "--data", "nowhere", "--minutes", "0", "--out", "x", check=False)
    assert proc.returncode == 2 and "--minutes" in proc.stderr
