"""The HTTP API on Ray Serve: a frontend deployment in front of generator replicas.

    POST /v1/trailers?length=&mode=&steps=&seed=&pin=&ban=   body: a .npy file's bytes -> the JSON of `ssmp-infer run`
    POST /v1/movies                                         body: a .npy file's bytes -> 201 {"movie_id", "shots"}
    POST /v1/movies/{id}/trailers?length=&mode=&...         no body -> the JSON of `ssmp-infer run` (404: upload again)
    GET  /v1/movies/{id}, DELETE /v1/movies/{id}            the movie's shots, or forget it
    GET  /healthz                                           200 {"status": "ok"} (503 while draining)
    GET  /metrics                                           Prometheus text

The frontend (one replica, no CPU reserved) reads and checks each request with the CLI's own checks
(`ssmp_infer.inputs`), applies the limits (`limits.py`), counts everything (`metrics.py`) and hands the
validated array to a generator. Each generator replica holds one Engine; `@serve.batch` gathers the
requests that arrive within the wait window into one batch through the runtime. A movie uploaded once
(`movies.py`) is read and checked once; its trailers go, by its id, to the replica that holds its
prepared states (Ray Serve's model multiplexing), and each runs only its rounds there. The body is parsed as
.npy by hand, never unpickled: user bytes never reach a pickle loader (Ray's own transport between its
processes carries only the float32 array the frontend built).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import numpy as np
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
from .movies import MovieRef, MovieStore, carried_movie, carry_movie, movie_id

TRAILERS_PATH = "/v1/trailers"
MOVIES_PATH = "/v1/movies"
APP_NAME = "ssmp-infer"  # the name `serve` runs the app under
# Movies a replica keeps loaded (their features; their states are bounded by the engine's cache in
# bytes): past this, Serve unloads its least recently used one, and a later request loads it again.
MOVIES_PER_REPLICA = 64


@serve.deployment(ray_actor_options={"num_cpus": 1})
class Generator:
    """One Engine per replica; a batch of Jobs in, one answer per Job out; or one trailer of a held movie."""

    def __init__(self, engine_options: dict, max_batch_size: int, batch_wait_s: float, threads: int | None = None):
        from ..engine import Engine

        if threads:  # Ray gives an actor OMP_NUM_THREADS=1; `run` in the server's shell computes with `threads`
            import torch

            torch.set_num_threads(threads)
        self.engine = Engine.load(**engine_options)
        self.engine_lock = asyncio.Lock()  # one engine call at a time: both cores for one trailer, not two halves
        self.generate.set_max_batch_size(max_batch_size)
        self.generate.set_batch_wait_timeout_s(batch_wait_s)
        try:
            self.replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside Serve (the tests' direct calls)
            self.replica = "local"

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)  # replaced from the CLI's options in __init__
    async def generate(self, jobs: list[Job]) -> list[dict]:
        # In a thread, so the replica's event loop keeps gathering the next batch while this one runs.
        async with self.engine_lock:
            answers = await asyncio.to_thread(run_jobs, self.engine, jobs)
        answers[0]["batch_size"] = len(jobs)  # the first answer of a batch reports it, once per batch
        answers[0]["cache"] = self.cache_report()
        return answers

    @serve.multiplexed(max_num_models_per_replica=MOVIES_PER_REPLICA)
    async def movie(self, movie_id: str) -> np.ndarray:
        """A movie's features on this replica, its states prepared and kept: Serve calls this on the
        replica's first request for `movie_id` and keeps the result (least recently used out first)."""
        carried = carried_movie()
        features = await carried.ref  # from the object store, once per replica
        async with self.engine_lock:
            await asyncio.to_thread(self.engine.keep_movie, features)
        return features

    async def hold(self, carried: MovieRef) -> dict:
        """Load a movie just uploaded, so its first trailer already runs only its rounds."""
        carry_movie(carried)
        await self.movie(serve.get_multiplexed_model_id())
        return {"cache": self.cache_report()}

    async def movie_trailer(self, carried: MovieRef, length: int | None, decode: DecodeConfig, controls) -> dict:
        carry_movie(carried)
        features = await self.movie(serve.get_multiplexed_model_id())
        async with self.engine_lock:
            try:
                trailer = await asyncio.to_thread(self.engine.generate, features, length, decode, controls)
                answer = {"trailer": trailer.to_dict()}
            except InputError as e:
                answer = {"error": str(e)}
        answer["cache"] = self.cache_report()
        return answer

    def cache_report(self) -> dict:
        import torch

        return {"replica": self.replica, **dataclasses.asdict(self.engine.states.stats), "threads": torch.get_num_threads()}


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Frontend:
    def __init__(self, generator, feature_dim: int, limits: lim.Limits):
        self.generator = generator
        self.feature_dim = feature_dim
        self.limits = limits
        self.metrics = Metrics()
        self.movies = MovieStore(limits.max_movie_store_bytes)
        self.metrics.movie_store = self.movies
        self.held_bytes = 0  # request bodies held now, summed
        self.draining = False

    async def __call__(self, request: Request) -> Response:
        path, method = request.url.path.rstrip("/") or "/", request.method
        route = self.route(path, method)
        if route is not None:
            return await self.admitted(request, route)
        if path == "/healthz" and method == "GET":
            if self.draining:
                return JSONResponse({"status": "draining"}, status_code=503)
            return JSONResponse({"status": "ok"})
        if path == "/metrics" and method == "GET":
            replicas = await asyncio.to_thread(generator_replicas)
            return PlainTextResponse(self.metrics.render(replicas), media_type="text/plain; version=0.0.4")
        if path in (TRAILERS_PATH, MOVIES_PATH, "/healthz", "/metrics") or movie_path(path) is not None:
            return self.refuse(lim.HttpError(405, "bad_method", f"{method} is not allowed on {path[:80]}"), count=False)
        return self.refuse(lim.HttpError(404, "not_found", f"no such endpoint {path[:80]}; POST a .npy to {TRAILERS_PATH}"),
                           count=False)

    def route(self, path: str, method: str):
        """The handler of a request that does work (admitted, counted, timed), or None."""
        if method == "POST" and path == TRAILERS_PATH:
            return self.answer
        if method == "POST" and path == MOVIES_PATH:
            return self.upload
        found = movie_path(path)
        if found is not None:
            key, rest = found
            if method == "POST" and rest == "/trailers":
                return lambda request, held: self.movie_trailer(request, key)
            if method in ("GET", "DELETE") and rest == "":
                return lambda request, held: self.movie_info(key, forget=method == "DELETE")
        return None

    async def admitted(self, request: Request, handler) -> Response:
        if self.draining:
            return self.refuse(lim.draining(self.limits))
        if self.metrics.queue_depth >= self.limits.max_queue:  # bounded: never an unbounded backlog in memory
            return self.refuse(lim.queue_full(self.limits))
        self.metrics.queue_depth += 1
        held = [0]  # bytes of this request's body counted in self.held_bytes
        start = time.perf_counter()
        try:
            answer = await asyncio.wait_for(handler(request, held), self.limits.timeout_s)
            status = answer.pop("_status", 200)
            text = dumps_json(answer) + "\n"  # NaN refused, as in `ssmp-infer run`
            self.metrics.requests[status] += 1
            return Response(text, status_code=status, media_type="application/json")
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
        answer = await self.remote(self.generator.generate, job)
        if "batch_size" in answer:
            self.metrics.batch_size.observe(answer["batch_size"])
        return self.trailer_of(answer)

    async def upload(self, request: Request, held: list[int]) -> dict:
        """Read and check a movie once, keep it, and have a replica prepare its states: 201 and its id."""
        if request.query_params:
            raise InputError(f"{MOVIES_PATH} takes no query parameters; give them to {MOVIES_PATH}/ID/trailers")
        body = await self.read_body(request, held)
        features, key = await asyncio.to_thread(self.checked_movie, body)
        if not self.movies.fits(features.nbytes):
            raise lim.movie_store_too_small(features.nbytes, self.limits)
        carried = self.movies.get(key)
        if carried is None:
            import ray

            carried = MovieRef(await asyncio.to_thread(ray.put, features), features.shape[0])
        self.movies.put(key, carried, features.nbytes)
        answer = await self.remote(self.generator.options(multiplexed_model_id=key).hold, carried)
        self.record_cache(answer)
        return {"_status": 201, "movie_id": key, "shots": carried.shots, "feature_dim": self.feature_dim}

    async def movie_trailer(self, request: Request, key: str) -> dict:
        options = lim.parse_query(list(request.query_params.multi_items()))
        carried = self.movies.get(key)
        if carried is None:
            raise lim.unknown_movie(key, MOVIES_PATH)
        length, decode, controls = self.options_for(options, carried.shots)
        handle = self.generator.options(multiplexed_model_id=key).movie_trailer
        return self.trailer_of(await self.remote(handle, carried, length, decode, controls))

    async def movie_info(self, key: str, forget: bool) -> dict:
        carried = self.movies.get(key)
        if carried is None:
            raise lim.unknown_movie(key, MOVIES_PATH)
        if forget:
            self.movies.remove(key)
        return {"movie_id": key, "shots": carried.shots, "feature_dim": self.feature_dim, "removed": forget}

    async def remote(self, method, *args) -> dict:
        response = method.remote(*args)
        try:
            return await response
        except asyncio.CancelledError:  # the timeout fired: drop the job if it has not started
            response.cancel()
            raise

    def trailer_of(self, answer: dict) -> dict:
        self.record_cache(answer)
        if "error" in answer:
            raise InputError(answer["error"])
        return answer["trailer"]

    def record_cache(self, answer: dict) -> None:
        if "cache" in answer:
            report = answer["cache"]
            self.metrics.state_caches[report.pop("replica")] = report

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

    def checked_movie(self, body: bytearray) -> tuple[np.ndarray, str]:
        source = "the request body"
        header = npy_header_of_bytes(body, source)  # the shot cap, from the header, before the array is checked
        if len(header.shape) == 2:
            lim.check_shots(header.shape[0], self.limits)
        features = features_from_npy_bytes(body, source, self.feature_dim)
        return features, movie_id(features)

    def job(self, body: bytearray, options: lim.Options) -> Job:
        features, _ = self.checked_movie(body)
        return Job(features, *self.options_for(options, features.shape[0]))

    def options_for(self, options: lim.Options, shots: int) -> tuple:
        """(length, DecodeConfig, EditorControls) for a movie of `shots` shots, read as `run` reads its flags."""
        from ..controls import EditorControls, parse_bans, parse_pins

        length = options.length
        if length is not None and length > shots:  # the CLI's check, in the API's words
            raise InputError(f"length {length} is larger than the movie's {shots} shots; shots cannot repeat")
        decode = DecodeConfig.from_options(options.mode, options.steps, options.seed)  # as `run` reads its options
        controls = EditorControls(parse_pins(list(options.pins)), parse_bans(list(options.bans)))
        return length, decode, controls

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


