"""`ssmp-infer run --ray [ADDRESS]`: many movies over a Ray Data actor pool, each actor holding an Engine.

The driver expands the inputs exactly as the local run does (`many.iter_inputs`: names and loaders, no
data read) and makes a Ray data set of (index, name) rows. `map_batches` sends consecutive rows to an
actor pool; each actor reads its movies itself (on a cluster the inputs must be on storage every node
sees) and runs them through `many.generate_many`, the local run's own code, so each record is the one
the local run writes: same trailers for the same seeds, a bad file an error record in its place. The
driver puts the records back in input order as they arrive and hands them to the CLI's JSON Lines writer.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from typing import Iterator

import numpy as np

from ..config import DecodeConfig
from ..engine import Trailer
from ..errors import InputError
from ..inputs import dumps_json, parse_json
from ..many import MovieResult, iter_inputs
from .connect import init_ray


class MovieActor:
    """One Engine per actor; a batch of (index, name) rows in, their JSON records out."""

    def __init__(self, paths: list[str], engine_options: dict, length: int | None, decode: DecodeConfig):
        from ..engine import Engine

        self.engine = Engine.load(**engine_options)
        self.items = list(iter_inputs(paths))  # the driver's expansion, repeated: lists names, reads nothing
        self.length, self.decode = length, decode
        import ray

        context = ray.get_runtime_context()
        self.node = context.get_node_id()  # which machine made which records: the run's log says

    def __call__(self, batch: dict) -> dict:
        from ..many import generate_many

        indices, names = [int(k) for k in batch["index"]], [str(n) for n in batch["name"]]
        items = []
        for k, name in zip(indices, names):
            if k < len(self.items) and self.items[k][0] == name:
                items.append(self.items[k])
            else:  # a directory changed between the driver's listing and this actor's
                items.append((name, _fails(f"{name} was not found where the run's listing put it (inputs changed during the run)")))
        results = generate_many(self.engine, items, length=self.length, decode=self.decode, batch_movies=len(items))
        return {"index": np.array(indices, dtype=np.int64),
                "record": np.array([dumps_json(r.to_dict()) for r in results], dtype=object),
                "node": np.array([self.node] * len(indices), dtype=object)}


def _fails(message: str):
    def load():
        raise InputError(message)

    return load


def _result(record: dict) -> MovieResult:
    name = record.pop("name")
    if "error" in record:
        return MovieResult(name, error=record["error"])
    return MovieResult(name, trailer=Trailer(**record))


def ray_results(paths: list[str], address: str | None, engine_options: dict, length: int | None, decode: DecodeConfig,
                batch_movies: int, total: int, gpus_per_actor: float = 0, start: int = 0) -> Iterator[MovieResult]:
    """MovieResults of the inputs from `start` on (a resumed run has the ones before), in input order,
    generated on Ray (`address` None: a local Ray in this process)."""
    import ray

    started = not ray.is_initialized()
    if started:
        init_ray(address)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows come back in input order; the buffer below checks it
        items = [{"index": k, "name": name} for k, (name, _) in enumerate(iter_inputs(paths))]
        assert len(items) == total, "the driver lists the inputs once, the same way every time"
        items = items[start:]
        if not items:
            return
        at_start = alive_nodes()
        batches = math.ceil(len(items) / batch_movies)
        resources = ray.cluster_resources()
        slots = resources.get("GPU", 0) // gpus_per_actor if gpus_per_actor else resources.get("CPU", 1)
        actors = int(max(1, min(batches, slots)))
        data = ray.data.from_items(items, override_num_blocks=batches).map_batches(
            MovieActor,
            fn_constructor_args=(paths, engine_options, length, decode),
            batch_size=batch_movies,
            batch_format="numpy",
            concurrency=actors,
            num_cpus=0 if gpus_per_actor else 1,
            num_gpus=gpus_per_actor,
        )
        waiting: dict[int, MovieResult] = {}
        expected = start
        made: Counter = Counter()  # records per node
        for row in data.iter_rows():
            index = int(row["index"])
            if index < expected or index in waiting:  # an invariant: a retried batch is delivered once
                raise RuntimeError(f"Ray returned the record of input {index} twice")
            waiting[index] = _result(parse_json(str(row["record"]), "a record from a Ray actor"))
            made[str(row["node"])] += 1
            while expected in waiting:
                yield waiting.pop(expected)
                expected += 1
        if expected != total:  # an invariant: every input gives exactly one record
            raise RuntimeError(f"Ray returned {expected} of {total} records")
        lost = at_start - alive_nodes()
        print(f"ssmp-infer: ray: {sum(made.values())} movies on {len(made)} node(s): "
              + ", ".join(f"node {node[:12]} made {count}{' (lost during the run)' if node in lost else ''}"
                          for node, count in made.most_common()), file=sys.stderr)
        if lost:
            print(f"ssmp-infer: ray: {len(lost)} node(s) lost during the run; Ray Data made their unfinished batches "
                  "again on the others (each record is written once)", file=sys.stderr)
    finally:
        if started:
            ray.shutdown()


def alive_nodes() -> set[str]:
    import ray

    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}


def looks_like_address(text: str) -> bool:
    """A Ray address (auto, local, HOST:PORT, ray://HOST:PORT) rather than an input path."""
    import os
    import re

    if os.path.exists(text):
        return False
    return text in ("auto", "local") or re.fullmatch(r"(ray://)?[\w.\-]+:\d{1,5}", text) is not None


def ray_generate(args):
    """`generate(items, start)` for the CLI's run_many: the run's options, checked here before Ray starts,
    then Ray joined (or started); the caller shuts it down (`ray.shutdown`)."""
    from ..cli_decode import decode_config
    from ..cli_backend import engine_options
    from . import require_ray

    require_ray("run --ray")
    if args.length is not None and args.length <= 0:
        raise InputError(f"--length must be positive, got {args.length}")
    decode = decode_config(args)
    address = None if args.ray == "local" else args.ray
    if address is None:
        from ..engine import resolve_device

        resolve_device(args.device)  # a bad device is one sentence here, not a failed actor later
    options = engine_options(args)
    gpus = 1 if args.device.startswith("cuda") else 0
    init_ray(address)  # now, before any output file: a cluster that does not answer is one sentence

    def generate(items, start: int = 0) -> Iterator[MovieResult]:
        return ray_results(args.features, address, options, args.length, decode, args.batch_size, len(items), gpus,
                           start)

    return generate
