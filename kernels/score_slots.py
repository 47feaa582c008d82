"""Score trailer slots against the movie: the best still-unused shot per slot and its probability.

For slot j with predicted feature v̂_j and movie shots m_i (i real):

    s_ji      = cos(v̂_j, m_i) / tau (+ b_i, the model's per-shot prior, when it has one)
    p_ji      = exp(s_ji) / sum_{i real} exp(s_ji)          (softmax over every real shot, used or not)
    best_j    = argmax_{i real, not used} s_ji              (ties: the lowest index)
    prob_j    = p_{j, best_j}

Only a row reduction of the J×I score matrix is needed (a log-sum-exp and a masked argmax), so a
fused version streams over I with an online softmax and never writes the matrix; this reference
materialises it and is the contract such a kernel must match.

`score_slots_triton` is that kernel. Per block of slots it walks I in tiles: the tile's logits come
from a `tl.dot` accumulated in fp32 (bf16/fp16 inputs are multiplied exactly and summed in fp32),
the row's max m and sum-exp s are carried online (s ← s·e^{m-m'} + Σ e^{x-m'}), and so are the
`TOP` best still-unused real shots, sorted (logit desc, index asc). It writes best, prob, the row's
log-sum-exp, and those candidates: a slot that loses its shot to another in the same round takes
its next live candidate, prob = e^{x - lse}, with no second product (kernels/select_remask.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..model import unit_score_logits

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
    # Decided when the kernels are decorated (triton reads TRITON_INTERPRET then): the interpreter runs
    # them on CPU tensors, slowly, for tests; the compiled kernels need a CUDA device.
    INTERPRETED = bool(triton.knobs.runtime.interpret) if hasattr(triton, "knobs") else (
        os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on"))
except ImportError:  # optional: the torch references below serve every device
    HAS_TRITON, INTERPRETED = False, False

# Candidates kept per slot: a slot is scored again (a serial pass over the row, in select_remask) only
# after this many of its best shots went to other slots in one round. Measured with the bundled model
# (shot prior on) on 4 CMTD-sized movies, topk: 284 locks, the locked shot ranked 0-6 in its slot's
# list (132/72/39/16/15/6/4): 4 would re-score 9% of locks, 8 none. Each entry costs a reduction over
# the tile in the merge, cheap beside the tile's D-long dot products.
TOP = 8


def score_slots_ref(
    pred: torch.Tensor,  # (B, J, D) predicted slot features, any scale
    movie_unit: torch.Tensor,  # (B, I, D) L2-normalised movie shot features
    movie_valid: torch.Tensor,  # (B, I) bool
    used: torch.Tensor,  # (B, I) bool: shots already locked into some slot
    temperature: float,
    shot_prior: torch.Tensor | None = None,  # (B, I) b_i added to every slot's logits, or None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(best (B, J) int64, prob (B, J) float32). Needs at least one real unused shot per movie."""
    s = unit_score_logits(pred, movie_unit, movie_valid, temperature, shot_prior)  # (B, J, I)
    lse = torch.logsumexp(s, dim=-1)  # (B, J)
    best_score, best = s.masked_fill(used[:, None, :], float("-inf")).max(dim=-1)
    return best, torch.exp(best_score - lse)


def score_slots(pred, movie_unit, movie_valid, used, temperature, shot_prior=None):
    """The reference, for callers outside the decoder (which picks its path by `DecodeConfig.kernels`)."""
    return score_slots_ref(pred, movie_unit, movie_valid, used, temperature, shot_prior)


def round_scorer(pred, movie_unit, movie_valid, temperature, shot_prior=None, rows=None, basis=None,
                 movie_coords=None, pick=None) -> "RoundScores":
    """`used -> (best, prob)` for one round's predictions: `score_slots` with `used` left open.

    A round scores its slots once, then again each time a conflict takes a shot away (topk locks the
    most confident claims and re-scores the losers). Only `used` changes between those calls, so the
    J×I logits and their log-sum-exp are computed once and each re-score is a masked argmax: with a
    shot prior every slot favours the same few shots, and conflicts come by the dozen per round.

    `rows` (B, J) bool, on the CPU only: the slots whose scores the round can use (the open ones; a
    locked slot's claim is never read). Only those rows are scored, packed to the batch's largest
    count: a topk trailer's rounds average about two thirds of the slots open, and the J×I×D
    product is the largest cost of a round after the encoder step. The other rows come back as
    shot 0 with probability 0. On an accelerator the packing would need a host sync: every row is
    scored there, and the same rows are cleared.

    `basis` (D, r) and `movie_coords` (B, I, r), from a backend that spans its predictions
    (`MovieState.output_basis`): the product runs over r instead of D (`unit_score_logits`).

    `movie_valid` None: every shot is real (nothing to mask).

    `pick` (B, W), with `rows`: `pred` is already packed that way (a backend that predicts only the open
    slots: `TorchBackend.step_coords`), row w being slot pick[b, w], the open slots first in slot order.
    """
    if pick is None and rows is not None and pred.device.type == "cpu":
        width = int(rows.sum(dim=1).max())
        if width < pred.shape[1]:
            # the open slots first (stable: slot order), cut to the widest movie's count
            pick = torch.argsort((~rows).to(torch.int8), dim=1, stable=True)[:, :width]  # (B, width)
            pred = pred.gather(1, pick[..., None].expand(-1, -1, pred.shape[2]))
    if basis is not None:
        movie_unit = movie_coords
    logits = unit_score_logits(pred, movie_unit, movie_valid, temperature, shot_prior, basis)  # (B, J or width, I)
    return RoundScores(logits, torch.logsumexp(logits, dim=-1), rows, pick)


