"""CUDA graphs for decoding: a round's encoder step (`capture_step`, any kernels), or, with the fused
Triton kernels, the whole round (`ReplayedRound`: step, scoring, select + re-mask), captured once per
batch composition and replayed every later round.

On a GPU a cached step is ~50 small kernels (4 layers × attention, MLP, LayerNorms) over J slot rows:
launching them from Python costs more than running them. Replaying a captured graph launches them all
at once. Everything a step reads must then live at fixed addresses: the movie's cached keys and values
already do (they belong to one `MovieState`), and the slot inputs are copied into static tensors before
each replay. So a graph belongs to one state and one batch shape: a batch whose finished movies leave
(`MovieState.select`) gets a new state, and that state captures its own graph on its first step. The
graph lives on the state, not the backend: two batches can be stepped in any interleaving.

Not yet run on a GPU (benchmarks/RESULTS.md lists what has not; tests/test_runtime.py's CUDA-graph
tests skip without CUDA). Written against torch's documented `torch.cuda.CUDAGraph` / `torch.cuda.graph` API.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Callable

import torch

# Set while a ReplayedRound runs or captures its round: the backend's step is then part of the round's
# graph, and must not capture a step graph of its own (it would never be replayed).
_IN_REPLAYED_ROUND = contextvars.ContextVar("in_replayed_round", default=False)


def inside_replayed_round() -> bool:
    return _IN_REPLAYED_ROUND.get()


@contextlib.contextmanager
def _replayed_round():
    token = _IN_REPLAYED_ROUND.set(True)
    try:
        yield
    finally:
        _IN_REPLAYED_ROUND.reset(token)

# Steps run eagerly on a side stream before capture: the first runs allocate their workspace, pick
# cuBLAS/SDPA kernels and initialise handles, none of which may happen inside a capture.
WARMUP_STEPS = 2


@dataclass
class StepGraph:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, ...]  # static copies of (slots, slot_masked, slot_valid)
    output: torch.Tensor  # the predicted slot features, rewritten by every replay
    cache: object  # the MovieState cache the graph reads (identity-checked before each replay)

    def matches(self, cache, *inputs: torch.Tensor) -> bool:
        return cache is self.cache and all(
            a.shape == b.shape and a.dtype == b.dtype for a, b in zip(inputs, self.inputs)
        )

    def replay(self, *inputs: torch.Tensor) -> torch.Tensor:
        for static, new in zip(self.inputs, inputs):
            static.copy_(new)
        self.graph.replay()
        return self.output.clone()  # the next replay overwrites `output`; the decoder may hold this one


def capture_step(step: Callable[..., torch.Tensor], cache, device: torch.device, *inputs: torch.Tensor) -> StepGraph:
    """Warm `step(cache, *inputs)` up on a side stream, then capture it into a graph on static inputs."""
    static = tuple(t.clone() for t in inputs)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(WARMUP_STEPS):
            step(cache, *static)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = step(cache, *static)
    return StepGraph(graph, static, output, cache)


class ReplayedRound:
    """A decoding round (a zero-argument function of device tensors only) as a CUDA graph.

    The first call for a batch composition (`key`) runs the round eagerly on a side stream: that is the
    round's real work and the graph's warm-up at once (workspaces, kernel choices, Triton compilation
    happen outside any capture). The second call captures the round (recording runs nothing) and
    replays it; every later call only replays. The round must read whatever changes between rounds
    (the round number, the schedule) from device tensors that are filled before each call, and a new
    `key` (movies left the batch, so every state tensor is new) starts over.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.key = None
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self, key, round_fn: Callable[[], object]) -> None:
        current = torch.cuda.current_stream(self.device)
        if key != self.key:
            self.key, self.graph = key, None
            side = torch.cuda.Stream(self.device)
            side.wait_stream(current)
            with torch.cuda.stream(side), _replayed_round():
                round_fn()
            current.wait_stream(side)
            return
        if self.graph is None:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph), _replayed_round():
                round_fn()
        self.graph.replay()
