"""The engine: a loaded model behind a backend, turning movies' shot features into trailers.

    from ssmp_infer import Engine, DecodeConfig
    engine = Engine.load()                        # the bundled default model
    trailer = engine.generate(features)           # (I, D) numpy array -> Trailer
    trailer.shots                                 # movie shot indices in trailer order
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .backends import BACKENDS, Backend, TorchBackend
from .backends.torch_backend import PRECISIONS
from .checkpoint import bundled_name, load_checkpoint
from .config import DEFAULT_STATE_CACHE_MB, DecodeConfig, ModelConfig
from .controls import EditorControls, check_candidates
from .data import check_trailer_length, default_trailer_length, pad_batch
from .inputs import check_feature_layout, checked
from .decode import generate
from .errors import InputError
from .export.onnx_export import weights_sha256
from .scheduler import MAX_TOKENS, plan_buckets
from .state_cache import MovieKey, StateCache, handout


@dataclass
class Trailer:
    shots: list[int]  # movie shot indices in trailer order, distinct
    confidence: list[float]  # per slot: probability of its shot in the round it locked
    num_movie_shots: int
    length: int
    steps: int  # encoder passes (rounds) used
    mode: str
    backend: str
    device: str
    model: str
    elapsed_ms: float  # wall time of the batch this trailer was generated in
    seed: int = 0  # paper mode's lock draws; topk and greedy do not read it
    pinned: list[int] = field(default_factory=list)  # slots an editor pinned (their confidence is 1)

    @property
    def mean_confidence(self) -> float:
        return sum(self.confidence) / len(self.confidence)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(device: str) -> torch.device:
    """auto (CUDA when there is one), cpu, or cuda[:N]; anything else is one clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise InputError(f"unknown device {device!r}; expected auto, cpu or cuda[:N]")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} was asked for but this PyTorch has no CUDA device")
        index = torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            raise InputError(f"device {device!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(device)


def model_source(model_dir) -> str:
    """How a trailer names its model (`Trailer.model`): "bundled:default", or the directory as given."""
    return bundled_name(model_dir) or str(model_dir)


class Engine:
    def __init__(self, model_config: ModelConfig, backend: Backend, source: str = "custom",
                 state_cache_mb: float = DEFAULT_STATE_CACHE_MB, weights: str | None = None):
        """`state_cache_mb`: how much of prepared movies' states to keep across calls (0: none), so that
        another trailer of a movie already seen runs only its rounds (`ssmp_infer.state_cache`).
        `weights`: a hash of the model's weights (`Engine.load` sets it), part of every kept state's key."""
        if not 0 <= state_cache_mb < float("inf"):
            raise InputError(f"--state-cache-mb must be 0 or more, got {state_cache_mb}")
        self.model_config = model_config
        self.backend = backend
        self.source = source
        identity = (weights or f"the model of backend {id(backend)}", backend.name,
                    getattr(backend, "precision", "fp32"), str(backend.device))
        self.states = StateCache(int(state_cache_mb * 2**20), identity)

    @classmethod
    def load(
        cls,
        model_dir: str | Path | None = None,
        device: str = "auto",
        backend: str = "torch",
        precision: str = "fp32",
        onnx_dir: str | Path | None = None,
        engine_dir: str | Path | None = None,
        cuda_graphs: bool = False,
        state_cache_mb: float = DEFAULT_STATE_CACHE_MB,
    ) -> "Engine":
        """Load a checkpoint directory (default: the bundled model) onto a device behind a backend.

        backend "torch": eager PyTorch in `precision` fp32, bf16 or int8; `cuda_graphs` replays each
        round's step as a captured CUDA graph (CUDA only).
        backend "onnxruntime": the model's ONNX graphs, fp32 or int8, from `onnx_dir` (checked to be
        this model's export in that precision), or, without one, from an export cached by weights hash
        and made on first use.
        backend "tensorrt": fp16 engines from `engine_dir`, or built into a cache on first use (CUDA).
        """
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
        if precision not in PRECISIONS:
            raise InputError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
        if onnx_dir is not None and backend != "onnxruntime":
            raise InputError(f"an ONNX directory is read by the onnxruntime backend only, not by {backend!r}")
        if engine_dir is not None and backend != "tensorrt":
            raise InputError(f"a TensorRT engine directory is read by the tensorrt backend only, not by {backend!r}")
        if cuda_graphs and backend != "torch":
            raise InputError(f"CUDA graphs are a torch-backend option; the {backend} backend runs its own graphs")
        dev = resolve_device(device)
        if cuda_graphs and dev.type != "cuda":
            raise InputError(f"CUDA graphs need a CUDA device, and this engine runs on {dev}")
        model, _ = load_checkpoint(model_dir, dev)
        kept = dict(source=model_source(model_dir), state_cache_mb=state_cache_mb, weights=weights_sha256(model))
        if backend == "onnxruntime":
            from .backends.onnx_backend import OnnxRuntimeBackend

            return cls(model.cfg, OnnxRuntimeBackend.for_model(model, dev, onnx_dir, precision), **kept)
        if backend == "tensorrt":
            from .backends.tensorrt_backend import TensorRTBackend

            if precision != "fp32":  # fp32 is the default, i.e. not asked for: the engines are fp16
                raise InputError(f"the tensorrt backend runs fp16 engines; --precision {precision} does not apply")
            return cls(model.cfg, TensorRTBackend.for_model(model, dev, engine_dir), **kept)
        return cls(model.cfg, TorchBackend(model, dev, precision=precision, cuda_graphs=cuda_graphs), **kept)

    @property
    def feature_dim(self) -> int:
        return self.model_config.feature_dim

    def generate(
        self,
        features: np.ndarray,
        length: int | None = None,
        decode: DecodeConfig | None = None,
        controls: EditorControls | None = None,
    ) -> Trailer:
        """One movie's (I, D) features -> its trailer. `length` defaults to ~3.7% of the shots.

        `controls`: slots pinned on shots and shots banned (see `ssmp_infer.controls`)."""
        return self.generate_batch([features], [length], decode, [controls])[0]

    def candidates(
        self,
        features: np.ndarray,
        count: int,
        length: int | None = None,
        decode: DecodeConfig | None = None,
        controls: EditorControls | None = None,
    ) -> list[Trailer]:
        """`count` trailers of one movie from seeds S, S+1, ... (S = decode.seed), most confident first.

        One batch, one movie pass: each candidate equals the single run with its seed."""
        decode = decode or DecodeConfig()
        check_candidates(count, decode.mode, decode.seed)
        movie, key, kept = self._one_movie(features, decode.refresh_every, "movie")
        n = default_trailer_length(movie.shape[0]) if length is None else check_trailer_length(int(length), movie.shape[0])
        trailers = self._generate_bucket([movie], [n], decode, [controls], copies=count, key=key, kept=kept)
        return sorted(trailers, key=lambda t: -t.mean_confidence)  # stable: equal means keep seed order

    def keep_movie(self, features: np.ndarray, refresh_every: int | None = None) -> bool:
        """Prepare one movie's states now and keep them (a server's upload, a review page's first load),
        so that its first trailer already runs only its rounds. False when the cache is off or the
        states are larger than all of it; the trailers are the same either way."""
        movie, key, kept = self._one_movie(features, refresh_every, "movie")
        if key is None:
            return False
        if kept is not None:
            return True
        self._prepare_and_keep(key, *pad_batch([movie]), refresh_every)
        return key in self.states

    def _one_movie(self, features, refresh_every: int | None, source: str):
        """(movie, key, kept states or None): the movie as given when its states are kept (it passed the
        check when they were made), else checked; the key is None when the cache is off."""
        key, kept = self._kept_lookup(features, refresh_every)
        return (features if kept is not None else checked(features, source, self.feature_dim)), key, kept

    def _prepare_and_keep(self, key: MovieKey, movie: torch.Tensor, movie_valid: torch.Tensor, refresh_every: int | None):
        """One movie's states, prepared now and kept under `key` (when they fit the cache)."""
        device = self.backend.device
        prepared = self.backend.prepare(movie.to(device), movie_valid.to(device), refresh_every)
        self.states.put(key, prepared)
        return prepared

    def _kept_lookup(self, features, refresh_every: int | None) -> tuple[MovieKey | None, object | None]:
        """(key, a copy of the kept states or None) of one movie as the caller passed it; (None, None) when
        the cache is off or the array's shape or dtype is wrong (the full check then says why).

        States are found only for the same dtype, shape and bytes (`StateCache.get`), and are kept only of
        movies that passed the full check, so a movie found here passed it before: it is not scanned again
        (at 1909 shots the scan is ~4 ms of a warm topk trailer's ~45 on this project's CPU)."""
        if not self.states.limit_bytes or not isinstance(features, np.ndarray):
            return None, None
        try:
            check_feature_layout(features.shape, features.dtype, "movie", self.feature_dim)
        except InputError:
            return None, None
        key = self.states.key(features, refresh_every)
        return key, self.states.get(key)

    def generate_batch(
        self,
        movies: list[np.ndarray],
        lengths: list[int | None] | None = None,
        decode: DecodeConfig | None = None,
        controls: list[EditorControls | None] | None = None,
    ) -> list[Trailer]:
        """Several movies, in length buckets of padded batches; each gets the trailer it would get alone."""
        decode = decode or DecodeConfig()
        if not movies:
            raise InputError("no movies to generate trailers for")
        lengths = lengths if lengths is not None else [None] * len(movies)
        if len(lengths) != len(movies):
            raise InputError(f"got {len(lengths)} lengths for {len(movies)} movies")
        controls = controls if controls is not None else [None] * len(movies)
        if len(controls) != len(movies):
            raise InputError(f"got {len(controls)} sets of editor controls for {len(movies)} movies")
        if len(movies) == 1:
            movie, key, kept = self._one_movie(movies[0], decode.refresh_every, "movie 0")
            movies = [movie]
        else:
            key, kept = None, None
            movies = [checked(m, f"movie {k}", self.feature_dim) for k, m in enumerate(movies)]
        lengths = [
            default_trailer_length(m.shape[0]) if n is None else check_trailer_length(int(n), m.shape[0])
            for m, n in zip(movies, lengths)
        ]
        if len(movies) == 1:  # one movie: its states may be kept, or be kept now
            return self._generate_bucket(movies, lengths, decode, controls, key=key, kept=kept)
        device = self.backend.device
        trailers: list[Trailer | None] = [None] * len(movies)
        max_tokens = MAX_TOKENS.get(device.type, MAX_TOKENS["cuda"])
        for bucket in plan_buckets([m.shape[0] for m in movies], max_tokens):
            chosen = [movies[k] for k in bucket], [lengths[k] for k in bucket], decode, [controls[k] for k in bucket]
            for k, trailer in zip(bucket, self._generate_bucket(*chosen)):
                trailers[k] = trailer
        return trailers

    def _generate_bucket(
        self,
        movies: list[np.ndarray],
        lengths: list[int],
        decode: DecodeConfig,
        controls: list[EditorControls | None] | None = None,
        copies: int = 1,
        key: MovieKey | None = None,
        kept=None,
    ) -> list[Trailer]:
        """One padded batch; `copies` > 1 decodes each movie that many times (seeds decode.seed + c).

        One movie may come with its `key` in the state cache and the `kept` states found there (then
        the movie is not read again: `_kept_lookup`), or with a key and no states: they are made now
        and kept."""
        device = self.backend.device
        if kept is None:
            movie, movie_valid = pad_batch(movies)
        else:
            movie, movie_valid = None, torch.ones(1, movies[0].shape[0], dtype=torch.bool)
        controls = [c or EditorControls() for c in (controls or [None] * len(movies))]
        edited = any(controls)
        if edited:
            masks = [c.tensors(m.shape[0], n, max(lengths), movie_valid.shape[1]) for c, m, n in zip(controls, movies, lengths)]
            pins, banned = torch.stack([p for p, _ in masks]), torch.stack([b for _, b in masks])
        seeds = [decode.seed + c for _ in movies for c in range(copies)]
        start = time.perf_counter()
        prepared = kept
        if prepared is None and key is not None:
            prepared = self._prepare_and_keep(key, movie, movie_valid, decode.refresh_every)
        result = generate(
            self.backend,
            None if movie is None else movie.to(device),
            movie_valid.to(device),
            torch.tensor(lengths),
            decode,
            self.model_config.temperature,
            pins=pins if edited else None,
            banned=banned if edited else None,
            copies=copies,
            seeds=torch.tensor(seeds, dtype=torch.int64) if copies > 1 else None,
            prepared=None if prepared is None else handout(prepared),
            prior_weight=self.model_config.prior_weight,
        )
        shots, confidence, rounds = result.shots.cpu(), result.confidence.cpu(), result.rounds.cpu()
        elapsed_ms = (time.perf_counter() - start) * 1e3
        return [
            Trailer(
                shots=shots[row, :n].tolist(),
                confidence=confidence[row, :n].tolist(),
                num_movie_shots=m.shape[0],
                length=n,
                steps=int(rounds[row]),
                mode=decode.mode,
                backend=self.backend.name,
                device=str(device),
                model=self.source,
                elapsed_ms=round(elapsed_ms, 3),
                seed=seeds[row],
                pinned=sorted(c.pins),
            )
            for row, (m, n, c) in enumerate((m, n, c) for m, n, c in zip(movies, lengths, controls) for _ in range(copies))
        ]