@dataclass
class RoundScores:
    """One round's logits, kept for every re-score of the round (`round_scorer`); called with `used`, the
    best still-unused shot of every slot and its probability, (B, J) each, in slot order.

    Row w of `logits` is slot `pick[b, w]` (the packed open slots), or slot w when `pick` is None.
    `locking.lock_most_confident` reads these fields to lock a round's slots one at a time from each
    slot's best few shots, in place of a masked argmax over the whole matrix per conflict."""

    logits: torch.Tensor  # (B, W, I) float32; -inf on padded shots
    lse: torch.Tensor  # (B, W) log-sum-exp over every real shot
    rows: torch.Tensor | None  # (B, J) bool: the slots scored (None: all)
    pick: torch.Tensor | None  # (B, W) int64: the slot of each row (None: row w is slot w)

    def __call__(self, used: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        best_score, best = self.logits.masked_fill(used[:, None, :], float("-inf")).max(dim=-1)
        prob = torch.exp(best_score - self.lse)
        if self.rows is None:
            return best, prob
        if self.pick is not None:  # back to slot order; a movie with fewer open slots than the widest
            # one filled its pack with locked slots, which the mask below clears
            best = torch.zeros(self.rows.shape, dtype=best.dtype).scatter_(1, self.pick, best)
            prob = torch.zeros(self.rows.shape, dtype=prob.dtype).scatter_(1, self.pick, prob)
        return best.masked_fill(~self.rows, 0), prob.masked_fill(~self.rows, 0.0)


# --- the streamed kernel ---------------------------------------------------------------------------


@dataclass
class SlotCandidates:
    """One round's scores as `score_candidates` leaves them: enough to lock, and to re-score, slots."""

    best: torch.Tensor  # (B, J) int64 best still-unused real shot (0 when none is left, as the reference)
    prob: torch.Tensor  # (B, J) float32 its probability under the softmax over all real shots
    lse: torch.Tensor  # (B, J) float32 log-sum-exp of the slot's logits over all real shots
    cand_idx: torch.Tensor  # (B, J, TOP) int32 the TOP best unused real shots, best first; -1: none left
    cand_logit: torch.Tensor  # (B, J, TOP) float32 their logits; -inf where cand_idx is -1
    # the inputs, kept for a slot that must be scored again over the shots still free
    pred: torch.Tensor
    movie_unit: torch.Tensor
    movie_valid: torch.Tensor
    temperature: float
    shot_prior: torch.Tensor | None  # float32, contiguous


def score_slots_triton(pred, movie_unit, movie_valid, used, temperature, shot_prior=None):
    """`score_slots_ref`'s contract without the J×I matrix: (best int64, prob float32, lse float32), each (B, J)."""
    c = score_candidates(pred, movie_unit, movie_valid, used, temperature, shot_prior)
    return c.best, c.prob, c.lse


def score_candidates(pred, movie_unit, movie_valid, used, temperature, shot_prior=None) -> SlotCandidates:
    """Launch the streamed scoring kernel: one program per (movie, block of slots). No host sync."""
    if not HAS_TRITON:
        raise RuntimeError("score_candidates needs the triton package")
    B, J, D = pred.shape
    I = movie_unit.shape[1]
    if movie_unit.shape != (B, I, D) or movie_valid.shape != (B, I) or used.shape != (B, I):
        raise ValueError(
            f"shapes do not match: pred {tuple(pred.shape)}, movie_unit {tuple(movie_unit.shape)}, "
            f"movie_valid {tuple(movie_valid.shape)}, used {tuple(used.shape)}"
        )
    if shot_prior is not None and shot_prior.shape != (B, I):
        raise ValueError(f"shot_prior must be (B, I) = {(B, I)}, got {tuple(shot_prior.shape)}")
    device = pred.device
    others = (movie_unit, movie_valid, used) + (() if shot_prior is None else (shot_prior,))
    if any(t.device != device for t in others):
        raise ValueError(f"every input must be on {device}, as pred")
    pred, movie_unit = pred.contiguous(), movie_unit.contiguous()
    shot_prior = shot_prior.float().contiguous() if shot_prior is not None else None
    best = _empty((B, J), torch.int64, device)
    prob = _empty((B, J), torch.float32, device)
    lse = _empty((B, J), torch.float32, device)
    cand_idx = _empty((B, J, TOP), torch.int32, device)
    cand_logit = _empty((B, J, TOP), torch.float32, device)
    # tl.dot on fp32 would round its inputs to TF32 on a GPU: ask for IEEE products, as the reference's.
    # Triton 3.9's interpreter holds bf16 as raw uint16 and multiplies those integers in tl.dot, so there
    # bf16 takes the fp32 path: the same products (a bf16 product is exact in fp32) and the same sums.
    half = pred.dtype == movie_unit.dtype and pred.dtype in (torch.float16, torch.bfloat16)
    half = half and not (INTERPRETED and pred.dtype == torch.bfloat16)
    blocks = _score_blocks(J, D, device, half)
    grid = (B, triton.cdiv(J, blocks["BLOCK_J"]))
    if B and J:  # an empty grid is no launch
        _score_slots_kernel[grid](
            pred, movie_unit, _bytes(movie_valid), _bytes(used), shot_prior if shot_prior is not None else pred,
            best, prob, lse, cand_idx, cand_logit,
            J, I, D, float(temperature),
            HAS_PRIOR=shot_prior is not None, HALF=half, TOP=TOP, **blocks,
        )
    temperature = float(temperature)
    return SlotCandidates(best, prob, lse, cand_idx, cand_logit, pred, movie_unit, movie_valid, temperature, shot_prior)


def _empty(shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Every output buffer comes from here: tests replace it to hand the kernel poisoned buffers."""
    return torch.empty(shape, dtype=dtype, device=device)


def _bytes(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as uint8 without a copy when it is contiguous: kernels load and store bytes."""
    return mask.contiguous().view(torch.uint8)


def _score_blocks(J: int, D: int, device: torch.device, half: bool) -> dict:
    """Block sizes from the shapes alone (never from the data, so the launch can be graph-captured).

    GPU: the largest tiles that compile for sm_90 without spilling registers (ptxas resource usage,
    Triton 3.9; fp32's IEEE products run on the FMA units and need the smaller D step). Not tuned on
    a GPU: none was lent to this work.
    """
    if device.type == "cpu":  # the interpreter: every op is a numpy call, so fewer, larger tiles
        return dict(BLOCK_J=max(16, min(64, triton.next_power_of_2(J))), BLOCK_I=512,
                    BLOCK_D=max(16, min(256, triton.next_power_of_2(D))))
    if not half:
        return dict(BLOCK_J=32, BLOCK_I=64, BLOCK_D=32, num_warps=4)
    wide = J > 32
    return dict(BLOCK_J=64 if wide else 32, BLOCK_I=64, BLOCK_D=64, num_warps=8 if wide else 4)


if HAS_TRITON:

    @triton.jit
    def _pick(x, cols, k):
        """Column k of each row of a (R, C) tile, as (R,): registers cannot be indexed by a tensor."""
        return tl.sum(tl.where(cols[None, :] == k[:, None], x, tl.zeros_like(x)), axis=1)

    @triton.jit
    def _merge_topk(top_v, top_i, x, x_idx, TOP: tl.constexpr):
        """Merge a tile (R, C) of logits with shot indices `x_idx` into each row's sorted TOP list.

        The tile's indices are all above the list's (tiles go up the shot axis), so on equal logits the
        list's entry comes first: ties go to the lower shot, as the reference's argmax. Callers skip
        tiles that beat no row's last entry (most tiles of a long movie): a call costs the
        interpreter milliseconds, and the compiled kernel a pass of TOP reductions.
        """
        kk = tl.arange(0, TOP)
        p = tl.zeros([x.shape[0]], dtype=tl.int32)  # the next list entry not yet placed, per row
        new_v, new_i = top_v, top_i
        for k in tl.static_range(TOP):
            tv = tl.max(x, axis=1)
            ti = tl.min(tl.where(x == tv[:, None], x_idx, 2147483647), axis=1)
            at_p = kk[None, :] == p[:, None]  # (registers cannot be indexed by a tensor: select and sum)
            lv = tl.sum(tl.where(at_p, top_v, 0.0), axis=1)
            li = tl.sum(tl.where(at_p, top_i, 0), axis=1)
            take = tv > lv
            new_v = tl.where(kk[None, :] == k, tl.where(take, tv, lv)[:, None], new_v)
            new_i = tl.where(kk[None, :] == k, tl.where(take, ti, li)[:, None], new_i)
            x = tl.where(take[:, None] & (x_idx == ti[:, None]), float("-inf"), x)
            p += tl.where(take, 0, 1)
        return new_v, new_i

    @triton.jit
    def _score_slots_kernel(
        pred_ptr, movie_ptr, valid_ptr, used_ptr, prior_ptr,
        best_ptr, prob_ptr, lse_ptr, cand_idx_ptr, cand_logit_ptr,
        J, I, D, temperature,
        HAS_PRIOR: tl.constexpr, HALF: tl.constexpr, TOP: tl.constexpr,
        BLOCK_J: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        b = tl.program_id(0)
        rj = tl.program_id(1) * BLOCK_J + tl.arange(0, BLOCK_J)
        jmask = rj < J
        rd = tl.arange(0, BLOCK_D)
        pred_rows = pred_ptr + b.to(tl.int64) * J * D + rj[:, None].to(tl.int64) * D
        movie_b = movie_ptr + b.to(tl.int64) * I * D

        # F.normalize: v / max(|v|, 1e-12), applied to the product rather than to v
        ss = tl.zeros([BLOCK_J], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            v = tl.load(pred_rows + d0 + rd[None, :], mask=jmask[:, None] & (d0 + rd[None, :] < D), other=0.0)
            v = v.to(tl.float32)
            ss += tl.sum(v * v, axis=1)
        norm = tl.maximum(tl.sqrt(ss), 1e-12)

        m_run = tl.full([BLOCK_J], float("-inf"), dtype=tl.float32)
        s_run = tl.zeros([BLOCK_J], dtype=tl.float32)
        top_v = tl.full([BLOCK_J, TOP], float("-inf"), dtype=tl.float32)
        top_i = tl.full([BLOCK_J, TOP], -1, dtype=tl.int32)
        kk = tl.arange(0, TOP)
        for i0 in range(0, I, BLOCK_I):
            ri = i0 + tl.arange(0, BLOCK_I)
            imask = ri < I
            acc = tl.zeros([BLOCK_J, BLOCK_I], dtype=tl.float32)
            for d0 in range(0, D, BLOCK_D):
                dmask = d0 + rd < D
                v = tl.load(pred_rows + d0 + rd[None, :], mask=jmask[:, None] & dmask[None, :], other=0.0)
                m = tl.load(movie_b + ri[None, :].to(tl.int64) * D + d0 + rd[:, None],
                            mask=imask[None, :] & dmask[:, None], other=0.0)  # (BLOCK_D, BLOCK_I)
                if HALF:
                    acc = tl.dot(v, m, acc)  # exact half products, fp32 sums
                else:
                    acc = tl.dot(v.to(tl.float32), m.to(tl.float32), acc, input_precision="ieee")
            x = acc / norm[:, None] / temperature
            if HAS_PRIOR:
                x += tl.load(prior_ptr + b * I + ri, mask=imask, other=0.0)[None, :]
            valid = tl.load(valid_ptr + b * I + ri, mask=imask, other=0) != 0
            x = tl.where(valid[None, :], x, float("-inf"))
            # online log-sum-exp; a row with no real shot yet keeps m = -inf and s = 0
            m_new = tl.maximum(m_run, tl.max(x, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            s_run = s_run * tl.exp(m_run - m_safe) + tl.sum(tl.exp(x - m_safe[:, None]), axis=1)
            m_run = m_new
            free = tl.load(used_ptr + b * I + ri, mask=imask, other=1) == 0
            x = tl.where(free[None, :], x, float("-inf"))
            last = tl.sum(tl.where(kk[None, :] == TOP - 1, top_v, 0.0), axis=1)
            if tl.sum((x > last[:, None]).to(tl.int32)) > 0:
                top_v, top_i = _merge_topk(top_v, top_i, x, ri[None, :] + tl.zeros([BLOCK_J, BLOCK_I], tl.int32), TOP)

        lse = m_run + tl.log(s_run)
        best_v = tl.sum(tl.where(kk[None, :] == 0, top_v, tl.zeros_like(top_v)), axis=1)
        best_i = tl.sum(tl.where(kk[None, :] == 0, top_i, tl.zeros_like(top_i)), axis=1)
        out = b * J + rj
        tl.store(best_ptr + out, tl.maximum(best_i, 0).to(tl.int64), mask=jmask)
        tl.store(prob_ptr + out, tl.exp(best_v - lse), mask=jmask)
        tl.store(lse_ptr + out, lse, mask=jmask)
        cand = out[:, None] * TOP + kk[None, :]
        tl.store(cand_idx_ptr + cand, top_i, mask=jmask[:, None])
        tl.store(cand_logit_ptr + cand, top_v, mask=jmask[:, None])
