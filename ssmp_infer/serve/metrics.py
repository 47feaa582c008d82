"""The server's counters and histograms, written as Prometheus text (exposition format 0.0.4).

Kept in the frontend deployment, which every request passes through once, so one scrape of
GET /metrics sees the whole server however many generator replicas run. A few dozen lines of text
writer, rather than prometheus_client, keep it free of process-global registries.
"""

from __future__ import annotations

import math
from collections import Counter

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for k, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[k] += 1
                break
        else:
            self.counts[-1] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, n in zip((*self.buckets, math.inf), self.counts):
            running += n
            out.append(f'{name}_bucket{{le="{_number(bound)}"}} {running}')
        return out + [f"{name}_sum {_number(self.sum)}", f"{name}_count {self.count}"]


def _number(x: float) -> str:
    if x == math.inf:
        return "+Inf"
    return str(int(x)) if float(x).is_integer() else repr(float(x))


class Metrics:
    """Requests by status code, errors by kind, the queue depth now, batch sizes and latencies."""

    def __init__(self):
        self.requests = Counter()  # status code -> count
        self.errors = Counter()  # kind -> count
        self.queue_depth = 0  # admitted and not yet answered
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.latency = Histogram(LATENCY_BUCKETS_S)
        self.state_caches: dict[str, dict] = {}  # replica -> its engine's StateCache stats, as last reported
        self.movie_store = None  # the frontend's MovieStore (uploaded movies), when there is one

    def render(self, replicas: dict[str, int] | None = None) -> str:
        """`replicas`: generator replicas by state (RUNNING, STARTING, ...), when Serve could say."""
        lines = [
            "# HELP ssmp_requests_total Trailer requests answered, by HTTP status code.",
            "# TYPE ssmp_requests_total counter",
            *(f'ssmp_requests_total{{code="{code}"}} {n}' for code, n in sorted(self.requests.items())),
            "# HELP ssmp_errors_total Refused or failed trailer requests, by kind.",
            "# TYPE ssmp_errors_total counter",
            *(f'ssmp_errors_total{{kind="{kind}"}} {n}' for kind, n in sorted(self.errors.items())),
            "# HELP ssmp_queue_depth Trailer requests admitted and not yet answered.",
            "# TYPE ssmp_queue_depth gauge",
            f"ssmp_queue_depth {self.queue_depth}",
            "# HELP ssmp_batch_size Requests per batch run through the runtime.",
            "# TYPE ssmp_batch_size histogram",
            *self.batch_size.lines("ssmp_batch_size"),
            "# HELP ssmp_request_latency_seconds Time from admission to answer of a trailer request.",
            "# TYPE ssmp_request_latency_seconds histogram",
            *self.latency.lines("ssmp_request_latency_seconds"),
        ]
        lines += self.cache_lines()
        if replicas is not None:
            lines += ["# HELP ssmp_generator_replicas Generator replicas by state, as Ray Serve reports them.",
                      "# TYPE ssmp_generator_replicas gauge",
                      *(f'ssmp_generator_replicas{{state="{state}"}} {n}' for state, n in sorted(replicas.items()))]
        return "\n".join(lines) + "\n"

    def cache_lines(self) -> list[str]:
        """The replicas' kept movie states (summed over the replicas, each as it last reported) and the
        frontend's uploaded movies."""
        total = {k: sum(r.get(k, 0) for r in self.state_caches.values()) for k in ("hits", "misses", "evictions", "bytes", "entries")}
        lines = [
            "# HELP ssmp_state_cache_hits_total Trailers whose movie states a replica had kept (only the rounds ran).",
            "# TYPE ssmp_state_cache_hits_total counter",
            f"ssmp_state_cache_hits_total {total['hits']}",
            "# HELP ssmp_state_cache_misses_total Single-movie trailers and uploads whose movie pass ran.",
            "# TYPE ssmp_state_cache_misses_total counter",
            f"ssmp_state_cache_misses_total {total['misses']}",
            "# HELP ssmp_state_cache_evictions_total Movie states dropped to make room (least recently used first).",
            "# TYPE ssmp_state_cache_evictions_total counter",
            f"ssmp_state_cache_evictions_total {total['evictions']}",
            "# HELP ssmp_state_cache_bytes Bytes of movie states the replicas keep.",
            "# TYPE ssmp_state_cache_bytes gauge",
            f"ssmp_state_cache_bytes {total['bytes']}",
            "# HELP ssmp_state_cache_entries Movie states the replicas keep.",
            "# TYPE ssmp_state_cache_entries gauge",
            f"ssmp_state_cache_entries {total['entries']}",
        ]
        threads = {r["threads"] for r in self.state_caches.values() if "threads" in r}
        if threads:  # a replica's trailers are `run`'s when it computes with the threads `run` does (cli_serve.py)
            lines += ["# HELP ssmp_replica_threads The torch threads each replica computes with (the fewest, if they differ).",
                      "# TYPE ssmp_replica_threads gauge",
                      f"ssmp_replica_threads {min(threads)}"]
        store = self.movie_store
        if store is not None:
            lines += [
                "# HELP ssmp_movies_held Uploaded movies the server holds for trailers by id.",
                "# TYPE ssmp_movies_held gauge",
                f"ssmp_movies_held {len(store)}",
                "# HELP ssmp_movie_store_bytes Bytes of uploaded movies held.",
                "# TYPE ssmp_movie_store_bytes gauge",
                f"ssmp_movie_store_bytes {store.held_bytes}",
                "# HELP ssmp_movie_uploads_total Movies uploaded (POST /v1/movies).",
                "# TYPE ssmp_movie_uploads_total counter",
                f"ssmp_movie_uploads_total {store.uploads}",
                "# HELP ssmp_movie_store_evictions_total Uploaded movies dropped to make room.",
                "# TYPE ssmp_movie_store_evictions_total counter",
                f"ssmp_movie_store_evictions_total {store.evictions}",
            ]
        return lines


def parse(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value}: what the tests and the load test read back."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values
