"""Decoding-round kernels (installed as `ssmp_infer.kernels`).

Each kernel lives in its own file beside its plain-torch reference, which states the contract a
fused version must match and is the fallback every caller can use.
"""

from __future__ import annotations

from ..config import KERNELS
from .score_slots import (
    HAS_TRITON,
    INTERPRETED,
    SlotCandidates,
    round_scorer,
    score_candidates,
    score_slots,
    score_slots_ref,
    score_slots_triton,
)
from .select_remask import MAX_SLOTS, select_remask_ref, select_remask_triton


def use_triton(choice: str, device, num_slots: int = 1) -> bool:
    """Resolve `DecodeConfig.kernels` for a device and trailer length: whether the round runs the kernels.

    "auto" takes them on CUDA when triton is importable (not under TRITON_INTERPRET, which would run
    them on the host); "triton" insists, and says in one sentence why it cannot when it cannot.
    """
    from ..errors import InputError

    if choice not in KERNELS:
        raise InputError(f"unknown kernels {choice!r}; expected one of {list(KERNELS)}")
    if choice == "torch":
        return False
    if choice == "auto":
        return HAS_TRITON and not INTERPRETED and getattr(device, "type", device) == "cuda" and num_slots <= MAX_SLOTS
    if not HAS_TRITON:
        raise InputError("kernels 'triton' needs the triton package: pip install 'ssmp-infer[gpu]' (or triton)")
    if getattr(device, "type", device) != "cuda" and not INTERPRETED:
        raise InputError(
            "kernels 'triton' run on a CUDA device; on the CPU only Triton's interpreter runs them "
            "(set TRITON_INTERPRET=1 before starting: slow, for testing)"
        )
    if num_slots > MAX_SLOTS:
        raise InputError(
            f"kernels 'triton' fill at most {MAX_SLOTS} trailer slots, got {num_slots}; use --kernels torch"
        )
    return True


__all__ = [
    "HAS_TRITON", "INTERPRETED", "KERNELS", "MAX_SLOTS", "SlotCandidates", "round_scorer", "score_candidates",
    "score_slots", "score_slots_ref", "score_slots_triton", "select_remask_ref", "select_remask_triton", "use_triton",
]
