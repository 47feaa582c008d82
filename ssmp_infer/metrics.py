"""Trailer quality against a ground-truth trailer, as this line of work reports it.

- precision / recall / F1 of shot selection: a predicted shot counts when it lies within `tolerance`
  positions (movie shot indices) of some ground-truth shot; a ground-truth shot is recalled when some
  predicted shot lies within `tolerance` of it. tolerance 0 is exact matching.
- ld: Levenshtein distance between the predicted and the true sequences of shot indices.
- aa: agreement accuracy of order: over pairs of correctly chosen shots (each predicted hit matched to
  its nearest ground-truth shot), the fraction whose order in the prediction equals their order in
  the ground truth. 0.5 is chance; undefined (None) when fewer than two shots were chosen correctly.

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


def _nearest(truth: np.ndarray, shot: int) -> int:
    """Index into `truth` of the ground-truth shot nearest to `shot` (ties: the earlier slot)."""
    return int(np.argmin(np.abs(truth - shot)))


def order_agreement(pred: list[int], truth: list[int], tolerance: int = 0) -> float | None:
    truth_arr = np.asarray(truth)
    slots = []  # ground-truth slot of each correctly chosen predicted shot, in predicted order
    seen = set()
    for shot in pred:
        k = _nearest(truth_arr, shot)
        if abs(int(truth_arr[k]) - shot) <= tolerance and k not in seen:
            seen.add(k)
            slots.append(k)
    pairs = len(slots) * (len(slots) - 1) // 2
    if pairs == 0:
        return None
    agree = sum(slots[a] < slots[b] for a in range(len(slots)) for b in range(a + 1, len(slots)))
    return agree / pairs


def score_trailer(pred: list[int], truth: list[int], tolerance: int = 0) -> TrailerScore:
    if not pred or not truth:
        raise ValueError("score_trailer needs a non-empty prediction and ground truth")
    p, t = np.asarray(pred), np.asarray(truth)
    dist = np.abs(p[:, None] - t[None, :])  # (len(pred), len(truth))
    precision = float((dist.min(axis=1) <= tolerance).mean())
    recall = float((dist.min(axis=0) <= tolerance).mean())
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return TrailerScore(precision, recall, f1, levenshtein(list(pred), list(truth)), order_agreement(pred, truth, tolerance))


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
