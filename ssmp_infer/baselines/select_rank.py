"""Selection then ranking: the two-stage family SSMP is compared with (the paper's MMSC line).

1. Selection. A shot scorer, a bidirectional Transformer over the movie's shots, gives every shot a
   logit of being in the trailer, trained with binary cross-entropy against "this shot is some slot's
   target g_j". A trailer of J shots takes the J highest.
2. Ranking. A separate Transformer reads the chosen shots alone, as an unordered set (each token: its
   feature and where it sits in the movie), and regresses each one's relative position j / (J − 1) in
   the trailer; trained on the ground-truth trailer's shots. The chosen shots are sorted by it.

The two networks share nothing and never see each other's output in training; they are trained on the
same steps (loss = selection BCE + ranking squared error, one optimiser) so that one `--max-minutes`
budget covers both, as it covers SSMP's one network.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import movie_windows, pad_batch, pad_targets
from ..model import NUM_POSITION_FEATURES, Block, position_features
from .common import BaselineConfig, MovieEncoder, init_weights


class SelectRank(nn.Module):
    METHOD = "select-rank"

    def __init__(self, cfg: BaselineConfig):
        super().__init__()
        self.cfg = cfg
        self.scorer = MovieEncoder(cfg)
        self.score_head = nn.Linear(cfg.d_model, 1)
        # The ranker sees tens of shots, not thousands: half the scorer's depth.
        self.rank_in = nn.Linear(cfg.feature_dim, cfg.d_model)
        self.rank_pos = nn.Linear(NUM_POSITION_FEATURES, cfg.d_model, bias=False)
        self.ranker = nn.ModuleList(Block(cfg.model_config()) for _ in range(max(1, cfg.n_layers // 2)))
        self.rank_ln = nn.LayerNorm(cfg.d_model)
        self.rank_head = nn.Linear(cfg.d_model, 1)
        self.apply(init_weights)

    def shot_logits(self, movie: torch.Tensor, movie_valid: torch.Tensor, window=None) -> torch.Tensor:
        """(B, I) logit of each shot being in the trailer; -inf on padding."""
        logits = self.score_head(self.scorer(movie, movie_valid, window)).squeeze(-1)
        return logits.masked_fill(~movie_valid, float("-inf"))

    def positions(self, movie, movie_valid, chosen: torch.Tensor, chosen_valid: torch.Tensor, window=None) -> torch.Tensor:
        """(B, J) predicted relative trailer position of each chosen movie shot (`chosen` (B, J) indices)."""
        feats = movie.gather(1, chosen[..., None].expand(-1, -1, movie.shape[-1]))  # (B, J, D)
        where = position_features(movie_valid, window)  # (B, I, P): index and fraction of the movie
        where = where.gather(1, chosen[..., None].expand(-1, -1, where.shape[-1]))  # (B, J, P)
        h = self.rank_in(F.normalize(feats.float(), dim=-1)) + self.rank_pos(where)
        mask = chosen_valid[:, None, None, :]
        for block in self.ranker:
            h, _ = block(h, mask)
        return self.rank_head(self.rank_ln(h)).squeeze(-1)

    def loss(self, examples) -> torch.Tensor:
        device = next(self.parameters()).device
        movie, movie_valid = pad_batch([e.movie for e in examples], device)
        targets = pad_targets([e.targets for e in examples], device)  # (B, J), -1 in padded slots
        window = movie_windows(examples, device)
        slot_valid = targets >= 0
        in_trailer = torch.zeros(movie_valid.shape, device=device)
        in_trailer[torch.nonzero(slot_valid, as_tuple=True)[0], targets[slot_valid]] = 1.0
        logits = self.shot_logits(movie, movie_valid, window)
        select = F.binary_cross_entropy_with_logits(logits[movie_valid], in_trailer[movie_valid])
        lengths = slot_valid.sum(dim=1, keepdim=True)
        relative = torch.arange(targets.shape[1], device=device) / (lengths - 1).clamp(min=1)  # (B, J): j / (J - 1)
        predicted = self.positions(movie, movie_valid, targets.clamp(min=0), slot_valid, window)
        rank = ((predicted - relative) ** 2)[slot_valid].mean()
        return select + rank

    @torch.no_grad()
    def generate(self, movie: torch.Tensor, movie_valid: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """(B, max J) movie shot indices in trailer order, -1 after each trailer's end."""
        logits = self.shot_logits(movie, movie_valid)
        J = max(lengths)
        chosen = torch.zeros(len(lengths), J, dtype=torch.long, device=movie.device)
        chosen_valid = torch.zeros(len(lengths), J, dtype=torch.bool, device=movie.device)
        for b, n in enumerate(lengths):
            # in movie order, so a tie in predicted position keeps the movie's order (the sort is stable)
            chosen[b, :n] = logits[b].topk(n).indices.sort().values
            chosen_valid[b, :n] = True
        predicted = self.positions(movie, movie_valid, chosen, chosen_valid).masked_fill(~chosen_valid, float("inf"))
        order = predicted.argsort(dim=1, stable=True)
        return chosen.gather(1, order).masked_fill(~chosen_valid, -1)
