"""The load test's short version: benchmarks/bench_serve.py against two real servers, for a few seconds each."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray.serve", reason="the load test needs the serve extra: pip install 'ssmp-infer[serve]'")

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_serve.py"


def test_the_load_test_stops_by_itself_with_no_error_on_a_good_request():
    result = subprocess.run([sys.executable, str(BENCH), "--clients", "4", "--duration", "3", "--max-requests", "60",
                             "--shots", "80", "--pool", "3", "--bad-fraction", "0.25"],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["good_request_errors"] == 0 and report["bad_requests_not_refused"] == 0
    batched, unbatched = report["settings"]["batched"], report["settings"]["unbatched"]
    for row in (batched, unbatched):
        assert row["good"] > 0 and row["healthy_after"]
        assert row["good"] + row["bad"] <= 60  # bounded in count as well as in time
    assert unbatched["by_size"] == {"<=1": unbatched["batches"]}  # --max-batch-size 1 never batches
    assert batched["max_batch_size"] > 1 and report["throughput_ratio_batched_over_unbatched"] > 0
