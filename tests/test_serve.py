"""`ssmp-infer serve`: the real Ray Serve HTTP server on the loopback, started as a user starts it.

Every bad input gets a 4xx with one sentence and the server keeps answering; good requests get the
trailer `ssmp-infer run` gives; concurrent requests run as batches of more than one; SIGTERM drains.
The frontend's queue bound and timeout are tested on the deployment's class directly, with a stand-in
generator that never finishes (no Ray needed for that).
"""

import asyncio
import io
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="ssmp-infer serve needs the serve extra: pip install 'ssmp-infer[serve]'")

from ssmp_infer import DecodeConfig, Engine  # noqa: E402
from ssmp_infer.client import ServerError, generate_trailer, npy_bytes  # noqa: E402
from ssmp_infer.serve.launch import ServerProcess  # noqa: E402
from ssmp_infer.serve.metrics import parse  # noqa: E402

FEATURE_DIM = 1024
MAX_SHOTS, MAX_BODY_MB = 500, 3


def movie(shots: int, seed: int, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((shots, FEATURE_DIM)).astype(dtype)


@pytest.fixture(scope="module")
def server():
    flags = ["--num-cpus", 2, "--max-batch-size", 8, "--batch-wait-ms", 300, "--max-shots", MAX_SHOTS,
             "--max-body-mb", MAX_BODY_MB, "--device", "cpu"]
    with ServerProcess(flags) as s:
        yield s


@pytest.fixture(scope="module")
def engine():
    return Engine.load(device="cpu")


def post(url: str, body: bytes, query: str = "", method: str = "POST", headers=None):
    """(status, JSON answer or text, headers) of a raw request: for bodies the client would not send."""
    request = urllib.request.Request(url + "/v1/trailers" + query, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read()), e.headers


def one_sentence(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message and len(message) < 300, message


def pickled_object_array() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return buf.getvalue()


def bad_inputs() -> list[tuple[str, bytes, str, int, str]]:
    """(what, body, query, expected status, a word the sentence holds)."""
    nan = movie(40, 1)
    nan[5, 7] = np.nan
    inf = movie(40, 2, np.float64)
    inf[0, 0] = np.inf
    good = npy_bytes(movie(40, 3))
    return [
        ("NaN", npy_bytes(nan), "", 400, "NaN"),
        ("Inf", npy_bytes(inf), "", 400, "Inf"),
        ("3-D array", npy_bytes(movie(40, 4)[None]), "", 400, "2-D"),
        ("wrong feature size", npy_bytes(movie(40, 5)[:, :512]), "", 400, "512"),
        ("integers", npy_bytes(np.ones((40, FEATURE_DIM), dtype=np.int32)), "", 400, "int32"),
        ("garbage bytes", np.random.default_rng(6).bytes(3000), "", 400, ".npy"),
        ("empty body", b"", "", 400, "empty"),
        ("pickle", pickled_object_array(), "", 400, "pickle"),
        ("truncated", good[: len(good) // 2], "", 400, "truncated"),
        ("a zero row", npy_bytes(np.vstack([movie(39, 7), np.zeros((1, FEATURE_DIM), np.float32)])), "", 400, "zeros"),
        ("oversized body", b"\x93NUMPY" + bytes(MAX_BODY_MB * 2**20 + 10), "", 413, "cap"),
        ("too many shots", npy_bytes(movie(MAX_SHOTS + 1, 8, np.float16)), "", 413, "shots"),
        ("oversized length", good, "?length=41", 400, "larger"),
        ("zero length", good, "?length=0", 400, "positive"),
        ("length not a number", good, "?length=ten", 400, "integer"),
        ("negative seed", good, "?seed=-1", 400, "seed"),
        ("huge seed", good, "?seed=99999999999999999999", 400, "seed"),
        ("unknown mode", good, "?mode=beam", 400, "mode"),
        ("steps out of range", good, "?mode=topk&steps=0", 400, "steps"),
        ("steps with greedy", good, "?mode=greedy&steps=3", 400, "greedy"),
        ("unknown parameter", good, "?lenght=5", 400, "lenght"),
        ("repeated parameter", good, "?seed=1&seed=2", 400, "seed"),
        ("pin outside the movie", good, "?length=5&pin=0:99", 400, "99"),
        ("ban of every shot", good, "?length=5&ban=0-39", 400, "ban"),
    ]


def test_each_bad_input_is_one_sentence_and_the_server_still_answers(server):
    for what, body, query, status, word in bad_inputs():
        code, answer, _ = post(server.url, body, query)
        assert code == status, f"{what}: {code} {answer}"
        one_sentence(answer["error"])
        assert word.lower() in answer["error"].lower(), f"{what}: {answer['error']}"
        trailer = generate_trailer(server.url, movie(30, 9), length=4)  # the next good request still works
        assert len(trailer["shots"]) == 4, what
    code, answer, _ = post(server.url, b"", method="GET")
    assert code == 405 and answer["kind"] == "bad_method"
    with pytest.raises(ServerError) as e:
        generate_trailer(server.url + "/nowhere", movie(30, 9))
    assert e.value.status == 404
    errors = parse(server.metrics_text())
    assert errors['ssmp_errors_total{kind="bad_input"}'] >= 20 and errors['ssmp_errors_total{kind="too_large"}'] == 2


def test_a_content_length_over_the_cap_is_refused_before_the_body_is_read(server):
    code, answer, _ = post(server.url, b"x" * 10, headers={"Content-Length": str(MAX_BODY_MB * 2**20 + 1)})
    assert code == 413 and "cap" in answer["error"]


def test_the_client_raises_the_servers_sentence(server):
    bad = movie(20, 1)
    bad[3, 3] = np.nan
    with pytest.raises(ServerError, match="NaN or Inf") as e:
        generate_trailer(server.url, bad)
    assert e.value.status == 400 and e.value.kind == "bad_input"


@pytest.mark.parametrize("flags", [("--length", 6, "--seed", 5), ("--mode", "topk", "--steps", 4, "--length", 7, "--seed", 2),
                                   ("--ban", "0-9", "--pin", "0:20", "--length", 5)])
def test_a_trailer_is_the_one_ssmp_infer_run_gives(server, tmp_path, flags):
    features = movie(64, 11)
    np.save(tmp_path / "m.npy", features)
    run = subprocess.run([sys.executable, "-m", "ssmp_infer.cli", "run", str(tmp_path / "m.npy"), "--device", "cpu",
                          *map(str, flags)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    expected = json.loads(run.stdout)
    options = dict(zip(flags[::2], flags[1::2]))
    got = generate_trailer(server.url, features, length=options.get("--length"), mode=options.get("--mode"),
                           steps=options.get("--steps"), seed=options.get("--seed"),
                           pins=[options["--pin"]] if "--pin" in options else None,
                           bans=[options["--ban"]] if "--ban" in options else None)
    assert set(got) == set(expected)
    assert got["shots"] == expected["shots"]
    np.testing.assert_allclose(got["confidence"], expected["confidence"], rtol=1e-4, atol=1e-6)
    for key in ("num_movie_shots", "length", "steps", "mode", "backend", "model", "seed", "pinned"):
        assert got[key] == expected[key], key


def test_concurrent_requests_run_as_batches_and_each_gets_its_own_trailer(server, engine):
    movies = [movie(30 + 7 * k, 100 + k) for k in range(16)]
    bad = movie(30, 1)
    bad[0, 0] = np.nan
    before = parse(server.metrics_text())

    def one(k: int):
        if k % 8 == 7:  # a bad request among the good ones must not disturb them
            with pytest.raises(ServerError):
                generate_trailer(server.url, bad)
            return None
        return generate_trailer(server.url, movies[k], length=5, seed=3)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(16)))
    decode = DecodeConfig(seed=3)
    for k, answer in enumerate(answers):
        if answer is not None:
            assert answer["shots"] == engine.generate(movies[k], length=5, decode=decode).shots, k
    after = parse(server.metrics_text())
    batches = after["ssmp_batch_size_count"] - before["ssmp_batch_size_count"]
    singles = after['ssmp_batch_size_bucket{le="1"}'] - before['ssmp_batch_size_bucket{le="1"}']
    requests = after["ssmp_batch_size_sum"] - before["ssmp_batch_size_sum"]
    assert requests == 14, "every good request ran in exactly one batch"
    assert batches > singles, "some batch held more than one request"
    assert batches < 14
    assert after["ssmp_queue_depth"] == 0
    assert server.healthy()


def test_sigterm_drains_requests_in_flight(server):
    """Last in this module: it stops the server."""
    movies = [movie(120, 200 + k) for k in range(6)]
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(generate_trailer, server.url, m, 8) for m in movies]
        for _ in range(600):  # wait until the server holds the requests (admitted, not answered)
            if parse(server.metrics_text())["ssmp_queue_depth"] >= 1:
                break
            time.sleep(0.05)
        server.terminate()
        answers = [f.result(timeout=300) for f in futures]
    assert all(len(a["shots"]) == 8 for a in answers)
    assert server.process.wait(timeout=180) == 0
    assert any("stopped" in line for line in server.log), "".join(server.log[-10:])


# ------------------------------------------------------------------ a replica dies under load


def replica_pids() -> list[int]:
    """The generator replicas' processes on this machine (Ray titles them ray::ServeReplica:APP:Generator)."""
    import os

    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"ServeReplica:ssmp-infer:Generator" in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return sorted(found)


def test_a_replica_killed_under_load_loses_no_good_request(engine):
    """Two generator replicas under load, one killed by its process id: every request gets its correct
    trailer or a 503 with Retry-After (never a wrong trailer, never a hang), the client's retries get every
    trailer, /healthz keeps answering, /metrics counts the loss, and Ray starts the replica again."""
    import os

    flags = ["--replicas", 2, "--num-cpus", 2, "--max-batch-size", 2, "--batch-wait-ms", 20, "--device", "cpu"]
    movies = [movie(500, 400 + k) for k in range(16)]
    expected = [engine.generate(m, length=10).shots for m in movies]
    running = 'ssmp_generator_replicas{state="RUNNING"}'
    with ServerProcess(flags) as server:
        deadline = time.monotonic() + 180  # /healthz answers once the frontend is up; the generators follow
        while parse(server.metrics_text()).get(running) != 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert parse(server.metrics_text())[running] == 2
        pids = replica_pids()
        assert len(pids) == 2, pids
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(post, server.url, npy_bytes(m), "?length=10") for m in movies]
            for _ in range(600):  # kill while requests are held (admitted, not answered)
                if parse(server.metrics_text())["ssmp_queue_depth"] >= 4:
                    break
                time.sleep(0.02)
            os.kill(pids[0], signal.SIGKILL)
            seen = []  # what /metrics says of the replicas while Ray notices the loss and starts another
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (seen and seen[-1].get(running) == 2 and len(seen) > 1
                                                         and any(s.get(running, 0) < 2 for s in seen)):
                seen.append({k: v for k, v in parse(server.metrics_text()).items() if "replicas" in k})
                time.sleep(0.2)
            answers = [f.result(timeout=300) for f in futures]
        assert any(s.get(running, 0) < 2 for s in seen), seen[:5]  # the loss showed in /metrics ...
        assert server.healthy()
        lost = 0
        for (status, answer, headers), shots in zip(answers, expected):
            if status == 503:
                assert answer.get("kind") == "replica_lost" and float(headers["Retry-After"]) > 0, answer
                lost += 1
            else:
                assert status == 200 and answer["shots"] == shots, (status, answer)
        again = [generate_trailer(server.url, m, 10, retry_for=180)["shots"] for m in movies[:8]]
        assert again == expected[:8]
        if lost:
            assert parse(server.metrics_text()).get('ssmp_errors_total{kind="replica_lost"}', 0) >= lost
        deadline = time.monotonic() + 180
        while len(replica_pids()) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert len(replica_pids()) == 2 and pids[0] not in replica_pids()  # a new replica in the dead one's place
        while parse(server.metrics_text()).get(running) != 2 and time.monotonic() < deadline + 120:
            time.sleep(1)
        assert parse(server.metrics_text())[running] == 2  # ... and so did its return


# ------------------------------------------------------------------ starting up: an old address, SIGTERM


def serve_process(port: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ssmp_infer.entry", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--num-cpus", "1", "--device", "cpu"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)


def ray_started_under(pid: int) -> bool:
    """Whether the process has started Ray's own processes (its GCS server comes first): then it is inside
    ray.init or past it."""
    import os

    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid and b"gcs_server" in command:
            return True
    return False


def test_an_old_address_does_not_hold_serve_up_and_sigterm_stops_it_at_any_moment():
    """RAY_ADDRESS naming a cluster that is gone (as a shell keeps it after `ray stop`): serve, given no
    --address, starts a Ray of its own and answers; SIGTERM inside ray.init (once its GCS server runs),
    later in start-up, and once it serves: each stops it within a minute, with status 0 and no traceback
    (Ray's own handlers, which exit with status 15 or abort, are kept out: serve.connect)."""
    import os

    from ssmp_infer.serve.launch import free_port

    env = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ADDRESS": f"127.0.0.1:{free_port('127.0.0.1')}"}
    for moment in ("inside ray.init", "6 s in", "serving"):
        port = free_port("127.0.0.1")
        proc = serve_process(port, env)
        deadline = time.monotonic() + 300
        if moment == "serving":
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                        if json.loads(r.read()).get("status") == "ok":
                            break
                except (OSError, ValueError):
                    time.sleep(0.5)
        elif moment == "inside ray.init":
            while proc.poll() is None and time.monotonic() < deadline and not ray_started_under(proc.pid):
                time.sleep(0.02)
        else:
            time.sleep(6.0)
        assert proc.poll() is None and time.monotonic() < deadline, f"serve ended or stalled before {moment}"
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"SIGTERM {moment} did not stop serve within 60 s")
        assert "Traceback" not in stderr, stderr[-2000:]
        assert proc.returncode == 0 and "ssmp-infer: stopped" in stderr, (moment, proc.returncode, stderr[-2000:])


# ------------------------------------------------------------------ the frontend's limits, without Ray


class StuckResponse:
    """A generator call that never finishes (a replica wedged, or far too slow)."""

    cancelled = False

    def __await__(self):
        return asyncio.get_running_loop().create_future().__await__()

    def cancel(self):
        StuckResponse.cancelled = True


class StuckGenerator:
    class generate:
        @staticmethod
        def remote(job):
            return StuckResponse()


def request(body: bytes, path: str = "/v1/trailers"):
    from starlette.requests import Request

    sent = False

    async def receive():
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"", "headers": [], "root_path": ""}
    return Request(scope, receive)


