"""The decoding weight on the shot prior (`ModelConfig.prior_weight`), chosen on held-out movies.

Decoding scores a slot's shots by cos(v̂_j, k_i)/tau + w·b_i. Training learns the shot prior b_i (the
model's own read of which shots belong, with a set-level term of its own) at w = 1, inside scores that
also teach which slot a shot goes to. Measured on the five synthetic worlds of docs/training.md, the
prior alone (the top-J shots by b_i) chose a trailer's shots better than the decoding that weighed it
at 1 on four of them (F1 +0.02 to +0.045), so the decoding under-uses what the model learnt. Which
weight is right depends on the data and on the run, so the trainer picks it on its held-out movies by
the same key as the weights themselves; the smaller weight wins a tie.

The step and the weight are chosen together. Every validation point decodes its held-out movies at each
of VALIDATION_WEIGHTS (one movie pass, the rounds again per weight) and scores as its best; the kept
point's remaining PRIOR_WEIGHTS are decoded at the end. Choosing the step at weight 1 alone and the
weight afterwards, on the same held-out movies, favoured weight 1: the step is the one whose weight-1
trailers happened to score best on those few movies (the winner's curse). Measured on a world of 7-shot
trailers (18 held-out movies, 126 slots), three seeds: held-out F1 fell from weight 1 to 3 on two of
them (-0.025, -0.026) while test F1 rose on all three (+0.027 to +0.042); two kept weight 1. Chosen
together, test F1 over the same three seeds went from 0.294 ± 0.013 to 0.314 ± 0.024 (docs/training.md).
"""

from __future__ import annotations

from typing import Callable

PRIOR_WEIGHTS = (1.0, 1.5, 2.0, 3.0, 4.0)
# Scored at every validation point: the scores as trained and a weight that trusts the prior more.
VALIDATION_WEIGHTS = (1.0, 3.0)
# The kept point's other weights cost this many held-out decodes at the end.
EXTRA_DECODES = len(PRIOR_WEIGHTS) - len(VALIDATION_WEIGHTS)


def best_weight(results: dict) -> float:
    """The weight of the highest key in {weight: scores}; the smaller weight on a tie."""
    return max(results, key=lambda w: (results[w]["key"], -w))


def choose_prior_weight(config, score: Callable[[], dict | None], known: dict | None = None,
                        log: Callable[[str], None] = print) -> float:
    """Set `config.prior_weight` to the best of PRIOR_WEIGHTS by `score()["key"]` and return it.

    `score()`: the held-out scores with the model's config as it is now, or None when the run's time
    is out (the weights tried by then decide). `known`: {weight: scores} the caller has already.
    """
    results = dict(known or {})
    for weight in PRIOR_WEIGHTS:
        if weight in results:
            continue
        config.prior_weight = weight
        scores = score()
        if scores is None:
            log(f"prior weight: stopped at {weight:g}, the budget ran out")
            break
        results[weight] = scores
    best = best_weight(results) if results else 1.0
    config.prior_weight = best
    tried = ", ".join(f"{w:g}: F1 {s['f1']:.3f} key {s['key']:.3f}" for w, s in sorted(results.items()))
    log(f"prior weight {best:g} for decoding, by the held-out trailers ({tried})")
    return best