def movie_path(path: str) -> tuple[str, str] | None:
    """"/v1/movies/ID" or "/v1/movies/ID/trailers" -> (ID, "" or "/trailers"); None for any other path."""
    if not path.startswith(MOVIES_PATH + "/"):
        return None
    key, _, rest = path[len(MOVIES_PATH) + 1:].partition("/")
    if not key or rest not in ("", "trailers"):
        return None
    return key, "/" + rest if rest else ""


def generator_replicas() -> dict[str, int] | None:
    """The generator replicas by state, from Serve's controller: a lost replica shows as fewer RUNNING, then
    as STARTING while Ray brings it back. None where Serve cannot say (outside a running app)."""
    try:
        status = serve.status().applications[APP_NAME].deployments["Generator"]
        return {str(getattr(state, "value", state)): int(n) for state, n in status.replica_states.items()}
    except Exception:  # a status is an extra: never fail /metrics over it
        return None


def build_app(engine_options: dict, feature_dim: int, limits: lim.Limits, replicas: int = 1, max_batch_size: int = 8,
              batch_wait_s: float = 0.01, replica_resources: dict | None = None, threads: int | None = None):
    """The bound application: `serve.run(build_app(...))`. `threads`: the torch threads each replica computes
    with (None: Ray's default for an actor, one per CPU it reserves)."""
    # A replica holds one batch running and the next one filling; more would queue invisibly in it.
    generator = Generator.options(
        num_replicas=replicas,
        max_ongoing_requests=2 * max_batch_size,
        ray_actor_options=replica_resources or {"num_cpus": 1},
    ).bind(engine_options, max_batch_size, batch_wait_s, threads)
    # Serve's own bound in front of the frontend, a backstop to its queue check: the proxy answers 503
    # with Retry-After itself once this many requests wait for the frontend.
    frontend = Frontend.options(
        max_ongoing_requests=limits.max_queue + 64,  # room for /healthz and /metrics beside a full queue
        max_queued_requests=4 * limits.max_queue,
        backpressure_config={"status_code": 503, "retry_after_s": limits.retry_after_s},
    )
    return frontend.bind(generator, feature_dim, limits)
