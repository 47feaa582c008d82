"""The HTTP API on Ray Serve: a frontend deployment in front of generator replicas.

    POST /v1/trailers?length=&mode=&steps=&seed=&pin=&ban=   body: a .npy file's bytes -> the JSON of `ssmp-infer run`
    GET  /healthz                                           200 {"status": "ok"} (503 while draining)
    GET  /metrics                                           Prometheus text

The frontend (one replica, no CPU reserved) reads and checks each request with the CLI's own checks
(`ssmp_infer.inputs`), applies the limits (`limits.py`), counts everything (`metrics.py`) and hands the
validated array to a generator. Each generator replica holds one Engine; `@serve.batch` gathers the
requests that arrive within the wait window into one batch through the runtime. The body is parsed as
.npy by hand, never unpickled: user bytes never reach a pickle loader (Ray's own transport between its
processes carries only the float32 array the frontend built).
"""

from __future__ import annotations

import asyncio
import time

from ray import serve
from ray.exceptions import RayActorError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ..config import DecodeConfig
from ..errors import InputError
from ..inputs import dumps_json, features_from_npy_bytes, npy_header_of_bytes
from . import limits as lim
from .batching import Job, run_jobs
from .metrics import Metrics

TRAILERS_PATH = "/v1/trailers"
APP_NAME = "ssmp-infer"  # the name `serve` runs the app under


@serve.deployment(ray_actor_options={"num_cpus": 1})
class Generator:
    """One Engine per replica; a batch of Jobs in, one answer per Job out."""

    def __init__(self, engine_options: dict, max_batch_size: int, batch_wait_s: float):
        from ..engine import Engine

        self.engine = Engine.load(**engine_options)
        self.generate.set_max_batch_size(max_batch_size)
        self.generate.set_batch_wait_timeout_s(batch_wait_s)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)  # replaced from the CLI's options in __init__
    async def generate(self, jobs: list[Job]) -> list[dict]:
        # In a thread, so the replica's event loop keeps gathering the next batch while this one runs.
        answers = await asyncio.to_thread(run_jobs, self.engine, jobs)
        answers[0]["batch_size"] = len(jobs)  # the first answer of a batch reports it, once per batch
        return answers


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Frontend:
    def __init__(self, generator, feature_dim: int, limits: lim.Limits):
        self.generator = generator
        self.feature_dim = feature_dim
        self.limits = limits
        self.metrics = Metrics()
        self.held_bytes = 0  # request bodies held now, summed
        self.draining = False

    async def __call__(self, request: Request) -> Response:
        path, method = request.url.path.rstrip("/") or "/", request.method
        if path == TRAILERS_PATH and method == "POST":
            return await self.trailer(request)
        if path == "/healthz" and method == "GET":
            if self.draining:
                return JSONResponse({"status": "draining"}, status_code=503)
            return JSONResponse({"status": "ok"})
        if path == "/metrics" and method == "GET":
            replicas = await asyncio.to_thread(generator_replicas)
            return PlainTextResponse(self.metrics.render(replicas), media_type="text/plain; version=0.0.4")
        if path in (TRAILERS_PATH, "/healthz", "/metrics"):
            return self.refuse(lim.HttpError(405, "bad_method", f"{method} is not allowed on {path}"), count=False)
        return self.refuse(lim.HttpError(404, "not_found", f"no such endpoint {path[:80]}; POST a .npy to {TRAILERS_PATH}"),
                           count=False)

    async def trailer(self, request: Request) -> Response:
        if self.draining:
            return self.refuse(lim.draining(self.limits))
        if self.metrics.queue_depth >= self.limits.max_queue:  # bounded: never an unbounded backlog in memory
            return self.refuse(lim.queue_full(self.limits))
        self.metrics.queue_depth += 1
        held = [0]  # bytes of this request's body counted in self.held_bytes
        start = time.perf_counter()
        try:
            answer = await asyncio.wait_for(self.answer(request, held), self.limits.timeout_s)
            text = dumps_json(answer) + "\n"  # NaN refused, as in `ssmp-infer run`
            self.metrics.requests[200] += 1
            return Response(text, media_type="application/json")
        except asyncio.TimeoutError:
            return self.refuse(lim.timed_out(self.limits))
        except lim.HttpError as e:
            return self.refuse(e)
        except InputError as e:
            return self.refuse(lim.bad_request(e))
        except RayActorError:  # its replica died (killed, its node lost): Ray starts another, the client retries
            return self.refuse(lim.replica_lost(self.limits))
        except Exception as e:  # a bug: this request fails, the server stays up
            return self.refuse(lim.HttpError(500, "internal", f"the server failed on this request ({type(e).__name__})"))
        finally:
            self.metrics.queue_depth -= 1
            self.held_bytes -= held[0]
            self.metrics.latency.observe(time.perf_counter() - start)

    async def answer(self, request: Request, held: list[int]) -> dict:
        options = lim.parse_query(list(request.query_params.multi_items()))
        body = await self.read_body(request, held)
        job = await asyncio.to_thread(self.job, body, options)  # validation is CPU work: off the event loop
        response = self.generator.generate.remote(job)
        try:
            answer = await response
        except asyncio.CancelledError:  # the timeout fired: drop the job if it has not started
            response.cancel()
            raise
        if "batch_size" in answer:
            self.metrics.batch_size.observe(answer["batch_size"])
        if "error" in answer:
            raise InputError(answer["error"])
        return answer["trailer"]

    async def read_body(self, request: Request, held: list[int]) -> bytearray:
        """The body, refused (413) by its Content-Length before reading, or once it outgrows the cap; 503
        once the bodies of all requests in progress would pass max_held_bytes (counted as they arrive)."""
        lim.content_length(request.headers.get("content-length"), self.limits)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            held[0] += len(chunk)
            self.held_bytes += len(chunk)
            if len(body) > self.limits.max_body_bytes:
                raise lim.body_too_large(self.limits)
            if self.held_bytes > self.limits.max_held_bytes:
                raise lim.memory_full(self.limits)
        return body

    def job(self, body: bytearray, options: lim.Options) -> Job:
        from ..controls import EditorControls, parse_bans, parse_pins

        source = "the request body"
        header = npy_header_of_bytes(body, source)  # the shot cap, from the header, before the array is checked
        if len(header.shape) == 2:
            lim.check_shots(header.shape[0], self.limits)
        features = features_from_npy_bytes(body, source, self.feature_dim)
        length = options.length
        if length is not None and length > features.shape[0]:  # the CLI's check, in the API's words
            raise InputError(f"length {length} is larger than the movie's {features.shape[0]} shots; shots cannot repeat")
        decode = DecodeConfig.from_options(options.mode, options.steps, options.seed)  # as `run` reads its options
        controls = EditorControls(parse_pins(list(options.pins)), parse_bans(list(options.bans)))
        return Job(features, length, decode, controls)

    def refuse(self, error: lim.HttpError, count: bool = True) -> Response:
        if count:
            self.metrics.requests[error.status] += 1
            self.metrics.errors[error.kind] += 1
        return JSONResponse({"error": error.message, "kind": error.kind}, status_code=error.status, headers=error.headers)

    async def drain(self, timeout_s: float) -> int:
        """Refuse new trailer requests, wait for those admitted; returns how many were still open at the timeout."""
        self.draining = True
        deadline = time.monotonic() + timeout_s
        while self.metrics.queue_depth and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.metrics.queue_depth


