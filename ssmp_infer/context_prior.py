"""The shot prior's context branch: how trailer-worthy a shot looks against its own movie.

`b_i` (ModelConfig.shot_prior) is read from the movie token's last state. Beside it, with
`ModelConfig.context_prior`, a small MLP reads each shot's unit feature together with three things
a single feature cannot say about itself:
- the shot minus its movie's mean (what sets it apart from the film's grading, cast and locations);
- its cosine with the shot before and the shot after (a cut, a repeat, a steady scene);
- where it sits in the movie (the same fixed position features the encoder's embedding reads);
- with `ModelConfig.local_context`, the shot minus the mean of the shots within LOCAL_SHOTS of it, and
  minus the shot before: what sets it apart within its own stretch of the film (a scene is a handful of
  shots), and how far the cut into it jumps;
- with `ModelConfig.context_novelty`, its novelty: one minus its highest cosine with the NOVELTY_SHOTS
  shots before it (a new place or face after a run of one scene; 0 for a shot that repeats one just
  seen);
- with `ModelConfig.context_profile` K, its similarity profile: its cosine with each shot 2 to K before
  and after it (0 where the movie has none). A scene's opening shot is unlike the shots before it and
  like the ones after it, and one shot's cosine with its neighbours mixes that with the shot's own look;
  the profile over a few shots each side is what a scene-change detector reads. An option, off in both
  presets: it moved test F1 within or near a seed's spread on every world measured (RESULTS, 2026-12-07).
A movie-wide mean cannot say what the local read says: two scenes apart, the same shot is ordinary in
one and stands out in the other. Measured (README, Training): on a world whose worthiness mixes
kind-gated factors, contrasts and position, test F1 0.316 → 0.397 (A) and 0.338 → 0.382 (CMTD-sized C);
unchanged within a seed's spread on the others.

Why a branch and not only the encoder: on data of another structure than `ssmp-infer synth`'s
(recurring locations and cast, a per-movie look), the encoder's prior picked the trailer's shots
worse than a 64-unit MLP on these features alone (top-J F1 0.21 against 0.30), and decoding keeps
most of what the prior picks. The branch's last layer starts at zero, so a new model's `b` is still
the encoder's (the paper's scoring, while that head is at zero too). It reads only the movie, so
under prefix attention it is computed once per movie, with the keys and values.
"""

from __future__ import annotations

import torch
import torch.nn as nn

NEIGHBOUR_FEATURES = 2  # cosine with the previous and with the next shot
LOCAL_SHOTS = 4  # the local mean runs over the shots at most this many before and after (9 in all)
LOCAL_VECTORS = 2  # with local_context: the shot minus the local mean, and minus the shot before
NOVELTY_SHOTS = 5  # with context_novelty: a shot's novelty is against this many shots before it


def context_features(movie_unit: torch.Tensor, movie_valid: torch.Tensor, positions: torch.Tensor,
                     local: bool = False, novelty: bool = False, profile: int = 0) -> torch.Tensor:
    """(B, I, D) unit features, (B, I) validity, (B, I, P) position features -> (B, I, 2D + 2 + P), or with
    `local` (B, I, 4D + 2 + P); `novelty` adds one feature after the two cosines, and `profile` K then
    2(K - 1) more (`similarity_profile`).

    Padding-invariant: the means run over real shots only, and the first and last real shots are their
    own missing neighbour (cosine 1, no change from the shot before), as if the movie ended there.
    """
    valid = movie_valid[..., None].to(movie_unit.dtype)
    unit = movie_unit * valid
    mean = unit.sum(dim=1, keepdim=True) / valid.sum(dim=1, keepdim=True).clamp(min=1)
    before = torch.cat([unit[:, :1], unit[:, :-1]], dim=1)
    after = torch.cat([unit[:, 1:], unit[:, -1:]], dim=1)
    index = torch.arange(unit.shape[1], device=unit.device)
    is_last = index[None, :] >= movie_valid.sum(dim=1, keepdim=True) - 1  # (B, I): the last real shot and padding
    cos_before = (unit * before).sum(dim=-1)
    cos_after = torch.where(is_last, torch.ones_like(cos_before), (unit * after).sum(dim=-1))
    parts = [unit, unit - mean]
    if local:
        parts += [unit - local_mean(unit, valid, index), (unit - before) * valid]
    scalars = [cos_before[..., None], cos_after[..., None]]
    if novelty:
        scalars.append(novelty_against_before(unit, index)[..., None])
    if profile:
        scalars.append(similarity_profile(unit, movie_valid, index, profile))
    return torch.cat(parts + scalars + [positions], dim=-1)


