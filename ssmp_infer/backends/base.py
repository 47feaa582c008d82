"""What the decoder asks of a backend: `prepare` once per batch of movies, `step` once per round.

    state = backend.prepare(movie, movie_valid, refresh_every)   # (B, I, D), (B, I) -> MovieState
    pred = backend.step(state, slots, slot_masked, slot_valid)    # -> (B, J, D) predicted slot features

A backend must guarantee:
- `prepare` keeps in the state the L2-normalised movie (`movie_unit`: decoding scores against it and
  feeds its rows to locked slots) and whatever it reuses across rounds (`cache`: for the torch backend
  the movie tokens' per-layer keys and values). For a model with a shot prior, `shot_prior` (B, I)
  holds b_i after `prepare` (prefix attention) or after each `step` that recomputed the movie. For a
  model with position keys, `prepare` sets `shot_keys` (`new_movie_state(..., keys_of)`, whatever the
  attention): the rows the decoder scores against and feeds to locked slots in place of `movie_unit`.
- `step` returns what one full encoder pass over [movie ; slots] would return for the slot rows, up to
  float rounding, whenever the model reads prefix attention (the movie's states do not depend on the
  slots, so a cache is exact) or `refresh_every` is 1 (every round recomputes). For a full-attention
  model with `refresh_every` k > 1 the movie's states are recomputed every k-th step and reused,
  stale, in between (an approximation the caller chose); 0 means computed once, never refreshed.
- Padded movie shots (`movie_valid` False) and padded slots never change a real row's output.
- Optionally, `output_basis` (D, r) with orthonormal columns spanning every prediction `step` can
  return (r < D), and `prepare` keeps the scored rows in those coordinates (`movie_coords`, (B, I, r)): the
  decoder then scores in r dimensions instead of D. A backend without them is scored in D.
- `MovieState.select(rows)` keeps only movies `rows`: a batch drops finished movies without a new
  `prepare`, so a cache must be batch-first (`cache.select(rows)`).
- No global state: two states (two batches) may be stepped in any interleaving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F


@dataclass
class MovieState:
    movie_unit: torch.Tensor  # (B, I, D) float32 unit rows
    movie_valid: torch.Tensor  # (B, I) bool
    refresh_every: int  # 1: recompute every step; k > 1: refresh the cache every k steps; 0: never
    cache: Any = None  # the backend's reusable movie states (batch-first, with .select(rows)), or None
    steps_since_prepare: int = 0  # when to refresh the cache
    shot_prior: torch.Tensor | None = None  # (B, I) per-shot logit b_i added to every slot's scores, if any
    step_graph: Any = None  # a backend's captured step for this state (cuda_graphs.py); never carried by select
    output_basis: torch.Tensor | None = None  # (D, r) orthonormal columns spanning every `step` output, or None
    movie_coords: torch.Tensor | None = None  # (B, I, r) keys @ output_basis, or None
    shot_keys: torch.Tensor | None = None  # (B, I, D) unit rows scored against, if not movie_unit (position keys)
    # a backend's embeddings of the shots locked slots read, filled as they are first read and shared by
    # every copy of a kept state (the torch backend's CPU rounds: slot_rounds.ShotEmbeddings), or None
    shot_embeddings: Any = None

    @property
    def scoring_keys(self) -> torch.Tensor:
        """What slots are scored against and locked slots read: the model's position-aware keys, or
        the unit movie itself for a model without them (the paper's)."""
        return self.movie_unit if self.shot_keys is None else self.shot_keys

    def select(self, rows: torch.Tensor) -> "MovieState":
        """The state of movies `rows` only (a LongTensor of batch indices)."""
        return MovieState(
            self.movie_unit.index_select(0, rows),
            self.movie_valid.index_select(0, rows),
            self.refresh_every,
            None if self.cache is None else self.cache.select(rows),
            self.steps_since_prepare,
            None if self.shot_prior is None else self.shot_prior.index_select(0, rows),
            output_basis=self.output_basis,
            movie_coords=None if self.movie_coords is None else self.movie_coords.index_select(0, rows),
            shot_keys=None if self.shot_keys is None else self.shot_keys.index_select(0, rows),
            shot_embeddings=None if self.shot_embeddings is None else self.shot_embeddings.select(rows),
        )

    def due_for_refresh(self) -> bool:
        """Whether this step must recompute the movie's states (the caller then counts the step)."""
        if self.refresh_every == 1 or self.cache is None:
            return True
        return self.refresh_every > 1 and self.steps_since_prepare % self.refresh_every == 0


def new_movie_state(movie: torch.Tensor, movie_valid: torch.Tensor, refresh_every: int,
                    output_basis: torch.Tensor | None = None, keys_of=None) -> MovieState:
    """What every backend's `prepare` starts from: the unit movie, the model's position keys when it has
    them (`keys_of(unit) -> (B, I, D)`, None without), and the rows scored against in the backend's
    `output_basis` when it has one (computed once, from the keys when there are keys)."""
    unit = F.normalize(movie.float(), dim=-1)
    keys = None if keys_of is None else keys_of(unit)
    scored = unit if keys is None else keys
    coords = None if output_basis is None else scored @ output_basis
    return MovieState(unit, movie_valid, refresh_every, output_basis=output_basis, movie_coords=coords, shot_keys=keys)


@dataclass
class StackedMovieCache:
    """A movie cache as exported graphs and engines take it: per-layer keys and values stacked layer
    first, each (L, B, H, I, hd), so the batch is dim 1."""

    keys: torch.Tensor
    values: torch.Tensor

    def select(self, rows: torch.Tensor) -> "StackedMovieCache":
        return StackedMovieCache(self.keys.index_select(1, rows), self.values.index_select(1, rows))


class Backend(Protocol):
    name: str
    device: torch.device

    def prepare(self, movie: torch.Tensor, movie_valid: torch.Tensor, refresh_every: int | None = None) -> MovieState:
        """Once per batch. `refresh_every` None: the model's exact default (cache under prefix
        attention, recompute every round under full attention)."""
        ...

    def step(
        self,
        state: MovieState,
        slots: torch.Tensor,  # (B, J, D) features of the shots locked into the slots
        slot_masked: torch.Tensor,  # (B, J) bool: the slot holds MP instead
        slot_valid: torch.Tensor,  # (B, J) bool
    ) -> torch.Tensor:  # (B, J, D) predicted slot features
        ...


def default_refresh_every(movie_attention: str) -> int:
    """Exact by default: prefix models never need a refresh (0), full models recompute every round (1)."""
    return 0 if movie_attention == "prefix" else 1
