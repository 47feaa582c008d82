"""Serving on Ray: `ssmp-infer serve` (Ray Serve, HTTP with dynamic batching) and `run --ray` (Ray Data).

    limits.py    what a request may be (body, shots, query) and the HTTP errors it gets otherwise
    metrics.py   the counters and histograms behind GET /metrics, in Prometheus text
    batching.py  a batch of requests through one Engine, each answer the one it would get alone
    app.py       the two Serve deployments: a frontend (HTTP, checks, limits, metrics) and the
                 generator replicas (one Engine each, @serve.batch)
    ray_run.py   many movies over a Ray Data actor pool, the same records as the local run

Nothing here is imported by `ssmp-infer --help`; ray loads only inside the commands that use it.
"""


def require_ray(command: str) -> None:
    """One sentence naming the extra, not an ImportError traceback, when Ray is not installed."""
    from ..errors import InputError

    try:
        import ray.data  # noqa: F401
        import ray.serve  # noqa: F401
    except ImportError:
        raise InputError(f"{command} needs Ray (Serve and Data): pip install 'ssmp-infer[serve]'") from None