def frontend(**limits):
    from ssmp_infer.serve.app import Frontend
    from ssmp_infer.serve.limits import Limits

    return Frontend.func_or_class(StuckGenerator(), FEATURE_DIM, Limits(**limits))


def test_a_full_queue_is_503_with_retry_after_and_a_slow_request_504():
    async def scenario():
        f = frontend(max_queue=2, timeout_s=1.0, retry_after_s=3)
        body = npy_bytes(movie(20, 1))
        held = [asyncio.create_task(f(request(body))) for _ in range(2)]
        await asyncio.sleep(0.3)  # both admitted, both waiting on the stuck generator
        refused = await f(request(body))
        timed_out = await asyncio.gather(*held)
        return f, refused, timed_out

    f, refused, timed_out = asyncio.run(scenario())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "3"
    assert "busy" in json.loads(refused.body)["error"]
    assert [r.status_code for r in timed_out] == [504, 504] and StuckResponse.cancelled
    assert f.metrics.queue_depth == 0 and f.metrics.errors == {"queue_full": 1, "timeout": 2}


class LostGenerator:
    """A generator whose replica died while it held the request (Ray raises ActorDiedError)."""

    class generate:
        @staticmethod
        def remote(job):
            async def died():
                from ray.exceptions import ActorDiedError

                raise ActorDiedError()

            return died()


