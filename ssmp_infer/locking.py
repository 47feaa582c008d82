"""A round's locking rules in torch: which open slots lock which shots, and the draws paper mode locks by.

The decoder (decode.py) runs them round by round; the fused kernel (kernels/select_remask.py) makes the
same decisions on the device, and its reference composes these functions. Both import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DecodeState:
    shots: torch.Tensor  # (B, J) int64
    confidence: torch.Tensor  # (B, J) float32
    locked: torch.Tensor  # (B, J) bool; padded slots start locked
    used: torch.Tensor  # (B, I) bool; shots taken by a locked slot

    def commit(self, take: torch.Tensor, best: torch.Tensor, prob: torch.Tensor) -> None:
        """Lock slots `take` (whose `best` shots are distinct) on those shots."""
        self.shots = torch.where(take, best, self.shots)
        self.confidence = torch.where(take, prob, self.confidence)
        self.locked = self.locked | take
        # scatter_add, not scatter: a slot that does not take may name the same shot as one that does.
        taken = torch.zeros(self.used.shape, dtype=torch.int32, device=self.used.device)
        self.used = self.used | (taken.scatter_add_(1, best, take.to(torch.int32)) > 0)


def claims_by_confidence(best: torch.Tensor, prob: torch.Tensor, eligible: torch.Tensor, num_shots: int):
    """Order eligible claims most probable first (stable: ties keep slot order).

    Returns (order (B, J) slot indices, eligible in that order, first: whether a sorted claim is the
    first one on its shot).
    """
    B, J = best.shape
    order = torch.argsort(torch.where(eligible, prob, -1.0), dim=1, descending=True, stable=True)
    sorted_best, sorted_eligible = best.gather(1, order), eligible.gather(1, order)
    position = torch.arange(J, device=best.device).expand(B, J)
    first_position = torch.full((B, num_shots), J, device=best.device, dtype=position.dtype)
    first_position.scatter_reduce_(1, sorted_best, torch.where(sorted_eligible, position, J), reduce="amin")
    return order, sorted_eligible, first_position.gather(1, sorted_best) == position


def unsort(order: torch.Tensor, values_in_order: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(values_in_order).scatter_(1, order, values_in_order)


def resolve_conflicts(best: torch.Tensor, prob: torch.Tensor, wants: torch.Tensor, num_shots: int) -> torch.Tensor:
    """Of the slots that want to lock, those holding the most probable claim on their shot."""
    order, sorted_wants, first = claims_by_confidence(best, prob, wants, num_shots)
    return unsort(order, sorted_wants & first)


def lock_most_confident(state: DecodeState, score, need: torch.Tensor, num_shots: int) -> None:
    """Lock `need[b]` more slots per movie, most confident first, re-scoring losers of a shot conflict.

    Equivalent to locking one slot at a time: the longest run of most-confident claims on distinct
    shots locks at once, and the slots behind the first conflict are re-scored over the free shots.
    """
    need = need.clone()
    while True:  # checked at the bottom: the caller nearly always needs slots, so skip a host sync up front
        open_ = ~state.locked
        best, prob = score(state.used)
        order, sorted_open, first = claims_by_confidence(best, prob, open_, num_shots)
        J = best.shape[1]
        conflict = sorted_open & ~first
        first_conflict = torch.where(conflict.any(dim=1), conflict.to(torch.int8).argmax(dim=1), J)
        rank = torch.arange(J, device=best.device)
        take_sorted = sorted_open & (rank < first_conflict[:, None]) & (rank < need[:, None])
        take = unsort(order, take_sorted)
        state.commit(take, best, prob)
        need -= take.sum(dim=1)
        if not bool((need > 0).any()):
            return


def lock_draws(seed, round_index: int, num_slots: int, device: torch.device) -> torch.Tensor:
    """Uniforms in [0, 1) from a counter-based hash of (seed, round, slot): (J,) for an int seed, (B, J)
    for a (B,) tensor of per-movie seeds.

    No generator state: a movie's draws depend on nothing but these three numbers, so it gets the
    same trailer alone or in any batch, on any device, and candidates with different seeds can share
    one batch.
    """
    seed = torch.as_tensor(seed, dtype=torch.int64, device=device)
    x = _hash32(_hash32(seed & _MASK32) ^ round_index)[..., None]
    x = _hash32(x ^ torch.arange(num_slots, dtype=torch.int64, device=device))
    return x.to(torch.float64).div(2.0**32).to(torch.float32).clamp(max=1.0 - 2.0**-24)


_MASK32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer on int64 tensors (multipliers < 2^31 keep products below 2^63)."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    return (x >> 16) ^ x
