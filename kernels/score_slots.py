"""Score trailer slots against the movie: the best still-unused shot per slot and its probability.

For slot j with predicted feature v̂_j and movie shots m_i (i real):

    s_ji      = cos(v̂_j, m_i) / tau (+ b_i, the model's per-shot prior, when it has one)
    p_ji      = exp(s_ji) / sum_{i real} exp(s_ji)          (softmax over every real shot, used or not)
    best_j    = argmax_{i real, not used} s_ji              (ties: the lowest index)
    prob_j    = p_{j, best_j}

Only a row reduction of the J×I score matrix is needed (a log-sum-exp and a masked argmax), so a
fused version streams over I with an online softmax and never writes the matrix; this reference
materialises it and is the contract such a kernel must match.
"""

from __future__ import annotations

import torch

from ..model import unit_score_logits


def score_slots_ref(
    pred: torch.Tensor,  # (B, J, D) predicted slot features, any scale
    movie_unit: torch.Tensor,  # (B, I, D) L2-normalised movie shot features
    movie_valid: torch.Tensor,  # (B, I) bool
    used: torch.Tensor,  # (B, I) bool: shots already locked into some slot
    temperature: float,
    shot_prior: torch.Tensor | None = None,  # (B, I) b_i added to every slot's logits, or None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(best (B, J) int64, prob (B, J) float32). Needs at least one real unused shot per movie."""
    s = unit_score_logits(pred, movie_unit, movie_valid, temperature, shot_prior)  # (B, J, I)
    lse = torch.logsumexp(s, dim=-1)  # (B, J)
    best_score, best = s.masked_fill(used[:, None, :], float("-inf")).max(dim=-1)
    return best, torch.exp(best_score - lse)


def score_slots(pred, movie_unit, movie_valid, used, temperature, shot_prior=None):
    """Dispatch point for the fused kernel; today every device runs the reference."""
    return score_slots_ref(pred, movie_unit, movie_valid, used, temperature, shot_prior)


def round_scorer(pred, movie_unit, movie_valid, temperature, shot_prior=None):
    """`used -> (best, prob)` for one round's predictions: `score_slots` with `used` left open.

    A round scores its slots once, then again each time a conflict takes a shot away (topk locks the
    most confident claims and re-scores the losers). Only `used` changes between those calls, so the
    J×I logits and their log-sum-exp are computed once and each re-score is a masked argmax: with a
    shot prior every slot favours the same few shots, and conflicts come by the dozen per round.
    """
    logits = unit_score_logits(pred, movie_unit, movie_valid, temperature, shot_prior)  # (B, J, I)
    lse = torch.logsumexp(logits, dim=-1)  # (B, J)

    def score(used: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        best_score, best = logits.masked_fill(used[:, None, :], float("-inf")).max(dim=-1)
        return best, torch.exp(best_score - lse)

    return score
