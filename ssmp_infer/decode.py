"""Self-corrective decoding: fill J trailer slots with distinct movie shots by iterative masked prediction.

The decoder drives a `Backend` it does not own: `prepare` once per batch (the movie's states), then
one `step` per round (the slots' predicted features; under prefix attention only the slot rows are
computed, against the movie's cached keys and values). Then, per open slot, `score` finds the best
still-unused shot i* and its probability p_{j,i*} under P = softmax over all real shots.

mode "paper" (SSMP): q_j ← min(q_j + p_{j,i*}, 1); the slot locks i* with probability q_j (seeded
    Bernoulli), else it is re-masked and predicted again next round with more of the trailer fixed.
    When two slots lock the same shot in one round, the more probable claim keeps it and the other is
    re-masked (ties: the lower slot). After `max_rounds` passes the open slots are filled greedily.
mode "topk" (MaskGIT): after round r of T, L - floor(L · cos(π/2 · r/T)) slots are locked; the most
    confident open slots lock. A slot that loses its shot to a more confident one is re-scored over
    the shots still free (no new encoder pass), so each round locks exactly the scheduled count. A
    round whose count rises for no movie (more rounds than slots) is skipped: no encoder pass.
mode "greedy" (the decoding ablation): topk's path with one lock per round, L rounds: the single most
    confident open slot locks, every other slot is re-masked and predicted again.

A locked slot never changes and a locked shot is never offered again, so no shot appears twice.
All state is batched (B movies, padded); padded slots count as locked from the start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .backends import Backend
from .backends.cuda_graphs import ReplayedRound
from .config import DecodeConfig
from .data import slot_inputs
from .errors import InputError
from .kernels import round_scorer, score_candidates, select_remask_triton, use_triton


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


def greedy_schedule(round_index: int, total_rounds: int, lengths: torch.Tensor) -> torch.Tensor:
    """Slots locked after round `round_index`: one per round, most confident first, until all are."""
    return lengths.clamp(max=round_index)


# modes that lock a scheduled count of the most confident open slots each round (no Bernoulli draws)
SCHEDULES = {"topk": cosine_schedule, "greedy": greedy_schedule}


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


def select_remask(c, state: DecodeState, q: torch.Tensor, slots: torch.Tensor, mode: str, **kwargs) -> None:
    """The fused round on the decoder's state, in place: one launch, no host sync (kernels/select_remask.py)."""
    select_remask_triton(c, state.shots, state.confidence, state.locked, state.used, q, slots, mode=mode, **kwargs)


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


