"""TensorRT: the engines of `ssmp_infer.export.tensorrt_export` behind the prepare/step interface.

Inputs and outputs are torch CUDA tensors whose memory TensorRT reads and writes directly, each
starting on a 256-byte boundary as TensorRT requires (a slice of a batch need not: it is copied). Each
engine runs on a CUDA stream of its own (not the legacy default stream, on which TensorRT adds a
synchronisation per call), ordered after the work torch queued before it, and torch's next work is
ordered after it: no host synchronisation. The engines compute in fp16 (see tensorrt_export.fp16_graph); their
inputs and outputs are float32 and bool, as for the other backends.

Written against TensorRT 10's documented Python API, and not yet run against TensorRT itself: no
machine it was written on has TensorRT and a GPU. tests/test_tensorrt.py drives the build and this
backend through a stand-in of that API on the CPU, and runs the real thing where both exist.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import torch

from ..errors import InputError
from ..export import tensorrt_runtime as rt
from .base import MovieState, StackedMovieCache, default_refresh_every, new_movie_state

def _torch_dtype(dtype) -> torch.dtype:
    table = {rt.trt.DataType.FLOAT: torch.float32, rt.trt.DataType.HALF: torch.float16, rt.trt.DataType.BOOL: torch.bool,
             rt.trt.DataType.INT32: torch.int32, rt.trt.DataType.INT64: torch.int64}
    if dtype not in table:
        raise InputError(f"these engines have a {dtype} input or output, which this backend does not bind; build them again")
    return table[dtype]


# The tensors whose batch dim is not the first: the stacked per-layer states (L, B, H, I, hd).
BATCH_DIM = {"keys": 1, "values": 1}


ALIGNMENT = 256  # bytes: where TensorRT requires every input and output to start


def empty_aligned(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """torch.empty that starts on an ALIGNMENT-byte boundary (CUDA's allocator gives that; a host one,
    as the tests' stand-in uses, need not)."""
    nbytes = math.prod(shape) * dtype.itemsize
    raw = torch.empty(nbytes + ALIGNMENT, dtype=torch.uint8, device=device)
    skip = -raw.data_ptr() % ALIGNMENT
    return raw[skip:skip + nbytes].view(dtype).view(shape)


def aligned(t: torch.Tensor) -> torch.Tensor:
    """`t`, or an aligned copy of it: a chunk of a batch starts wherever its first row lies."""
    if t.data_ptr() % ALIGNMENT == 0:
        return t
    return empty_aligned(tuple(t.shape), t.dtype, t.device).copy_(t)


class _EngineRunner:
    """One deserialised engine and its execution context."""

    def __init__(self, runtime, path: Path, device: torch.device):
        self.graph = path.name.split(".")[0]
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise InputError(f"TensorRT {rt.trt.__version__} cannot load {path} (its log above says why); build the engines again")
        self.context = self.engine.create_execution_context()
        self.device = device
        names = [self.engine.get_tensor_name(k) for k in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == rt.trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        self.dtypes = {n: _torch_dtype(self.engine.get_tensor_dtype(n)) for n in names}
        self.lock = threading.Lock()  # shapes and addresses live in the context: one run at a time
        self.stream = torch.cuda.Stream(device)

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{output name: tensor}, ready for whatever torch queues next on its current stream."""
        if sorted(inputs) != sorted(self.inputs):
            raise InputError(f"the {self.graph} engine takes {sorted(self.inputs)}, not {sorted(inputs)}; build the engines again")
        # Contiguous, aligned, of the engine's dtype, on the device: copies only when the caller's tensor is
        # not. Made on torch's stream and freed there: its later work waits for this engine (below), so the
        # caching allocator cannot hand their memory to anything that runs before the engine is done.
        bound = {n: aligned(t.to(self.device, self.dtypes[n]).contiguous()) for n, t in inputs.items()}
        current = torch.cuda.current_stream(self.device)
        with self.lock:
            for name, tensor in bound.items():
                if not self.context.set_input_shape(name, tuple(tensor.shape)):
                    raise InputError(f"the {self.graph} engine does not take {name} of shape {tuple(tensor.shape)}")
                self._set_address(name, tensor)
            outputs = {}
            for name in self.outputs:  # their shapes follow from the input shapes just set
                shape = tuple(self.context.get_tensor_shape(name))
                outputs[name] = empty_aligned(shape, self.dtypes[name], self.device)
                self._set_address(name, outputs[name])
            self.stream.wait_stream(current)  # the inputs torch wrote are ready
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"TensorRT could not run the {self.graph} engine (its log above says why)")
            current.wait_stream(self.stream)  # torch's next work reads the outputs after the engine wrote them
        return outputs

    def _set_address(self, name: str, tensor: torch.Tensor) -> None:
        if not self.context.set_tensor_address(name, tensor.data_ptr()):
            raise RuntimeError(f"TensorRT refused the address of {name} for the {self.graph} engine "
                               f"({tensor.data_ptr() % ALIGNMENT} bytes past a {ALIGNMENT}-byte boundary)")


class TensorRTBackend:
    """prepare.engine once per batch and step.engine per round (prefix attention, exact), or full.engine
    on the rounds that refresh the movie's states and step.engine in between (full attention): the
    same rules as the onnxruntime backend.

    A batch larger than the engines' batch profile runs in equal chunks that fit it; a movie or trailer
    outside the shots or slots profile is refused with one sentence.
    """

    name = "tensorrt"

    def __init__(self, engine_dir: str | Path | None = None, device: torch.device | str = "cuda",
                 weights_sha256: str | None = None):
        rt.require_tensorrt()
        if engine_dir is None:
            raise InputError("the tensorrt backend needs a directory of engines (or use TensorRTBackend.for_model)")
        from ..export.tensorrt_export import read_engine_metadata

        self.device = rt.cuda_device(device)
        self.engine_dir = Path(engine_dir)
        meta = read_engine_metadata(engine_dir)
        _check_built_here(meta, self.engine_dir, self.device, weights_sha256)
        self.config = meta["config"]
        self.profiles = meta["profiles"]
        with torch.cuda.device(self.device):  # engines and contexts live on the device current at load
            self._runtime = rt.trt.Runtime(rt.trt_logger())  # kept: it must outlive the engines it made
            self.runners = {graph: _EngineRunner(self._runtime, path, self.device) for graph, path in meta["paths"].items()}

    @classmethod
    def for_model(cls, model, device, engine_dir: str | Path | None = None, profiles=None) -> "TensorRTBackend":
        """The backend for a loaded model: its engines from `engine_dir` (checked to be this model's, this
        GPU's and this TensorRT's), or from the engine cache, built there on first use (minutes)."""
        rt.require_tensorrt()
        from ..export.tensorrt_export import cached_engine_dir
        from ..export.onnx_export import weights_sha256

        if engine_dir is None:
            engine_dir = cached_engine_dir(model, device, profiles=profiles)
        return cls(engine_dir, device, weights_sha256=weights_sha256(model))

    def _check_sizes(self, batch: int, shots: int, slots: int | None) -> None:
        limits = [("shots", "movie", shots, self.profiles.shots)]
        if slots is not None:
            limits.append(("slots", "trailer", slots, self.profiles.slots))
        for dim, what, size, (low, _, high) in limits:
            if not low <= size <= high:
                raise InputError(
                    f"a {what} of {size} {dim} is outside the {low}..{high} {dim} the TensorRT engines in "
                    f"{self.engine_dir} were built for; build engines that cover it with `ssmp-infer export "
                    f"--format tensorrt --max-{dim} N` and pass them with --engines"
                )
        if batch < self.profiles.batch[0]:
            raise InputError(
                f"a batch of {batch} movies is below the {self.profiles.batch[0]} the TensorRT engines in "
                f"{self.engine_dir} were built for; build engines with a batch profile that starts at 1"
            )

    def _run(self, graph: str, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        valid = inputs["movie_valid"]
        slots = inputs.get("slots")
        self._check_sizes(valid.shape[0], valid.shape[1], None if slots is None else slots.shape[1])
        runner, batch, most = self.runners[graph], valid.shape[0], self.profiles.batch[2]
        if batch <= most:
            return runner(inputs)
        # More movies than the profile takes: consecutive chunks of equal size (none falls below the
        # profile's min when it can be helped), outputs joined along their batch dim.
        count = -(-batch // most)
        sizes = [batch // count + (k < batch % count) for k in range(count)]
        starts = [sum(sizes[:k]) for k in range(count)]
        chunks = [
            runner({n: t.narrow(BATCH_DIM.get(n, 0), start, size) for n, t in inputs.items()})
            for start, size in zip(starts, sizes)
        ]
        return {name: torch.cat([c[name] for c in chunks], dim=BATCH_DIM.get(name, 0)) for name in runner.outputs}

    def prepare(self, movie, movie_valid, refresh_every=None) -> MovieState:
        k = default_refresh_every(self.config.movie_attention) if refresh_every is None else refresh_every
        keys_of = None
        if "shot_keys" in self.runners:  # the model's position keys: the movie alone decides them
            keys_of = lambda unit: self._run("shot_keys", movie=unit, movie_valid=movie_valid)["shot_keys"]  # noqa: E731
        state = new_movie_state(movie, movie_valid, k, keys_of=keys_of)
        if self.config.movie_attention == "prefix":
            state.refresh_every = 0  # exact: the states never need recomputing
            out = self._run("prepare", movie=state.movie_unit, movie_valid=movie_valid)
            state.cache = StackedMovieCache(out["keys"], out["values"])
            state.shot_prior = out.get("shot_prior")
        else:
            self._check_sizes(movie_valid.shape[0], movie_valid.shape[1], None)  # refused now, not at the first step
        return state

    def step(self, state: MovieState, slots, slot_masked, slot_valid) -> torch.Tensor:
        slot_inputs = dict(slots=slots.float(), slot_masked=slot_masked, slot_valid=slot_valid)
        if state.due_for_refresh():
            out = self._run("full", movie=state.movie_unit, movie_valid=state.movie_valid, **slot_inputs)
            state.cache = StackedMovieCache(out["keys"], out["values"]) if state.refresh_every != 1 else None
            state.shot_prior = out.get("shot_prior")
        else:
            cache = state.cache
            out = self._run("step", keys=cache.keys, values=cache.values, movie_valid=state.movie_valid, **slot_inputs)
        state.steps_since_prepare += 1
        return out["pred"]


def _check_built_here(meta: dict, directory: Path, device: torch.device, weights_sha256: str | None) -> None:
    """Engines run only with the weights, GPU model and TensorRT version they were built for."""
    here = {"gpu": rt.gpu_name(device), "tensorrt": rt.trt.__version__}
    if weights_sha256 is not None and meta["weights_sha256"] != weights_sha256:
        raise InputError(
            f"the TensorRT engines in {directory} were built from other weights (sha256 {meta['weights_sha256'][:12]}…, "
            f"this model's is {weights_sha256[:12]}…); build this model's with `ssmp-infer export --format tensorrt`"
        )
    if meta["gpu"] != here["gpu"]:
        raise InputError(f"the TensorRT engines in {directory} were built for a {meta['gpu']}, not this {here['gpu']}; build them on this GPU")
    if meta["tensorrt"] != here["tensorrt"]:
        raise InputError(
            f"the TensorRT engines in {directory} were built with TensorRT {meta['tensorrt']}, this is {here['tensorrt']}; build them again"
        )