def generator_replicas() -> dict[str, int] | None:
    """The generator replicas by state, from Serve's controller: a lost replica shows as fewer RUNNING, then
    as STARTING while Ray brings it back. None where Serve cannot say (outside a running app)."""
    try:
        status = serve.status().applications[APP_NAME].deployments["Generator"]
        return {str(getattr(state, "value", state)): int(n) for state, n in status.replica_states.items()}
    except Exception:  # a status is an extra: never fail /metrics over it
        return None


def build_app(engine_options: dict, feature_dim: int, limits: lim.Limits, replicas: int = 1, max_batch_size: int = 8,
              batch_wait_s: float = 0.01, replica_resources: dict | None = None):
    """The bound application: `serve.run(build_app(...))`."""
    # A replica holds one batch running and the next one filling; more would queue invisibly in it.
    generator = Generator.options(
        num_replicas=replicas,
        max_ongoing_requests=2 * max_batch_size,
        ray_actor_options=replica_resources or {"num_cpus": 1},
    ).bind(engine_options, max_batch_size, batch_wait_s)
    # Serve's own bound in front of the frontend, a backstop to its queue check: the proxy answers 503
    # with Retry-After itself once this many requests wait for the frontend.
    frontend = Frontend.options(
        max_ongoing_requests=limits.max_queue + 64,  # room for /healthz and /metrics beside a full queue
        max_queued_requests=4 * limits.max_queue,
        backpressure_config={"status_code": 503, "retry_after_s": limits.retry_after_s},
    )
    return frontend.bind(generator, feature_dim, limits)
