"""Decoding-round kernels (installed as `ssmp_infer.kernels`).

Each kernel lives in its own file beside its plain-torch reference, which states the contract a
fused version must match and is the fallback every caller can use.
"""

from .score_slots import round_scorer, score_slots, score_slots_ref

__all__ = ["round_scorer", "score_slots", "score_slots_ref"]
