"""A round's locking rules in torch: which open slots lock which shots, and the draws paper mode locks by.

The decoder (decode.py) runs them round by round; the fused kernel (kernels/select_remask.py) makes the
same decisions on the device, and its reference composes these functions. Both import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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
    A `kernels.RoundScores` on the CPU takes `lock_one_at_a_time` instead: the same locks.
    """
    if getattr(score, "logits", None) is not None and score.logits.device.type == "cpu":
        return lock_one_at_a_time(state, score, need)
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


def lock_one_at_a_time(state: DecodeState, scores, need: torch.Tensor) -> None:
    """`lock_most_confident`'s locks, made one at a time from each open slot's best few shots.

    Why: with a shot prior most slots favour the same few shots, so nearly every lock is a conflict
    and the batched loop re-scores the whole J×I matrix once per lock (13 of a warm CMTD-sized topk
    trailer's 57 ms on this project's CPU). Here each slot's best `max(need) + 2` free shots are found
    once, ordered (logit desc, index asc: the masked argmax's first-maximum rule), and a slot whose shot
    goes to another steps to its next one still free. A lock takes one shot, so a slot steps at most
    `need` times and never reaches the list's last entry; a step onto a logit equal to that entry's
    (whose ties may lie past the list) scores the slot's whole row, as the batched loop does every time.

    The confidences are bit for bit the batched loop's: each is the exp of the same logit minus the
    same log-sum-exp at the same place of a (B, W) tensor (a vectorised exp may round a value at one
    place of a tensor otherwise than at another).
    """
    logits, lse = scores.logits, scores.lse
    B, W, I = logits.shape
    need_host = need.tolist()
    if not any(n > 0 for n in need_host):
        return
    # one entry past the most a slot can step: stepping onto the list's last entry (which may tie with
    # shots past the list) would score the slot's whole row
    k = min(I, max(need_host) + 2)
    top_val, top_idx = logits.masked_fill(state.used[:, None, :], float("-inf")).topk(k, dim=-1)  # ties: any order
    top_val, top_idx = top_val.numpy(), top_idx.numpy()
    if (top_val[..., 1:] == top_val[..., :-1]).any():  # ties: the lower shot first, as the argmax takes
        order = np.lexsort((top_idx, -top_val), axis=-1)
        top_val, top_idx = np.take_along_axis(top_val, order, -1), np.take_along_axis(top_idx, order, -1)
    # an entry tied with the list's last may have equal shots of lower index past the list
    safe = np.ones(top_val.shape, dtype=bool) if k == I else top_val != top_val[..., k - 1:]
    slot_of = (scores.pick if scores.pick is not None else torch.arange(W).expand(B, W)).numpy()
    open_ = ~state.locked if scores.rows is None else ~state.locked & scores.rows
    open_host = open_.numpy()
    shots, confidence = state.shots.numpy().copy(), state.confidence.numpy().copy()
    locked, used = state.locked.numpy().copy(), state.used.numpy().copy()

    def exp_at(values: np.ndarray) -> np.ndarray:
        """(B, W) probabilities of (B, W) logits, as the batched loop computes them."""
        return torch.exp(torch.from_numpy(np.ascontiguousarray(values)) - lse).numpy()

    # [place][b][w]: the listed logits' probabilities, one (B, W) exp per place
    listed_prob = [exp_at(top_val[..., at]).tolist() for at in range(k)]

    # Per movie the locks run in plain Python over lists: each lock touches a few of W ≤ ~70 rows, where a
    # numpy call's overhead is the cost (a warm 1909-shot topk trailer, 72 locks: 6.6 ms in numpy, 3.0 here).
    top_idx_rows, safe_rows = top_idx.tolist(), safe.tolist()
    for b in range(B):
        used_b = used[b]  # numpy bool row: the shots taken, read and written one at a time
        idx_b, safe_b, slot_b = top_idx_rows[b], safe_rows[b], slot_of[b].tolist()
        open_rows = [w for w in range(W) if open_host[b, slot_b[w]]]  # the open slots' rows, in slot order
        place = [0 if safe_b[w][0] else -1 for w in range(W)]  # place in the row's list; -1: its whole row
        shot_now, prob_now = [row[0] for row in idx_b], list(listed_prob[0][b])

        def score_whole_row(r: int) -> None:
            value, index = logits[b, r].masked_fill(torch.from_numpy(used_b), float("-inf")).max(dim=-1)
            whole = top_val[..., 0].copy()
            whole[b, r] = float(value)
            shot_now[r], prob_now[r] = int(index), float(exp_at(whole)[b, r])

        for r in open_rows:
            if place[r] < 0:
                score_whole_row(r)
        for _ in range(min(need_host[b], len(open_rows))):  # never a closed row, whatever `need` says
            w = max(open_rows, key=prob_now.__getitem__)  # most confident; ties: the lower slot (the first)
            j, shot = slot_b[w], shot_now[w]
            shots[b, j], confidence[b, j], locked[b, j], used_b[shot] = shot, prob_now[w], True, True
            open_rows.remove(w)
            for r in open_rows:
                if shot_now[r] != shot:
                    continue
                # the slot lost its best shot: its next listed shot still free; past the list, or onto an
                # unsafe tie, its whole row
                at = place[r] + 1 if place[r] >= 0 else k
                while at < k and used_b[idx_b[r][at]]:
                    at += 1
                if at < k and safe_b[r][at]:
                    place[r], shot_now[r], prob_now[r] = at, idx_b[r][at], listed_prob[at][b][r]
                else:
                    place[r] = -1
                    score_whole_row(r)
    state.shots, state.confidence = torch.from_numpy(shots), torch.from_numpy(confidence)
    state.locked, state.used = torch.from_numpy(locked), torch.from_numpy(used)


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
