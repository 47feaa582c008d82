"""`run --ray ADDRESS` on a real Ray cluster of a head and two worker nodes on this machine
(`ray.cluster_utils.Cluster`, Ray's own tool for it, on this machine's own address): the job spreads over both
workers and the log says which node made how many; a worker node killed halfway (its processes, by Ray's
own removal) loses nothing: every movie's record exactly once, in input order, as a local run's."""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("ray.cluster_utils", reason="run --ray needs the serve extra: pip install 'ssmp-infer[serve]'")

FAST = ("--mode", "topk", "--steps", "4", "--length", "5", "--batch-size", "2", "--device", "cpu")
MOVIES = 24
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def movies(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster_movies")
    rng = np.random.default_rng(5)
    for k in range(MOVIES):
        np.save(root / f"movie_{k:02d}.npy", rng.standard_normal((int(rng.integers(150, 250)), 1024)).astype(np.float32))
    return root


@pytest.fixture(scope="module")
def local(movies, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "local.jsonl"
    result = subprocess.run([sys.executable, "-m", "ssmp_infer.cli", "run", str(movies), "--out", str(out), *FAST],
                            capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.fixture
def cluster():
    """A head that runs no work (0 CPUs) and two worker nodes of one CPU each, on this machine's own address
    (Ray turns a loopback address into the machine's own: `services.resolve_ip_for_localhost`), so no
    traffic leaves the machine."""
    from ray.cluster_utils import Cluster

    # the head checks its nodes every 0.5 s (Ray's default takes many seconds to call a killed node dead, and
    # a job that ends before then would not see the loss its log must report)
    checks = {"health_check_period_ms": 500, "health_check_timeout_ms": 500, "health_check_failure_threshold": 2}
    c = Cluster(initialize_head=True,
                head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": checks})
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    yield c, workers
    c.shutdown()


def same_records(got: list[dict], expected: list[dict]) -> None:
    assert [r["name"] for r in got] == [r["name"] for r in expected]  # each once, in input order
    for a, b in zip(got, expected):
        assert a["shots"] == b["shots"], a["name"]
        np.testing.assert_allclose(a["confidence"], b["confidence"], rtol=1e-4, atol=1e-6)


def node_counts(stderr: str) -> list[int]:
    line = [x for x in stderr.splitlines() if x.startswith("ssmp-infer: ray:")][-1]
    return [int(n) for n in re.findall(r"made (\d+)", line)]


def test_a_job_spreads_over_both_workers(cluster, movies, local, tmp_path):
    c, _ = cluster
    out = tmp_path / "ray.jsonl"
    result = subprocess.run([sys.executable, "-m", "ssmp_infer.cli", "run", "--ray", c.address, str(movies), "--out",
                             str(out), *FAST], capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = node_counts(result.stderr)
    assert len(counts) == 2 and sum(counts) == MOVIES and min(counts) > 0, result.stderr[-1000:]
    same_records([json.loads(line) for line in out.read_text().splitlines()], local)


def test_a_worker_node_killed_halfway_loses_nothing(cluster, movies, local, tmp_path):
    c, workers = cluster
    out = tmp_path / "ray.jsonl"
    # --resume writes record by record: the file says how far the job is
    proc = subprocess.Popen([sys.executable, "-m", "ssmp_infer.cli", "run", "--ray", c.address, str(movies), "--out",
                             str(out), *FAST, "--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the job ended before the node could be killed"
    written = out.read_text().count("\n")
    c.remove_node(workers[0], allow_graceful=False)  # kills the node's raylet, object store and workers
    try:
        _, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the job did not finish after losing a node")
    assert proc.returncode == 0, stderr[-3000:]
    assert written < MOVIES
    assert "1 node(s) lost during the run" in stderr, stderr[-2000:]
    same_records([json.loads(line) for line in out.read_text().splitlines()], local)