@torch.inference_mode()
def generate(
    backend: Backend,
    movie: torch.Tensor,  # (B, I, D)
    movie_valid: torch.Tensor,  # (B, I) bool
    lengths: torch.Tensor,  # (B,) int64 trailer length per movie, 1 <= L <= real shots
    config: DecodeConfig,
    temperature: float,
    sync_every: int | None = None,
    *,
    pins: torch.Tensor | None = None,  # (B, J) int64: the shot pinned in each slot, -1 for none
    banned: torch.Tensor | None = None,  # (B, I) bool: shots never to be chosen
    copies: int = 1,
    seeds: torch.Tensor | None = None,  # (B * copies,) int64 per output row; default config.seed
) -> DecodeResult:
    """Decode a padded batch: `backend.prepare` once, `backend.step` per round, finished movies leave.

    `sync_every`: paper mode asks the device whether any movie has finished (a host sync) every this
    many rounds; default 1 on the CPU, where a sync costs nothing, 4 on an accelerator. Finished
    movies drop out of the batch (their states too), so a long trailer does not drag short ones along.

    Editor controls: a pinned slot starts locked on its shot (which no other slot is offered); a banned
    shot starts as if taken, so it is never chosen, though the encoder still reads it as context and it
    still counts in every slot's softmax. `copies` decodes each movie that many times in a row from one
    `prepare` (candidates: row b · copies + c), each row with its own seed from `seeds`.
    Pins and bans are checked by the caller (`ssmp_infer.controls`); here they only must fit.
    """
    B, I, _ = movie.shape
    device = movie.device
    # One host copy before the loop: the length check and the topk plan both read the lengths there.
    host_lengths = lengths.to(device="cpu", dtype=torch.int64)
    real_shots = movie_valid.sum(dim=1).cpu()
    if host_lengths.shape != (B,):
        raise InputError(f"expected {B} trailer lengths, one per movie, got shape {tuple(host_lengths.shape)}")
    if banned is not None:
        real_shots = real_shots - (banned.cpu() & movie_valid.cpu()).sum(dim=1)
    bad = (host_lengths < 1) | (host_lengths > real_shots)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise InputError(
            f"movie {k}: trailer length {int(host_lengths[k])} is not in 1..{int(real_shots[k])}, the number of "
            "its real shots" + (" not banned" if banned is not None else "") + " (no shot appears twice)"
        )
    sync_every = sync_every or (1 if device.type == "cpu" else 4)
    fused = use_triton(config.kernels, device, int(host_lengths.max()))  # the round as two Triton launches
    J = int(host_lengths.max())
    host_pins = torch.full((B, J), -1, dtype=torch.int64) if pins is None else pins.to("cpu", torch.int64)[:, :J]
    movie_state = backend.prepare(movie, movie_valid, config.refresh_every)
    if copies > 1:  # the rows of the batch from here on: each movie `copies` times in a row, one prepare
        movie_state = movie_state.select(torch.arange(B, device=device).repeat_interleave(copies))
        host_lengths, host_pins = host_lengths.repeat_interleave(copies), host_pins.repeat_interleave(copies, dim=0)
        movie_valid = movie_valid.repeat_interleave(copies, dim=0)
        banned = None if banned is None else banned.repeat_interleave(copies, dim=0)
    rows_total = B * copies
    if seeds is None:
        seeds = torch.full((rows_total,), config.seed, dtype=torch.int64)
    seeds = seeds.to(device=device, dtype=torch.int64)
    pinned = host_pins >= 0  # (B', J), host
    # The schedules of topk and greedy spread the slots left open by the pins over the rounds.
    free_lengths = host_lengths - pinned.sum(dim=1)
    lengths = host_lengths.to(device)
    slot_valid = torch.arange(J, device=device)[None, :] < lengths[:, None]  # (B', J)
    pins_dev, pinned_dev = host_pins.to(device), pinned.to(device)
    used = torch.zeros(rows_total, I, dtype=torch.bool, device=device)
    used.scatter_(1, pins_dev.clamp(min=0), pinned_dev)
    if banned is not None:
        used |= banned.to(device)
    state = DecodeState(
        shots=pins_dev.clamp(min=0),
        confidence=pinned_dev.to(torch.float32),  # an editor's pin is certain
        locked=~slot_valid | pinned_dev,
        used=used,
    )
    out = DecodeResult(
        shots=torch.full((rows_total, J), -1, dtype=torch.int64, device=device),
        confidence=torch.zeros(rows_total, J, device=device),
        rounds=torch.zeros(rows_total, dtype=torch.int64, device=device),
    )
    q = torch.zeros(rows_total, J, device=device)  # cumulative confidence (paper mode)
    rounds = torch.zeros(rows_total, dtype=torch.int64, device=device)
    active = torch.arange(rows_total)  # on the host: the original row of each movie still in the batch
    schedule = SCHEDULES.get(config.mode)
    free = free_lengths.to(device)  # per row on the device: the schedule's lengths
    cap = config.rounds_cap if config.mode != "greedy" else max(int(free_lengths.max()), 1)
    if schedule is not None:
        # The schedule depends on the lengths alone, so which rounds lock anything is known up front. A
        # round whose count rises for no movie would lock nothing: skip it, encoder pass and all.
        counts = torch.stack([schedule(r, cap, free_lengths) for r in range(cap + 1)])  # (T + 1, B')
        locks_in_round = counts[1:] > counts[:-1]  # (T, B')
        round_locks = locks_in_round.any(dim=1).tolist()
        # after its last locking round a movie is done: it leaves the batch (known on the host, no sync)
        last_round = (locks_in_round * torch.arange(1, cap + 1)[:, None]).amax(dim=0)  # (B',), host
    # The fused round reads its round number, its schedule and its step counts from the device, so that
    # a captured round (ReplayedRound, CUDA graphs) replays right: per batch composition, the columns of
    # the movies still in it.
    round_dev = torch.zeros((), dtype=torch.int64, device=device)
    if fused and schedule is not None:
        counts_dev, locks_dev = counts.to(device), locks_in_round.to(device)
        sched_now, locks_now = counts_dev, locks_dev
    # Whole rounds as CUDA graphs: the backend's cached step (exact, never refreshed) and the fused kernels
    # are all device work with fixed shapes until a movie leaves the batch.
    replay = ReplayedRound(device) if (
        fused and device.type == "cuda" and getattr(backend, "cuda_graphs", False) and movie_state.refresh_every == 0
    ) else None
    composition = 0  # changes whenever movies leave: a captured round is stale then

    def finish(done_host: torch.Tensor) -> None:
        """Write the results of rows `done_host` (bool over the batch, on the host) out and drop them from
        every state."""
        nonlocal movie_state, state, q, rounds, active, slot_valid, lengths, movie_valid, seeds, free
        nonlocal composition, sched_now, locks_now
        rows, done = active[done_host].to(device), done_host.to(device)
        out.shots[rows] = torch.where(slot_valid[done], state.shots[done], -1)
        out.confidence[rows] = torch.where(slot_valid[done], state.confidence[done], 0.0)
        out.rounds[rows] = rounds[done]
        keep_host = (~done_host).nonzero().squeeze(1)
        active, keep = active[keep_host], keep_host.to(device)
        movie_state = movie_state.select(keep)
        state = DecodeState(*(t.index_select(0, keep) for t in (state.shots, state.confidence, state.locked, state.used)))
        q, rounds = q.index_select(0, keep), rounds.index_select(0, keep)
        slot_valid, lengths, movie_valid = slot_valid[keep], lengths[keep], movie_valid[keep]
        seeds, free = seeds[keep], free[keep]
        composition += 1
        if fused and schedule is not None:
            active_dev = active.to(device)
            sched_now, locks_now = counts_dev.index_select(1, active_dev), locks_dev.index_select(1, active_dev)

    def fused_round():
        """One round on the device alone: the step, the streamed scoring and the fused select + re-mask.
        Every host value it needs (the round, the schedule) it reads from device tensors."""
        open_ = ~state.locked
        if schedule is not None:  # a movie's steps count the passes that can lock some of its slots
            rounds.add_(locks_now.index_select(0, round_dev.view(1) - 1).squeeze(0))
        else:
            rounds.add_(open_.any(dim=1))
        pred = backend.step(movie_state, slots, open_, slot_valid)  # (B, J, D)
        c = score_candidates(pred, movie_state.scoring_keys, movie_valid, state.used, temperature, movie_state.shot_prior)
        if config.mode == "paper":
            select_remask(c, state, q, slots, "paper", seed=seeds, round_index=round_dev)
        else:  # pinned slots are locked from the start: the schedule counts the slots they leave open
            scheduled = sched_now.index_select(0, round_dev.view(1)).squeeze(0)
            need = scheduled - (state.locked & slot_valid).sum(dim=1) + (lengths - free)
            select_remask(c, state, q, slots, "topk", need=need)
        return c

    slots = None  # the fused round writes each newly locked slot's input row; rebuilt when movies leave
    for r in range(1, cap + 1):
        if schedule is not None:
            if not round_locks[r - 1]:
                continue
            done = last_round[active] < r  # the host's plan: no device sync
            if bool(done.any()):
                finish(done)
        open_ = ~state.locked
        if config.mode == "paper" and (r - 1) % sync_every == 0:
            done = (~open_.any(dim=1)).cpu()  # the one host sync of such a round: which movies are done?
            if bool(done.all()):
                break
            if bool(done.any()):
                finish(done)
                open_ = ~state.locked
        if fused:  # the same decisions as below (kernels/select_remask.py), state updated in place
            if slots is None or slots.shape[0] != len(active):  # the fused round writes locked slots' rows
                slots = slot_inputs(movie_state.scoring_keys, state.shots)
            round_dev.fill_(r)
            last = config.mode == "paper" and r == cap
            if replay is not None and not last:
                replay(composition, fused_round)
            else:
                c = fused_round()
                if last:  # out of rounds: fill what is left greedily from this round's predictions
                    select_remask(c, state, q, slots, "topk", need=(~state.locked).sum(dim=1))
            continue
        # a movie's steps count the passes that can lock some of its slots (the same alone or in any batch)
        rounds += locks_in_round[r - 1, active].to(device) if schedule is not None else open_.any(dim=1)
        slots = slot_inputs(movie_state.scoring_keys, state.shots)
        pred = backend.step(movie_state, slots, open_, slot_valid)  # (B, J, D)
        score = round_scorer(pred, movie_state.scoring_keys, movie_valid, temperature, movie_state.shot_prior, rows=open_,
                             basis=movie_state.output_basis, movie_coords=movie_state.movie_coords)

        if config.mode == "paper":
            best, prob = score(state.used)
            q = torch.where(open_, (q + prob).clamp(max=1.0), q)
            wants = open_ & (lock_draws(seeds, r, J, device) < q)
            state.commit(resolve_conflicts(best, prob, wants, I), best, prob)
            if r == cap:  # out of rounds: fill what is left greedily from this round's predictions
                lock_most_confident(state, score, (~state.locked).sum(dim=1), I)
        else:
            # pinned slots are locked from the start: the schedule counts the slots they leave open
            need = schedule(r, cap, free) - (state.locked & slot_valid).sum(dim=1) + (lengths - free)
            lock_most_confident(state, score, need, I)

    if len(active):
        finish(torch.ones(len(active), dtype=torch.bool))
    return out
