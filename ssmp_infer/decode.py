"""Self-corrective decoding: fill J trailer slots with distinct movie shots by iterative masked prediction.

Every round is one encoder pass over [movie ; slots] (no KV cache: every token attends to every other),
driven through a `Backend` the decoder does not own. Then, per open slot, `score` finds the best
still-unused shot i* and its probability p_{j,i*} under P = softmax over all real shots.

mode "paper" (SSMP): q_j ← min(q_j + p_{j,i*}, 1); the slot locks i* with probability q_j (seeded
    Bernoulli), else it is re-masked and predicted again next round with more of the trailer fixed.
    When two slots lock the same shot in one round, the more probable claim keeps it and the other is
    re-masked (ties: the lower slot). After `max_rounds` passes the open slots are filled greedily.
mode "topk" (MaskGIT): after round r of T, L - floor(L · cos(π/2 · r/T)) slots are locked; the most
    confident open slots lock. A slot that loses its shot to a more confident one is re-scored over
    the shots still free (no new encoder pass), so each round locks exactly the scheduled count. A
    round whose count rises for no movie (more rounds than slots) is skipped: no encoder pass.

A locked slot never changes and a locked shot is never offered again, so no shot appears twice.
All state is batched (B movies, padded); padded slots count as locked from the start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .backends import Backend
from .config import DecodeConfig
from .data import slot_inputs
from .errors import InputError
from .kernels import score_slots


@dataclass
class DecodeResult:
    shots: torch.Tensor  # (B, J) int64 movie shot per slot; -1 in padded slots
    confidence: torch.Tensor  # (B, J) p_{j,i*} of the shot in the round the slot locked
    rounds: torch.Tensor  # (B,) encoder passes each movie needed


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


def cosine_schedule(round_index: int, total_rounds: int, lengths: torch.Tensor) -> torch.Tensor:
    """Slots locked after round `round_index` (1-based) of `total_rounds`: L - floor(L · cos(π/2 · r/T))."""
    remaining = torch.floor(lengths.to(torch.float64) * math.cos(math.pi / 2 * round_index / total_rounds))
    return lengths - remaining.to(lengths.dtype)


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


def lock_draws(seed: int, round_index: int, num_slots: int, device: torch.device) -> torch.Tensor:
    """(J,) uniforms in [0, 1) from a counter-based hash of (seed, round, slot).

    No generator state: a movie's draws depend on nothing but these three numbers, so it gets the
    same trailer alone or in any batch, on any device.
    """
    x = _hash32(_hash32(torch.tensor(seed, dtype=torch.int64, device=device) & _MASK32) ^ round_index)
    x = _hash32(x ^ torch.arange(num_slots, dtype=torch.int64, device=device))
    return x.to(torch.float64).div(2.0**32).to(torch.float32).clamp(max=1.0 - 2.0**-24)


_MASK32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer on int64 tensors (multipliers < 2^31 keep products below 2^63)."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    return (x >> 16) ^ x


@torch.inference_mode()
def generate(
    backend: Backend,
    movie: torch.Tensor,  # (B, I, D)
    movie_valid: torch.Tensor,  # (B, I) bool
    lengths: torch.Tensor,  # (B,) int64 trailer length per movie, 1 <= L <= real shots
    config: DecodeConfig,
    temperature: float,
) -> DecodeResult:
    B, I, _ = movie.shape
    device = movie.device
    # One host copy before the loop: the length check and the topk plan both read the lengths there.
    host_lengths = lengths.to(device="cpu", dtype=torch.int64)
    real_shots = movie_valid.sum(dim=1).cpu()
    if host_lengths.shape != (B,):
        raise InputError(f"expected {B} trailer lengths, one per movie, got shape {tuple(host_lengths.shape)}")
    bad = (host_lengths < 1) | (host_lengths > real_shots)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise InputError(
            f"movie {k}: trailer length {int(host_lengths[k])} is not in 1..{int(real_shots[k])}, the number of "
            "its real shots (no shot appears twice)"
        )
    lengths = host_lengths.to(device)
    J = int(host_lengths.max())
    slot_valid = torch.arange(J, device=device)[None, :] < lengths[:, None]  # (B, J)
    movie_unit = F.normalize(movie.float(), dim=-1)  # once per trailer, not per round
    state = DecodeState(
        shots=torch.zeros(B, J, dtype=torch.int64, device=device),
        confidence=torch.zeros(B, J, device=device),
        locked=~slot_valid,
        used=torch.zeros(B, I, dtype=torch.bool, device=device),
    )
    q = torch.zeros(B, J, device=device)  # cumulative confidence (paper mode)
    rounds = torch.zeros(B, dtype=torch.int64, device=device)
    cap = config.rounds_cap
    if config.mode == "topk":
        # The schedule depends on the lengths alone, so which rounds lock anything is known up front. A
        # round whose count rises for no movie would lock nothing: skip it, encoder pass and all.
        counts = torch.stack([cosine_schedule(r, cap, host_lengths) for r in range(cap + 1)])  # (T + 1, B)
        locks_in_round = counts[1:] > counts[:-1]  # (T, B)
        round_locks = locks_in_round.any(dim=1).tolist()
        locks_in_round = locks_in_round.to(device)

    for r in range(1, cap + 1):
        if config.mode == "topk" and not round_locks[r - 1]:
            continue
        open_ = ~state.locked
        if config.mode == "paper" and not bool(open_.any()):  # the one host sync per round: is any slot left?
            break
        # a movie's steps count the passes that can lock some of its slots (the same alone or in any batch)
        rounds += locks_in_round[r - 1] if config.mode == "topk" else open_.any(dim=1)
        pred = backend.encode(movie, movie_valid, slot_inputs(movie, state.shots), open_, slot_valid)  # (B, J, D)

        def score(used):
            return score_slots(pred, movie_unit, movie_valid, used, temperature)

        if config.mode == "paper":
            best, prob = score(state.used)
            q = torch.where(open_, (q + prob).clamp(max=1.0), q)
            wants = open_ & (lock_draws(config.seed, r, J, device) < q)
            state.commit(resolve_conflicts(best, prob, wants, I), best, prob)
            if r == cap:  # out of rounds: fill what is left greedily from this round's predictions
                lock_most_confident(state, score, (~state.locked).sum(dim=1), I)
        else:
            need = cosine_schedule(r, cap, lengths) - (state.locked & slot_valid).sum(dim=1)
            lock_most_confident(state, score, need, I)

    shots = torch.where(slot_valid, state.shots, -1)
    return DecodeResult(shots=shots, confidence=torch.where(slot_valid, state.confidence, 0.0), rounds=rounds)
