"""Group movies of different lengths into padded batches that waste little.

A batch pads every movie to its longest, so mixing a 300-shot movie with a 3000-shot one spends ten
times the first one's work on padding. Movies are sorted by length and cut into buckets where the
padded shots stay under `max_padding` of the bucket's tokens and the bucket's tokens under
`max_tokens` (a memory bound: attention and the cached keys and values grow with it).
"""

from __future__ import annotations

# On a CPU the cores are busy with one movie already (measured: a batch of four buys nothing), so
# buckets stay small; an accelerator needs many movies in flight to be kept busy.
MAX_TOKENS = {"cpu": 8192, "cuda": 262144}
MAX_PADDING = 0.2


def plan_buckets(shots: list[int], max_tokens: int, max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Indices into `shots`, grouped: longest movies first; each bucket's padding <= max_padding of its tokens.

    A movie longer than `max_tokens` gets a bucket of its own.
    """
    order = sorted(range(len(shots)), key=lambda k: -shots[k])
    buckets: list[list[int]] = []
    for k in order:
        if buckets:
            bucket = buckets[-1]
            longest = shots[bucket[0]]  # sorted: the first movie is the longest
            padded = longest * (len(bucket) + 1)
            padding = padded - sum(shots[m] for m in bucket) - shots[k]
            if padded <= max_tokens and padding <= max_padding * padded:
                bucket.append(k)
                continue
        buckets.append([k])
    return buckets
