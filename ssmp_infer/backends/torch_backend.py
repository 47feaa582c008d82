from __future__ import annotations

import torch

from ..config import PRECISIONS
from ..model import SSMPEncoder, output_basis
from .base import MovieState, default_refresh_every, new_movie_state
from .cuda_graphs import capture_step, inside_replayed_round
from .slot_rounds import ShotEmbeddings, SlotRounds, slot_room_for


class TorchBackend:
    """Eager PyTorch: the reference every other backend is compared with.

    `precision` "bf16" runs the encoder under autocast (matmuls and attention in bfloat16, the
    LayerNorms and the output in float32); "int8" (CPU only) quantises the weights of every linear
    layer to int8 and their inputs on the fly (dynamic quantisation; attention stays float32).
    Scoring and locking always stay in float32.

    `cuda_graphs` (CUDA only): each state's cached step is captured once as a CUDA graph and replayed
    every later round (cuda_graphs.py); the same arithmetic, without a Python launch per kernel.
    """

    name = "torch"

    def __init__(
        self, model: SSMPEncoder, device: torch.device | str = "cpu", precision: str = "fp32", cuda_graphs: bool = False
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = torch.device(device)
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {self.device}")
        self.cuda_graphs = cuda_graphs
        self.model = model.to(self.device).eval()
        self.precision = precision
        if precision == "int8":
            if self.device.type != "cpu":
                raise ValueError("int8 dynamic quantisation runs on the CPU only")
            self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
        # fp32 predictions lie in the output layer's span (model.output_basis): rounds score in d + 1
        # dimensions. bf16 rounds each output to 8 bits (off the span) and int8 changes the weights, so
        # they are scored in D.
        self.output_basis = output_basis(self.model) if precision == "fp32" else None
        # rounds on a kept movie, laid out for a few dozen slot rows (slot_rounds.py); measured on the CPU
        # only (an accelerator keeps `step`, which its CUDA graphs capture)
        self.slot_rounds = SlotRounds(self.model, self.output_basis) if (
            self.output_basis is not None and self.device.type == "cpu") else None

    def _autocast(self):
        # autocast's cache of cast weights must be off while a graph is captured (its casts would be
        # recorded once and their outputs freed after the capture)
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16", cache_enabled=not self.cuda_graphs
        )

    @torch.inference_mode()
    def prepare(self, movie, movie_valid, refresh_every=None) -> MovieState:
        k = default_refresh_every(self.model.cfg.movie_attention) if refresh_every is None else refresh_every
        keys_of = (lambda unit: self.model.shot_keys(unit, movie_valid).float()) if self.model.cfg.position_keys else None
        state = new_movie_state(movie, movie_valid, k, self.output_basis, keys_of)
        if self.model.cfg.movie_attention == "prefix" and k != 1:
            state.refresh_every = 0  # the cache is exact: a refresh would recompute the same states
            with self._autocast():
                state.cache = self.model.prepare(state.movie_unit, movie_valid, movie_is_unit=True)
            state.shot_prior = state.cache.shot_prior
            if self.slot_rounds is not None:  # kept (and counted) with the states; a kept state's copies share them
                state.cache = state.cache.with_slot_room(slot_room_for(movie_valid.shape[1]))
                state.shot_embeddings = ShotEmbeddings.empty(*movie_valid.shape, self.model.cfg.d_model)
        return state

    @torch.inference_mode()
    def step(self, state: MovieState, slots, slot_masked, slot_valid) -> torch.Tensor:
        with self._autocast():
            if state.due_for_refresh():
                pred, cache = self.model.forward_with_states(
                    state.movie_unit, state.movie_valid, slots, slot_masked, slot_valid, movie_is_unit=True)
                state.cache = cache if state.refresh_every != 1 else None
                state.shot_prior = cache.shot_prior
            else:
                if state.cache.slot_room != slots.shape[1]:  # once per state: the slots' rows get a place
                    state.cache = state.cache.with_slot_room(slots.shape[1])
                # within a replayed round (decode's ReplayedRound) the step is part of the round's graph
                if self.cuda_graphs and not inside_replayed_round():
                    pred = self._replay_step(state, slots, slot_masked, slot_valid)
                else:
                    pred = self.model.step(state.cache, slots, slot_masked, slot_valid)
        state.steps_since_prepare += 1
        return pred.float()

    @torch.inference_mode()
    def step_coords(self, state: MovieState, shots, slot_masked, slot_valid) -> tuple | None:
        """`step`'s predictions of the masked slots in `state.output_basis` coordinates, packed as the
        decoder scores them ((B, W, r), and the slot of each row or None: `SlotRounds.__call__`), for a
        movie whose states are kept and exact (`slot_rounds.py`), from the (B, J) shots the slots hold
        (read where a slot is not masked); None where that path does not apply (call `step` with the
        shots' features)."""
        if (self.slot_rounds is None or state.refresh_every != 0 or state.cache is None or state.movie_coords is None
                or state.shot_embeddings is None):
            return None
        if state.cache.slot_room < shots.shape[1]:  # more slots than the prepared room: buffers of this decode's own
            state.cache = state.cache.with_slot_room(shots.shape[1])
        state.steps_since_prepare += 1
        return self.slot_rounds(state.cache, state.shot_embeddings, state.scoring_keys, shots, slot_masked, slot_valid)

    def _replay_step(self, state: MovieState, *inputs: torch.Tensor) -> torch.Tensor:
        """The cached step through this state's CUDA graph, captured on its first use."""
        graph = state.step_graph
        if graph is None or not graph.matches(state.cache, *inputs):
            graph = state.step_graph = capture_step(self.model.step, state.cache, self.device, *inputs)
        return graph.replay(*inputs)

    @torch.inference_mode()
    def encode(self, movie, movie_valid, slots, slot_masked, slot_valid):
        """One full pass, no reuse (a one-round `prepare` + `step` with refresh_every 1)."""
        return self.step(self.prepare(movie, movie_valid, refresh_every=1), slots, slot_masked, slot_valid)