def test_a_lost_replica_is_503_with_retry_after_never_a_500():
    from ssmp_infer.serve.app import Frontend
    from ssmp_infer.serve.limits import Limits

    f = Frontend.func_or_class(LostGenerator(), FEATURE_DIM, Limits(retry_after_s=2))
    answer = asyncio.run(f(request(npy_bytes(movie(20, 1)))))
    assert answer.status_code == 503 and answer.headers["retry-after"] == "2"
    assert "lost" in json.loads(answer.body)["error"] and f.metrics.errors == {"replica_lost": 1}


def test_the_client_retries_503_within_its_deadline_and_no_longer(tmp_path):
    """A stand-in server: 503 with Retry-After for the first answers, then the trailer."""
    import http.server
    import threading

    plan = {"refusals": 2, "seen": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            plan["seen"] += 1
            if plan["seen"] <= plan["refusals"]:
                body, status = json.dumps({"error": "the replica was lost; retry", "kind": "replica_lost"}), 503
            else:
                body, status = json.dumps({"shots": [1, 2, 3]}), 200
            self.send_response(status)
            if status == 503:
                self.send_header("Retry-After", "0.2")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        assert generate_trailer(url, movie(20, 1), retry_for=10)["shots"] == [1, 2, 3] and plan["seen"] == 3
        plan.update(refusals=100, seen=0)
        start = time.monotonic()
        with pytest.raises(ServerError) as e:
            generate_trailer(url, movie(20, 1), retry_for=1.0)
        assert e.value.status == 503 and e.value.kind == "replica_lost" and time.monotonic() - start < 3
        assert 3 <= plan["seen"] <= 7  # retried every 0.2 s within the second, then gave up
        plan.update(seen=0)
        with pytest.raises(ServerError):
            generate_trailer(url, movie(20, 1), retry_for=0)
        assert plan["seen"] == 1
    finally:
        httpd.shutdown()


def test_bodies_past_the_memory_budget_are_503_not_held():
    async def scenario():
        f = frontend(max_held_bytes=4096, retry_after_s=2)
        answer = await f(request(npy_bytes(movie(20, 1))))  # 80 KB: over the budget on its own
        return f, answer

    f, answer = asyncio.run(scenario())
    assert answer.status_code == 503 and answer.headers["retry-after"] == "2"
    assert f.held_bytes == 0 and f.metrics.queue_depth == 0


def test_a_batch_with_mixed_options_and_a_bad_pin_gives_each_request_its_own_answer(engine):
    from ssmp_infer.controls import EditorControls
    from ssmp_infer.serve.batching import Job, run_jobs

    jobs = [Job(movie(30, 1), 5, DecodeConfig(seed=1)), Job(movie(40, 2), 5, DecodeConfig(seed=2)),
            Job(movie(35, 3), 5, DecodeConfig(seed=1), EditorControls({0: 99})),  # shot 99 of 35: refused
            Job(movie(33, 4), None, DecodeConfig(mode="topk", steps=4)), Job(movie(36, 5), 4, DecodeConfig(seed=1))]
    answers = run_jobs(engine, jobs)
    assert "99" in answers[2]["error"] and "trailer" not in answers[2]
    for k, job in enumerate(jobs):
        if k != 2:
            alone = engine.generate(job.features, job.length, job.decode, job.controls)
            assert answers[k]["trailer"]["shots"] == alone.shots and answers[k]["trailer"]["seed"] == job.decode.seed, k


def test_the_metrics_text_is_cumulative_prometheus():
    from ssmp_infer.serve.metrics import Metrics

    m = Metrics()
    for size in (1, 3, 3, 8, 200):
        m.batch_size.observe(size)
    m.requests[200] += 2
    m.errors["bad_input"] += 1
    values = parse(m.render())
    assert [values[f'ssmp_batch_size_bucket{{le="{b}"}}'] for b in (1, 2, 4, 8, 128, "+Inf")] == [1, 1, 3, 4, 4, 5]
    assert values["ssmp_batch_size_sum"] == 215 and values["ssmp_batch_size_count"] == 5
    assert values['ssmp_requests_total{code="200"}'] == 2 and values['ssmp_errors_total{kind="bad_input"}'] == 1
