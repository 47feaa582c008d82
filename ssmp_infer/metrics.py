"""Trailer quality against a ground-truth trailer, as this line of work reports it.

- precision / recall / F1 of shot selection: predicted and ground-truth shots are matched one to one
  (a maximum matching; a pair may match when their movie shot indices differ by at most `tolerance`),
  so one true shot is never credited to several predictions. precision = matched / predicted,
  recall = matched / true. tolerance 0 is exact matching.
- ld: Levenshtein distance between the predicted and the true sequences of shot indices.
- aa: agreement accuracy of order: over pairs of matched shots (the same matching), the fraction whose
  order in the prediction equals their order in the ground truth. 0.5 is chance; undefined (None)
  when fewer than two shots were matched.

A set of movies is summarised by the mean over movies (AA: over the `aa_movies` movies where it is
defined, so a method with few hits, like random, gets a noisy AA).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TrailerScore:
    precision: float
    recall: float
    f1: float
    ld: int
    aa: float | None


def levenshtein(a: list[int], b: list[int]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def match_shots(pred: list[int], truth: list[int], tolerance: int = 0) -> list[tuple[int, int]]:
    """A maximum one-to-one matching of predicted to true shots with |p - t| <= tolerance, as
    (index into pred, index into truth) pairs.

    Every true shot t accepts the window [t - R, t + R], and all windows have the same width, so sorting
    them by start sorts them by end too. The sweep takes the true shots in order and gives each the
    smallest free predicted shot in its window. That is maximum: take a maximum matching that agrees
    with the sweep on the earlier true shots. If the sweep gives t the shot p and the matching gives t
    p' (or nothing), then p' >= p, and p is either free in it or held by a later t2; moving p to t (and
    p' to t2, which still fits: t2 - R <= p <= p' <= t + R <= t2 + R) keeps its size. If the sweep finds
    no free shot in t's window, the earlier true shots hold them all in the matching too. Ties: the
    earlier index first.
    """
    p_order = sorted(range(len(pred)), key=lambda a: (pred[a], a))
    t_order = sorted(range(len(truth)), key=lambda b: (truth[b], b))
    pairs, i = [], 0
    for b in t_order:
        # predicted shots below this window are below every later window too: never needed again
        while i < len(p_order) and pred[p_order[i]] < truth[b] - tolerance:
            i += 1
        if i < len(p_order) and pred[p_order[i]] <= truth[b] + tolerance:
            pairs.append((p_order[i], b))
            i += 1
    return pairs


def _agreement(pairs: list[tuple[int, int]]) -> float | None:
    """Fraction of pairs of matches whose order in the prediction is their order in the ground truth."""
    slots = [b for _, b in sorted(pairs)]  # ground-truth slot of each matched shot, in predicted order
    total = len(slots) * (len(slots) - 1) // 2
    if total == 0:
        return None
    return sum(slots[a] < slots[b] for a in range(len(slots)) for b in range(a + 1, len(slots))) / total


def order_agreement(pred: list[int], truth: list[int], tolerance: int = 0) -> float | None:
    return _agreement(match_shots(pred, truth, tolerance))


def score_trailer(pred: list[int], truth: list[int], tolerance: int = 0) -> TrailerScore:
    if not pred or not truth:
        raise ValueError("score_trailer needs a non-empty prediction and ground truth")
    pairs = match_shots(pred, truth, tolerance)
    precision, recall = len(pairs) / len(pred), len(pairs) / len(truth)
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return TrailerScore(precision, recall, f1, levenshtein(list(pred), list(truth)), _agreement(pairs))


def summarise(scores: list[TrailerScore]) -> dict:
    aas = [s.aa for s in scores if s.aa is not None]
    return {
        "precision": float(np.mean([s.precision for s in scores])),
        "recall": float(np.mean([s.recall for s in scores])),
        "f1": float(np.mean([s.f1 for s in scores])),
        "ld": float(np.mean([s.ld for s in scores])),
        "aa": float(np.mean(aas)) if aas else None,
        "aa_movies": len(aas),  # how many movies the AA mean is over (those with two or more hits)
        "movies": len(scores),
    }
