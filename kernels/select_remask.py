"""Select and re-mask: one round's locking decisions, fused into one launch per round.

Given the round's scores (kernels/score_slots.py: per open slot j its best still-unused shot i*_j,
p_j = p_{j,i*_j}, and its next few candidates), every movie of the batch independently:

mode "paper":  q_j ← min(q_j + p_j, 1) for open slots; slot j wants to lock when u_j < q_j, with u_j
               the decoder's counter-based hash of (seed, round, j) (`locking.lock_draws`, computed here
               in the kernel); of several slots wanting one shot the more probable claim wins, ties to
               the lower slot. Losers and slots that did not draw stay masked.
mode "topk":   lock `need[b]` slots, most confident first, one at a time: the most probable claim
               among open slots locks (ties: the lower slot), its shot leaves every other slot's list,
               and a slot whose best shot went takes its next live candidate (prob e^{x - lse}: the
               row's log-sum-exp is over all real shots, used or not, so it does not change). This is
               `locking.lock_most_confident`, which locks the same slots in a few batched passes.

Each newly locked slot gets its shot, its probability as confidence, `locked`, its shot marked `used`,
and its row of the next round's slot inputs (the shot's feature; a masked slot's row is not touched:
the model replaces it with the mask token). Pinned slots (locked) and banned shots (used) on entry
are honoured as given.

Why candidates rather than re-scoring losers over the whole row: a loser's next-best shot is the best
of its row minus this round's locked shots, and the scoring kernel already passed over the row, so it
keeps the TOP best per slot (TOP = 8). Only when a slot's whole list has gone to other slots and it
could still be the next to lock (its last candidate's prob, an upper bound on the rest, is at least
the best live claim) is it re-scored, here in the kernel over the shots still free, into a new list:
with a shot prior every slot favours the same few shots, and the final fill of every open slot at
once goes through them all, so this is a path the kernel must take without leaving the device.
A re-scored row is summed in another order than the scoring kernel's `tl.dot` (as every kernel's sums
differ from torch's matmul): the same shots unless two claims tie to within fp32 rounding.

No host synchronisation and no data-dependent shape: the grid is (B,), the blocks follow from J, I and
D, and the data-dependent work (topk's `need[b]` locks, the re-scoring loop) is loops inside the
program, so a round of score + select can be captured in a CUDA graph.

`select_remask_ref` composes the decoder's torch functions and is the definition.
"""

from __future__ import annotations

import torch

from .score_slots import HAS_TRITON, TOP, SlotCandidates, _bytes

if HAS_TRITON:
    import triton
    import triton.language as tl

    from .score_slots import _merge_topk, _pick

MODES = ("paper", "topk")
# One program holds a movie's slots (paper compares every pair of claims): far above a trailer's 60-80.
MAX_SLOTS = 1024


def select_remask_ref(score, shots, confidence, locked, used, q, movie_unit, *, mode, need=None, seed=0, round_index=1):
    """The torch definition: the decoder's own steps. Returns (shots, confidence, locked, used, q, slots).

    `score`: `kernels.round_scorer(...)` of the round; `slots` is the whole (B, J, D) gather of the
    locked shots' features (`data.slot_inputs`), as the decoder builds the next round's inputs.
    """
    from ..data import slot_inputs
    from ..locking import DecodeState, lock_draws, lock_most_confident, resolve_conflicts

    state = DecodeState(shots, confidence, locked, used)
    num_shots = used.shape[1]
    if mode == "paper":
        open_ = ~locked
        best, prob = score(used)
        q = torch.where(open_, (q + prob).clamp(max=1.0), q)
        wants = open_ & (lock_draws(seed, round_index, locked.shape[1], locked.device) < q)
        state.commit(resolve_conflicts(best, prob, wants, num_shots), best, prob)
    else:
        lock_most_confident(state, score, need, num_shots)
    return state.shots, state.confidence, state.locked, state.used, q, slot_inputs(movie_unit, state.shots)


