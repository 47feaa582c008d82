"""ONNX Runtime: the exported graphs (`ssmp_infer.export.onnx_export`) behind the prepare/step interface.

CPU execution provider by default, graph optimisations at ORT_ENABLE_ALL. On a CUDA device with
onnxruntime-gpu installed the CUDA execution provider runs the graphs, and inputs and outputs are
bound to torch CUDA tensors (I/O binding) so nothing goes through host memory. That path is written
against ONNX Runtime's documented `io_binding` API and has not yet run on a GPU (benchmarks/RESULTS.md
lists what has not).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..model import output_basis
from .base import MovieState, StackedMovieCache, default_refresh_every, new_movie_state

try:
    import onnxruntime as ort

    HAS_ONNXRUNTIME = True
except ImportError:
    ort = None
    HAS_ONNXRUNTIME = False

MISSING = "the onnxruntime backend needs ONNX Runtime: pip install 'ssmp-infer[onnx]'"


class OnnxRuntimeBackend:
    """prepare.onnx once per batch and step.onnx per round (prefix attention, exact), or full.onnx on
    the rounds that refresh the movie's states and step.onnx in between (full attention).

    A prefix model's cache is exact, so `refresh_every` 1 gives the same predictions as the cache (up
    to float rounding) and the backend always uses it.
    """

    name = "onnxruntime"

    def __init__(
        self,
        onnx_dir: str | Path,
        device: torch.device | str = "cpu",
        weights_sha256: str | None = None,
        precision: str | None = None,
        io_binding: bool | None = None,
    ):
        """`io_binding`: bind torch tensors' memory to the graphs' inputs and outputs (default: on CUDA,
        where it keeps everything on the GPU; on the CPU it runs the same binding code, for its test)."""
        if not HAS_ONNXRUNTIME:
            raise InputError(MISSING)
        from ..export.onnx_export import read_metadata

        meta = read_metadata(onnx_dir)
        if weights_sha256 is not None and meta["weights_sha256"] != weights_sha256:
            raise InputError(
                f"the ONNX files in {onnx_dir} were exported from other weights (sha256 {meta['weights_sha256'][:12]}…, "
                f"this model's is {weights_sha256[:12]}…); export this model with `ssmp-infer export`"
            )
        if precision is not None and meta["precision"] != precision:
            raise InputError(
                f"the ONNX files in {onnx_dir} are {meta['precision']} graphs, not {precision}; "
                f"export them with `ssmp-infer export --precision {precision}`"
            )
        self.config = meta["config"]
        self.precision = meta["precision"]
        self.onnx_dir = Path(onnx_dir)
        self.device = torch.device(device)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The decoder's torch ops run between every two graph runs: ORT's threads must not spin-wait
        # for the next run on the cores torch needs (measured: 4x slower trailers at 400 shots).
        options.intra_op_num_threads = torch.get_num_threads()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        self.io_binding = self.device.type == "cuda" if io_binding is None else io_binding
        self.stream = None
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise InputError(f"device {self.device} needs onnxruntime-gpu (this ONNX Runtime runs on the CPU only)")
            # ORT computes on a stream of ours (not the legacy default stream, which would serialise it
            # with every other stream), ordered against torch's by events rather than a device sync
            self.stream = torch.cuda.Stream(self.device)
            cuda = {"device_id": self.device.index or 0, "user_compute_stream": str(self.stream.cuda_stream)}
            providers = [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
        # Set by `for_model` for fp32 graphs (the model's out_proj weights); int8 graphs quantise them.
        self.output_basis: torch.Tensor | None = None
        self.sessions = {
            graph: ort.InferenceSession(str(path), options, providers=providers) for graph, path in meta["paths"].items()
        }

    @classmethod
    def for_model(cls, model, device, onnx_dir: str | Path | None = None, precision: str = "fp32") -> "OnnxRuntimeBackend":
        """The backend for a loaded model: its `precision` graphs (fp32 or int8) from `onnx_dir` (checked
        to be this model's, in that precision), or from the export cache, exported there on first use."""
        if not HAS_ONNXRUNTIME:
            raise InputError(MISSING)
        from ..export.onnx_export import ONNX_PRECISIONS, cached_onnx_dir, weights_sha256

        if precision not in ONNX_PRECISIONS:
            raise InputError(f"the onnxruntime backend runs {' or '.join(ONNX_PRECISIONS)} graphs, not {precision}")
        if precision == "int8" and torch.device(device).type != "cpu":
            raise InputError("int8 ONNX graphs are for the CPU (dynamic quantisation); on a GPU use fp32 or --backend tensorrt")
        if onnx_dir is None:
            onnx_dir = cached_onnx_dir(model, precision)
        backend = cls(onnx_dir, device, weights_sha256=weights_sha256(model), precision=precision)
        if precision == "fp32":  # the graphs' predictions lie in the model's output span, as torch's do
            basis = output_basis(model)
            backend.output_basis = None if basis is None else basis.to(backend.device)
        return backend

    def _run(self, graph: str, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The graph's outputs by name."""
        session = self.sessions[graph]
        names = [out.name for out in session.get_outputs()]
        if not self.io_binding:
            feed = {name: np.ascontiguousarray(t.detach().cpu().numpy()) for name, t in inputs.items()}
            return {name: torch.from_numpy(out) for name, out in zip(names, session.run(None, feed))}
        # Bind the torch tensors' memory; outputs go into torch tensors allocated here (their shapes
        # follow from the inputs', see `_output_shape`).
        binding = session.io_binding()
        kind, index = self.device.type, self.device.index or 0
        inputs = {name: t.to(self.device).contiguous() for name, t in inputs.items()}  # alive until the run ends
        for name, t in inputs.items():
            binding.bind_input(name, kind, index, _NUMPY[t.dtype], tuple(t.shape), t.data_ptr())
        outputs = []
        for out in session.get_outputs():
            t = torch.empty(self._output_shape(out.name, inputs), dtype=torch.float32, device=self.device)
            binding.bind_output(out.name, kind, index, np.float32, tuple(t.shape), t.data_ptr())
            outputs.append(t)
        if self.stream is not None:  # ORT's stream starts after torch's pending writes to the inputs
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
        session.run_with_iobinding(binding)  # returns once ORT's stream is done
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return dict(zip(names, outputs))

    def _output_shape(self, name: str, inputs: dict) -> tuple[int, ...]:
        cfg = self.config
        movie_valid = inputs["movie_valid"]
        B, I = movie_valid.shape
        if name == "pred":
            return (B, inputs["slots"].shape[1], cfg.feature_dim)
        if name == "shot_prior":
            return (B, I)
        if name == "shot_keys":
            return (B, I, cfg.feature_dim)
        return (cfg.n_layers, B, cfg.n_heads, I, cfg.head_dim)  # keys, values

    def prepare(self, movie, movie_valid, refresh_every=None) -> MovieState:
        k = default_refresh_every(self.config.movie_attention) if refresh_every is None else refresh_every
        keys_of = None
        if "shot_keys" in self.sessions:  # the model's position keys: the movie alone decides them
            keys_of = lambda unit: self._run("shot_keys", movie=unit, movie_valid=movie_valid)["shot_keys"].to(self.device)  # noqa: E731
        state = new_movie_state(movie, movie_valid, k, self.output_basis, keys_of)
        if self.config.movie_attention == "prefix":
            state.refresh_every = 0  # exact: the states never need recomputing
            # the graph normalises its input again (an exported file takes features of any norm); on
            # the unit movie that is one cheap in-graph op, and the host keeps a single normalised copy
            self._keep_movie(state, self._run("prepare", movie=state.movie_unit, movie_valid=movie_valid))
        return state

    def _keep_movie(self, state: MovieState, out: dict) -> None:
        """What a prepare or full run says about the movie, into the state."""
        state.cache = StackedMovieCache(out["keys"], out["values"]) if state.refresh_every != 1 else None
        state.shot_prior = out.get("shot_prior")

    def step(self, state: MovieState, slots, slot_masked, slot_valid) -> torch.Tensor:
        slot_inputs = dict(slots=slots.float(), slot_masked=slot_masked, slot_valid=slot_valid)
        if state.due_for_refresh():
            out = self._run("full", movie=state.movie_unit, movie_valid=state.movie_valid, **slot_inputs)
            self._keep_movie(state, out)
        else:
            cache = state.cache
            out = self._run("step", keys=cache.keys, values=cache.values, movie_valid=state.movie_valid, **slot_inputs)
        pred = out["pred"]
        state.steps_since_prepare += 1
        return pred.to(self.device)


_NUMPY = {torch.float32: np.float32, torch.bool: np.bool_}
