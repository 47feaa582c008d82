"""The decoding weight on the shot prior (`ModelConfig.prior_weight`), chosen on held-out movies.

Decoding scores a slot's shots by cos(v̂_j, k_i)/tau + w·b_i. Training learns the shot prior b_i (the
model's own read of which shots belong, with a set-level term of its own) at w = 1, inside scores that
also teach which slot a shot goes to. Measured on the five synthetic worlds of docs/training.md, the
prior alone (the top-J shots by b_i) chose a trailer's shots better than the decoding that weighed it
at 1 on four of them (F1 +0.02 to +0.045), so the decoding under-uses what the model learnt. Which
weight is right depends on the data and on the run, so the trainer decodes its held-out movies at a
few weights once it has chosen its weights, and keeps the weight whose trailers score best there (by
the same key as the weights themselves); 1, the scores as trained, wins a tie.
"""

from __future__ import annotations

from typing import Callable

PRIOR_WEIGHTS = (1.0, 1.5, 2.0, 3.0, 4.0)
# The weights after the first cost this many held-out decodes more than a validation point's one each.
EXTRA_DECODES = len(PRIOR_WEIGHTS) - 1


def choose_prior_weight(config, score: Callable[[], dict | None], known: dict | None = None,
                        log: Callable[[str], None] = print) -> float:
    """Set `config.prior_weight` to the best of PRIOR_WEIGHTS by `score()["key"]` and return it.

    `score()`: the held-out scores with the model's config as it is now, or None when the run's time
    is out (the weights tried by then decide). `known`: the scores at weight 1, when the caller has them.
    """
    results = {1.0: known} if known is not None else {}
    for weight in PRIOR_WEIGHTS:
        if weight in results:
            continue
        config.prior_weight = weight
        scores = score()
        if scores is None:
            log(f"prior weight: stopped at {weight:g}, the budget ran out")
            break
        results[weight] = scores
    best = max(results, key=lambda w: (results[w]["key"], -w)) if results else 1.0
    config.prior_weight = best
    tried = ", ".join(f"{w:g}: F1 {s['f1']:.3f} key {s['key']:.3f}" for w, s in sorted(results.items()))
    log(f"prior weight {best:g} for decoding, by the held-out trailers ({tried})")
    return best