def novelty_against_before(unit: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, I): one minus each shot's highest cosine with the NOVELTY_SHOTS shots before it; 0 for the first.
    Only earlier shots count, and they are real wherever the shot is, so padding changes nothing."""
    nearest = torch.full_like(unit[..., 0], -1.0)
    for k in range(1, min(NOVELTY_SHOTS, unit.shape[1] - 1) + 1):
        cos = torch.where(index[None, :] >= k, cosine_with(unit, -k), torch.full_like(nearest, -1.0))
        nearest = torch.maximum(nearest, cos)
    return torch.where(index[None, :] == 0, torch.zeros_like(nearest), 1 - nearest)


def cosine_with(unit: torch.Tensor, offset: int) -> torch.Tensor:
    """(B, I): each shot's cosine with the shot `offset` places after it (before it, if negative). The
    rows past either end wrap round: callers mask them."""
    return (unit * unit.roll(-offset, dims=1)).sum(dim=-1)


def similarity_profile(unit: torch.Tensor, movie_valid: torch.Tensor, index: torch.Tensor, reach: int) -> torch.Tensor:
    """(B, I, 2(reach - 1)): each shot's cosine with the shots 2 to `reach` before it, then 2 to `reach` after
    it; 0 where that shot lies outside the real movie, so padding changes nothing. (Offset 1 is the branch's
    cosine before and after.)"""
    length = movie_valid.sum(dim=1, keepdim=True)  # (B, 1)
    columns = []
    for offset in [-k for k in range(2, reach + 1)] + list(range(2, reach + 1)):
        inside = (index[None, :] + offset >= 0) & (index[None, :] + offset < length)
        columns.append(torch.where(inside, cosine_with(unit, offset), torch.zeros_like(unit[..., 0])))
    return torch.stack(columns, dim=-1)


def local_mean(unit: torch.Tensor, valid: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, I, D): each shot's mean over the real shots within LOCAL_SHOTS of it (a running sum: O(I·D))."""
    zero = torch.zeros_like(unit[:, :1])
    sums = torch.cat([zero, unit.cumsum(dim=1)], dim=1)  # sums[:, k]: the first k shots
    counts = torch.cat([zero[..., :1], valid.cumsum(dim=1)], dim=1)
    lo = (index - LOCAL_SHOTS).clamp(min=0)
    hi = (index + LOCAL_SHOTS + 1).clamp(max=unit.shape[1])
    return (sums[:, hi] - sums[:, lo]) / (counts[:, hi] - counts[:, lo]).clamp(min=1)


class ContextPrior(nn.Module):
    """(B, I) logits added to the encoder's shot prior; zero for every shot at initialisation."""

    def __init__(self, feature_dim: int, position_dim: int, local: bool, hidden: int, novelty: bool = False,
                 dropout: float = 0.0, profile: int = 0):
        super().__init__()
        self.local, self.novelty, self.profile = local, novelty, profile
        self.mlp = nn.Sequential(
            nn.Linear(context_width(feature_dim, position_dim, local, novelty, profile), hidden),
            nn.GELU(),
            nn.Linear(hidden, 1),
        )
        self.drop = nn.Dropout(dropout)  # on the hidden units; outside `mlp`, so its weights keep their names

    def reset_output(self) -> None:
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, movie_unit: torch.Tensor, movie_valid: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        hidden = self.mlp[1](self.mlp[0](context_features(movie_unit, movie_valid, positions, self.local, self.novelty,
                                                         self.profile)))
        return self.mlp[2](self.drop(hidden)).squeeze(-1)


def context_width(feature_dim: int, position_dim: int, local: bool, novelty: bool, profile: int = 0) -> int:
    """The branch's input size: its vectors, its scalars, the position features."""
    vectors = 2 + (LOCAL_VECTORS if local else 0)
    profile_width = 2 * (profile - 1) if profile else 0
    return vectors * feature_dim + NEIGHBOUR_FEATURES + int(novelty) + profile_width + position_dim
