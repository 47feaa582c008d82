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
        if replicas is not None:
            lines += ["# HELP ssmp_generator_replicas Generator replicas by state, as Ray Serve reports them.",
                      "# TYPE ssmp_generator_replicas gauge",
                      *(f'ssmp_generator_replicas{{state="{state}"}} {n}' for state, n in sorted(replicas.items()))]
        return "\n".join(lines) + "\n"


def parse(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value}: what the tests and the load test read back."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values