def select_remask_triton(
    c: SlotCandidates,
    shots: torch.Tensor,  # (B, J) int64, updated in place
    confidence: torch.Tensor,  # (B, J) float32, updated in place
    locked: torch.Tensor,  # (B, J) bool, updated in place
    used: torch.Tensor,  # (B, I) bool, updated in place
    q: torch.Tensor | None,  # (B, J) float32 cumulative confidence (paper), updated in place
    slots: torch.Tensor,  # (B, J, D) next round's slot inputs: rows of newly locked slots are written
    *,
    mode: str,
    need: torch.Tensor | None = None,  # (B,) topk: slots to lock per movie (<= 0: none)
    seed: int | torch.Tensor = 0,  # paper: one seed, or (B,) int64 per movie (on the device: no copy per round)
    round_index: int | torch.Tensor = 1,  # paper: 1-based; a 0-d int64 device tensor lets a captured round replay
) -> None:
    """One launch, one program per movie. Reads nothing back to the host: no sync, fixed shapes."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {list(MODES)}")
    B, J = shots.shape
    I, D = used.shape[1], slots.shape[-1]
    expect = {"shots": (shots, (B, J), torch.int64), "confidence": (confidence, (B, J), torch.float32),
              "locked": (locked, (B, J), torch.bool), "used": (used, (B, I), torch.bool),
              "slots": (slots, (B, J, c.movie_unit.shape[-1]), None)}
    if mode == "paper":
        expect["q"] = (q, (B, J), torch.float32)
    else:
        if need is None or need.shape != (B,):
            raise ValueError(f"topk needs `need`, one count per movie: shape {(B,)}")
    for name, (t, shape, dtype) in expect.items():
        if t is None or t.shape != shape or (dtype is not None and t.dtype != dtype) or not t.is_contiguous():
            got = "None" if t is None else f"{tuple(t.shape)} {t.dtype}{'' if t.is_contiguous() else ' non-contiguous'}"
            raise ValueError(f"{name} must be a contiguous {shape} {dtype or ''} tensor (updated in place), got {got}")
    if c.cand_idx.shape[:2] != (B, J) or c.movie_unit.shape[:2] != (B, I):
        raise ValueError("the candidates were scored for another batch")
    if J > MAX_SLOTS:
        raise ValueError(f"the fused round holds a movie's slots in one program: at most {MAX_SLOTS}, got {J}")
    if B == 0:
        return
    dummy = c.lse  # a pointer the kernel never reads (no prior; q, seed in topk; need in paper)
    if mode == "paper" and not isinstance(seed, torch.Tensor):
        seed = torch.full((B,), seed, dtype=torch.int64, device=shots.device)
    if mode == "paper" and (seed.shape != (B,) or seed.dtype != torch.int64):
        raise ValueError(f"seed must be an int or a (B,) = {(B,)} int64 tensor, got {tuple(seed.shape)} {seed.dtype}")
    if mode == "paper" and not isinstance(round_index, torch.Tensor):
        round_index = torch.full((), round_index, dtype=torch.int64, device=shots.device)  # a fill: no host copy, no sync
    if mode == "paper" and (round_index.numel() != 1 or round_index.dtype != torch.int64):
        raise ValueError(f"round_index must be an int or a one-element int64 tensor, got {round_index!r}")
    block_j = max(16, triton.next_power_of_2(J))
    _select_remask_kernel[(B,)](
        c.cand_idx, c.cand_logit, c.lse,
        shots, confidence, locked.view(torch.uint8), used.view(torch.uint8),
        q if q is not None else dummy, need.contiguous() if need is not None else dummy, slots,
        c.pred, c.movie_unit, _bytes(c.movie_valid), c.shot_prior if c.shot_prior is not None else dummy,
        seed.contiguous() if mode == "paper" else dummy, round_index if mode == "paper" else dummy,
        J, I, D, c.temperature,
        PAPER=mode == "paper", HAS_PRIOR=c.shot_prior is not None, TOP=TOP,
        BLOCK_J=block_j, BLOCK_I=512 if slots.device.type == "cpu" else 64,
        BLOCK_D=max(16, min(256 if slots.device.type == "cpu" else 64, triton.next_power_of_2(D))),
        # no register spills at J <= 128 (sm_90, ptxas); paper's claim-by-claim comparison spills above
        num_warps=4 if block_j <= 64 else 8 if block_j <= 256 else 16,
    )


if HAS_TRITON:

    @triton.jit
    def _hash32(x):
        """locking._hash32 on uint32: the products wrap mod 2^32, which is the reference's `& 0xFFFFFFFF`."""
        x = ((x >> 16) ^ x) * 0x45D9F3B
        x = ((x >> 16) ^ x) * 0x45D9F3B
        return (x >> 16) ^ x

    @triton.jit
    def _rescore_row(pred_row, movie_b, valid_b, used_b, prior_b, I, D, temperature,
                     HAS_PRIOR: tl.constexpr, TOP: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_D: tl.constexpr):
        """One slot's TOP best shots among those free now, as (1, TOP) lists (score_slots' math)."""
        rd = tl.arange(0, BLOCK_D)
        ss = tl.zeros([BLOCK_D], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            v = tl.load(pred_row + d0 + rd, mask=d0 + rd < D, other=0.0).to(tl.float32)
            ss += v * v
        norm = tl.maximum(tl.sqrt(tl.sum(ss, axis=0)), 1e-12)
        top_v = tl.full([1, TOP], float("-inf"), dtype=tl.float32)
        top_i = tl.full([1, TOP], -1, dtype=tl.int32)
        for i0 in range(0, I, BLOCK_I):
            ri = i0 + tl.arange(0, BLOCK_I)
            imask = ri < I
            acc = tl.zeros([BLOCK_I], dtype=tl.float32)
            for d0 in range(0, D, BLOCK_D):
                dmask = d0 + rd < D
                v = tl.load(pred_row + d0 + rd, mask=dmask, other=0.0).to(tl.float32)
                m = tl.load(movie_b + ri[:, None].to(tl.int64) * D + d0 + rd[None, :],
                            mask=imask[:, None] & dmask[None, :], other=0.0).to(tl.float32)
                acc += tl.sum(m * v[None, :], axis=1)
            x = acc / norm / temperature
            if HAS_PRIOR:
                x += tl.load(prior_b + ri, mask=imask, other=0.0)
            # .cg: from L2, past the L1 that may still hold `used` as it was before this launch's locks
            taken = tl.load(used_b + ri, mask=imask, other=1, cache_modifier=".cg")
            ok = (tl.load(valid_b + ri, mask=imask, other=0) != 0) & (taken == 0)
            x = tl.where(ok, x, float("-inf"))
            if tl.max(x, axis=0) > tl.min(top_v):  # the list's last entry is its least
                top_v, top_i = _merge_topk(top_v, top_i, x[None, :], ri[None, :], TOP)
        return top_v, top_i

    @triton.jit
    def _select_remask_kernel(
        cand_idx_ptr, cand_logit_ptr, lse_ptr,
        shots_ptr, conf_ptr, locked_ptr, used_ptr, q_ptr, need_ptr, slots_ptr,
        pred_ptr, movie_ptr, valid_ptr, prior_ptr, seed_ptr, round_ptr,
        J, I, D, temperature,
        PAPER: tl.constexpr, HAS_PRIOR: tl.constexpr, TOP: tl.constexpr,
        BLOCK_J: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        b = tl.program_id(0)
        rj = tl.arange(0, BLOCK_J)
        jmask = rj < J
        row = b * J + rj
        kk = tl.arange(0, TOP)
        first = tl.zeros([BLOCK_J], dtype=tl.int32)
        last = first + (TOP - 1)
        open_ = (tl.load(locked_ptr + row, mask=jmask, other=1) == 0) & jmask
        lse = tl.load(lse_ptr + row, mask=jmask, other=0.0)
        cidx = tl.load(cand_idx_ptr + row[:, None] * TOP + kk[None, :], mask=jmask[:, None], other=-1)
        clog = tl.load(cand_logit_ptr + row[:, None] * TOP + kk[None, :], mask=jmask[:, None], other=float("-inf"))
        shots = tl.load(shots_ptr + row, mask=jmask, other=0)
        conf = tl.load(conf_ptr + row, mask=jmask, other=0.0)
        used_b = used_ptr + b * I
        newly = rj < 0

        if PAPER:
            best = _pick(cidx, kk, first)
            prob = tl.exp(_pick(clog, kk, first) - lse)
            q = tl.load(q_ptr + row, mask=jmask, other=0.0)
            q = tl.where(open_, tl.minimum(q + prob, 1.0), q)
            tl.store(q_ptr + row, q, mask=jmask)
            seed_lo = tl.load(seed_ptr + b).to(tl.uint32)  # int64 -> uint32 keeps the low bits: `seed & 0xFFFFFFFF`
            # the round is read from device memory, not passed by value: a captured round stays right on replay
            x = _hash32(_hash32(seed_lo) ^ tl.load(round_ptr).to(tl.uint32))
            x = _hash32(x ^ rj.to(tl.uint32))
            u = tl.minimum((x.to(tl.float64) / 4294967296.0).to(tl.float32), 1.0 - 2.0**-24)
            wants = open_ & (u < q) & (best >= 0)
            # slot j loses to a wanting slot j' on its shot with the more probable claim (ties: lower slot)
            beats = (best[None, :] == best[:, None]) & wants[None, :] & (
                (prob[None, :] > prob[:, None]) | ((prob[None, :] == prob[:, None]) & (rj[None, :] < rj[:, None]))
            )
            newly = wants & (tl.sum(beats.to(tl.int32), axis=1) == 0)
            shots = tl.where(newly, best.to(tl.int64), shots)
            conf = tl.where(newly, prob, conf)
            tl.store(used_b + best, tl.full([BLOCK_J], 1, tl.uint8), mask=newly)
        else:
            need = tl.load(need_ptr + b)
            # shots taken since scoring (an earlier launch of this round) are dead from the start
            alive = (cidx >= 0) & (tl.load(used_b + cidx, mask=cidx >= 0, other=1) == 0)
            full = _pick(cidx, kk, last) >= 0  # a short list held every free shot: nothing lies beyond it
            bound = tl.exp(_pick(clog, kk, last) - lse)  # no shot beyond a full list beats its last entry
            for _ in range(0, need):
                pos = tl.min(tl.where(alive, kk[None, :], TOP), axis=1)  # each slot's first live candidate
                at = kk[None, :] == pos[:, None]
                claim = tl.where(open_ & (pos < TOP), tl.exp(tl.sum(tl.where(at, clog, 0.0), axis=1) - lse), -1.0)
                top_claim = tl.max(claim, axis=0)
                spent = tl.where(open_ & (pos >= TOP) & full, bound, -1.0)
                top_spent = tl.max(spent, axis=0)
                # a slot whose list is spent may hold the best claim: score it again over the free shots
                while (top_spent >= top_claim) & (top_spent >= 0.0):
                    js = tl.min(tl.where(spent == top_spent, rj, BLOCK_J), axis=0)
                    tl.debug_barrier()  # this launch's `used` stores, seen by every thread of the program
                    nv, ni = _rescore_row(pred_ptr + (b * J + js).to(tl.int64) * D, movie_ptr + b.to(tl.int64) * I * D,
                                          valid_ptr + b * I, used_b, prior_ptr + b * I, I, D, temperature,
                                          HAS_PRIOR, TOP, BLOCK_I, BLOCK_D)
                    hit = rj[:, None] == js
                    cidx = tl.where(hit, ni, cidx)
                    clog = tl.where(hit, nv, clog)
                    alive = tl.where(hit, ni >= 0, alive)
                    full = _pick(cidx, kk, last) >= 0
                    bound = tl.exp(_pick(clog, kk, last) - lse)
                    pos = tl.min(tl.where(alive, kk[None, :], TOP), axis=1)
                    at = kk[None, :] == pos[:, None]
                    claim = tl.where(open_ & (pos < TOP), tl.exp(tl.sum(tl.where(at, clog, 0.0), axis=1) - lse), -1.0)
                    top_claim = tl.max(claim, axis=0)
                    spent = tl.where(open_ & (pos >= TOP) & full, bound, -1.0)
                    top_spent = tl.max(spent, axis=0)
                if top_claim >= 0.0:
                    js = tl.min(tl.where(claim == top_claim, rj, BLOCK_J), axis=0)
                    hit = rj == js
                    shot = tl.sum(tl.sum(tl.where(at & hit[:, None], cidx, 0), axis=1), axis=0)
                    shots = tl.where(hit, shot.to(tl.int64), shots)
                    conf = tl.where(hit, top_claim, conf)
                    open_ = open_ & ~hit
                    newly = newly | hit
                    tl.store(used_b + shot, tl.full([], 1, tl.uint8))
                    alive = alive & (cidx != shot)

        tl.store(shots_ptr + row, shots, mask=newly)
        tl.store(conf_ptr + row, conf, mask=newly)
        tl.store(locked_ptr + row, tl.full([BLOCK_J], 1, tl.uint8), mask=newly)
        # the next round's inputs: each newly locked slot reads its shot's feature row
        rd = tl.arange(0, BLOCK_D)
        src = movie_ptr + b.to(tl.int64) * I * D + shots[:, None] * D
        dst = slots_ptr + row[:, None].to(tl.int64) * D
        for d0 in range(0, D, BLOCK_D):
            mask = newly[:, None] & (d0 + rd[None, :] < D)
            tl.store(dst + d0 + rd[None, :], tl.load(src + d0 + rd[None, :], mask=mask), mask=mask)
