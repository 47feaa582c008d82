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

Reading order: `generate` is the loop; `start` prepares the movies and the rows' starting state (a
`Batch`, which drops its finished rows itself, and a `RoundPlan`); each round is `eager_round` (torch)
or `fused_round` (the Triton kernels, the same decisions, replayable as a CUDA graph).
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
from .locking import DecodeState, lock_draws, lock_most_confident, resolve_conflicts


@dataclass
class DecodeResult:
    shots: torch.Tensor  # (B, J) int64 movie shot per slot; -1 in padded slots
    confidence: torch.Tensor  # (B, J) p_{j,i*} of the shot in the round the slot locked
    rounds: torch.Tensor  # (B,) encoder passes each movie needed


def cosine_schedule(round_index: int | list[int], total_rounds: int, lengths: torch.Tensor) -> torch.Tensor:
    """Slots locked after round `round_index` (1-based) of `total_rounds`: L - floor(L · cos(π/2 · r/T)).
    A list of rounds gives one row per round (the same numbers: one product and floor each)."""
    rounds = [round_index] if isinstance(round_index, int) else round_index
    factors = torch.tensor([math.cos(math.pi / 2 * r / total_rounds) for r in rounds], dtype=torch.float64)
    locked = lengths - torch.floor(lengths.to(torch.float64) * factors[:, None]).to(lengths.dtype)
    return locked[0] if isinstance(round_index, int) else locked


def greedy_schedule(round_index: int | list[int], total_rounds: int, lengths: torch.Tensor) -> torch.Tensor:
    """Slots locked after round `round_index`: one per round, most confident first, until all are (a list
    of rounds: one row each)."""
    if isinstance(round_index, int):
        return lengths.clamp(max=round_index)
    return torch.minimum(lengths, torch.tensor(round_index, dtype=lengths.dtype)[:, None])


# modes that lock a scheduled count of the most confident open slots each round (no Bernoulli draws)
SCHEDULES = {"topk": cosine_schedule, "greedy": greedy_schedule}


def select_remask(c, state: DecodeState, q: torch.Tensor, slots: torch.Tensor, mode: str, **kwargs) -> None:
    """The fused round on the decoder's state, in place: one launch, no host sync (kernels/select_remask.py)."""
    select_remask_triton(c, state.shots, state.confidence, state.locked, state.used, q, slots, mode=mode, **kwargs)


@dataclass
class RoundPlan:
    """How many rounds run and, for the scheduled modes (topk, greedy), which of them lock anything.

    A schedule depends on the lengths alone, so the rounds that lock a slot of some movie are known up
    front: a round whose count rises for no movie is skipped, encoder pass and all, and a movie whose
    last locking round is past leaves the batch without asking the device."""

    cap: int  # rounds at most
    schedule: object | None  # SCHEDULES[mode], or None for paper mode
    counts: torch.Tensor | None = None  # (T + 1, B) host: slots the schedule has locked after each round
    locks_in_round: torch.Tensor | None = None  # (T, B) bool, host: the rounds that lock some slot of a row
    last_round: torch.Tensor | None = None  # (B,) host: each row's last locking round

    @classmethod
    def for_rows(cls, config: DecodeConfig, free_lengths: torch.Tensor) -> "RoundPlan":
        """`free_lengths` (B,) on the host: the slots each row leaves open to the schedule (pins excluded)."""
        schedule = SCHEDULES.get(config.mode)
        cap = config.rounds_cap if config.mode != "greedy" else max(int(free_lengths.max()), 1)
        if schedule is None:
            return cls(cap, None)
        counts = schedule(list(range(cap + 1)), cap, free_lengths)
        locks = counts[1:] > counts[:-1]
        return cls(cap, schedule, counts, locks, (locks * torch.arange(1, cap + 1)[:, None]).amax(dim=0))

    def skips(self, r: int) -> bool:
        """Whether round r locks no slot of any row (host tensors: no device sync)."""
        return self.schedule is not None and not bool(self.locks_in_round[r - 1].any())


@dataclass
class Batch:
    """The rows still being decoded (one per movie, or per candidate of a movie) and all they carry.
    Tensors are on the device unless said; `finish` writes finished rows out and keeps the others."""

    rows: torch.Tensor  # (B,) host: each row's index in the output
    movie_state: object  # the backend's states of each row's movie (`select` keeps some rows)
    state: DecodeState
    q: torch.Tensor  # (B, J) cumulative confidence (paper mode)
    rounds: torch.Tensor  # (B,) the encoder passes that could lock a slot of the row
    slot_valid: torch.Tensor  # (B, J) bool: the row's real slots
    lengths: torch.Tensor  # (B,) trailer lengths
    free: torch.Tensor  # (B,) the lengths less the pinned slots: what a schedule spreads over its rounds
    movie_valid: torch.Tensor  # (B, I) bool
    seeds: torch.Tensor  # (B,) int64: the seed of each row's lock draws
    # fused rounds only: the schedule's columns of these rows (they read their plan from the device), and
    # the next round's slot inputs, which the select kernel keeps up to date as slots lock
    sched: torch.Tensor | None = None  # (T + 1, B)
    locks: torch.Tensor | None = None  # (T, B) bool
    slots: torch.Tensor | None = None  # (B, J, D)
    composition: int = 0  # changes whenever rows leave: a captured round is stale then
    prior_weight: float = 1.0  # the model's weight on its shot prior when decoding (ModelConfig.prior_weight)
    every_shot_real: bool = False  # no padded shot in any row (one movie): scoring has nothing to mask

    def prior(self) -> torch.Tensor | None:
        """The shot prior the rounds score with: the backend's b_i (refreshed with the states under full
        attention) times the model's decoding weight."""
        prior = self.movie_state.shot_prior
        return prior if prior is None or self.prior_weight == 1.0 else prior * self.prior_weight

    def write_out(self, done_host: torch.Tensor, out: DecodeResult) -> None:
        """Write rows `done_host` (bool over the batch, on the host) to `out`."""
        device = self.q.device
        rows, done = self.rows[done_host].to(device), done_host.to(device)
        out.shots[rows] = torch.where(self.slot_valid[done], self.state.shots[done], -1)
        out.confidence[rows] = torch.where(self.slot_valid[done], self.state.confidence[done], 0.0)
        out.rounds[rows] = self.rounds[done]

    def finish(self, done_host: torch.Tensor, out: DecodeResult) -> None:
        """Write rows `done_host` (bool over the batch, on the host) to `out` and drop them from every state."""
        device = self.q.device
        self.write_out(done_host, out)
        keep_host = (~done_host).nonzero().squeeze(1)
        keep = keep_host.to(device)
        self.rows = self.rows[keep_host]
        self.movie_state = self.movie_state.select(keep)
        self.state = DecodeState(*(t.index_select(0, keep) for t in (
            self.state.shots, self.state.confidence, self.state.locked, self.state.used)))
        for name in ("q", "rounds", "slot_valid", "lengths", "free", "movie_valid", "seeds"):
            setattr(self, name, getattr(self, name).index_select(0, keep))
        if self.sched is not None:
            self.sched, self.locks = self.sched.index_select(1, keep), self.locks.index_select(1, keep)
        self.slots = None
        self.composition += 1


@torch.inference_mode()
def generate(
    backend: Backend,
    movie: torch.Tensor | None,  # (B, I, D); None when `prepared` is given (the states are all that is read)
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
    prepared=None,  # the backend's `prepare` of these movies, made before (a kept state): no encoder pass
    prior_weight: float = 1.0,  # the model's decoding weight on its shot prior (ModelConfig.prior_weight)
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
    if movie is None and prepared is None:
        raise ValueError("generate needs the movie, or its prepared states")
    device = movie_valid.device
    every_shot_real = check_lengths(lengths, movie_valid, banned)
    sync_every = sync_every or (1 if device.type == "cpu" else 4)
    fused = use_triton(config.kernels, device, int(lengths.max()))  # the round as two Triton launches
    batch, plan = start(backend, movie, movie_valid, lengths, config, pins, banned, copies, seeds, fused, prepared)
    batch.prior_weight, batch.every_shot_real = float(prior_weight), every_shot_real
    J = batch.slot_valid.shape[1]
    out = DecodeResult(
        shots=torch.full((len(batch.rows), J), -1, dtype=torch.int64, device=device),
        confidence=torch.zeros(len(batch.rows), J, device=device),
        rounds=torch.zeros(len(batch.rows), dtype=torch.int64, device=device),
    )
    # Whole fused rounds as CUDA graphs: the backend's cached step (exact, never refreshed) and the kernels
    # are all device work with fixed shapes until a movie leaves the batch.
    replay = ReplayedRound(device) if (
        fused and device.type == "cuda" and getattr(backend, "cuda_graphs", False) and batch.movie_state.refresh_every == 0
    ) else None
    round_dev = torch.zeros((), dtype=torch.int64, device=device)  # a fused round reads its number here
    for r in range(1, plan.cap + 1):
        if plan.skips(r):
            continue
        if plan.schedule is not None:
            done = plan.last_round[batch.rows] < r  # the host's plan: no device sync
        elif (r - 1) % sync_every == 0:
            done = batch.state.locked.all(dim=1).cpu()  # the one host sync of such a round: which movies are done?
            if bool(done.all()):
                break
        else:
            done = None
        if done is not None and bool(done.any()):
            batch.finish(done, out)
        if not fused:
            eager_round(backend, batch, plan, config, temperature, r)
            continue
        if batch.slots is None:  # the select kernel writes the rows of slots as they lock
            batch.slots = slot_inputs(batch.movie_state.scoring_keys, batch.state.shots)
        round_dev.fill_(r)
        last = config.mode == "paper" and r == plan.cap
        if replay is not None and not last:
            replay(batch.composition, lambda: fused_round(backend, batch, config, temperature, round_dev))
            continue
        c = fused_round(backend, batch, config, temperature, round_dev)
        if last:  # out of rounds: fill what is left greedily from this round's predictions
            select_remask(c, batch.state, batch.q, batch.slots, "topk", need=(~batch.state.locked).sum(dim=1))
    if len(batch.rows):  # the rows still here are done: written out, nothing left to drop them from
        batch.write_out(torch.ones(len(batch.rows), dtype=torch.bool), out)
    return out


def check_lengths(lengths: torch.Tensor, movie_valid: torch.Tensor, banned: torch.Tensor | None) -> bool:
    """Each trailer length in 1..the movie's real shots (less its banned ones): no shot appears twice.
    Returns whether every shot of every movie is real (no padding), read from the same count."""
    B, I = movie_valid.shape
    if lengths.shape != (B,):
        raise InputError(f"expected {B} trailer lengths, one per movie, got shape {tuple(lengths.shape)}")
    real_shots = movie_valid.sum(dim=1).cpu()
    every_shot_real = bool((real_shots == I).all())
    if banned is not None:
        real_shots = real_shots - (banned.cpu() & movie_valid.cpu()).sum(dim=1)
    lengths = lengths.cpu()
    bad = (lengths < 1) | (lengths > real_shots)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise InputError(
            f"movie {k}: trailer length {int(lengths[k])} is not in 1..{int(real_shots[k])}, the number of "
            "its real shots" + (" not banned" if banned is not None else "") + " (no shot appears twice)"
        )
    return every_shot_real


def start(backend: Backend, movie, movie_valid, lengths, config: DecodeConfig, pins, banned, copies: int, seeds,
          fused: bool, prepared=None) -> tuple[Batch, RoundPlan]:
    """The movies' states (`prepare`, once per movie, shared by its copies) and every row's starting point:
    pinned slots locked on their shots, pinned and banned shots taken, padded slots locked."""
    B, I = movie_valid.shape
    device = movie_valid.device
    host_lengths = lengths.to(device="cpu", dtype=torch.int64)
    J = int(host_lengths.max())
    host_pins = torch.full((B, J), -1, dtype=torch.int64) if pins is None else pins.to("cpu", torch.int64)[:, :J]
    movie_state = prepared if prepared is not None else backend.prepare(movie, movie_valid, config.refresh_every)
    if copies > 1:  # the rows of the batch from here on: each movie `copies` times in a row, one prepare
        movie_state = movie_state.select(torch.arange(B, device=device).repeat_interleave(copies))
        host_lengths, host_pins = host_lengths.repeat_interleave(copies), host_pins.repeat_interleave(copies, dim=0)
        movie_valid = movie_valid.repeat_interleave(copies, dim=0)
        banned = None if banned is None else banned.repeat_interleave(copies, dim=0)
    rows = B * copies
    seeds = torch.full((rows,), config.seed, dtype=torch.int64) if seeds is None else seeds
    pinned = host_pins >= 0
    free = host_lengths - pinned.sum(dim=1)
    plan = RoundPlan.for_rows(config, free)
    lengths = host_lengths.to(device)
    slot_valid = torch.arange(J, device=device)[None, :] < lengths[:, None]
    pins_dev, pinned_dev = host_pins.to(device), pinned.to(device)
    used = torch.zeros(rows, I, dtype=torch.bool, device=device)
    used.scatter_(1, pins_dev.clamp(min=0), pinned_dev)
    if banned is not None:
        used |= banned.to(device)
    state = DecodeState(shots=pins_dev.clamp(min=0), confidence=pinned_dev.to(torch.float32),  # a pin is certain
                        locked=~slot_valid | pinned_dev, used=used)
    fused_plan = fused and plan.schedule is not None
    return Batch(
        rows=torch.arange(rows), movie_state=movie_state, state=state, q=torch.zeros(rows, J, device=device),
        rounds=torch.zeros(rows, dtype=torch.int64, device=device), slot_valid=slot_valid, lengths=lengths,
        free=free.to(device), movie_valid=movie_valid, seeds=seeds.to(device=device, dtype=torch.int64),
        sched=plan.counts.to(device) if fused_plan else None, locks=plan.locks_in_round.to(device) if fused_plan else None,
    ), plan


def eager_round(backend: Backend, batch: Batch, plan: RoundPlan, config: DecodeConfig, temperature: float,
                r: int) -> None:
    """Round r in torch: the step, the scoring, and the locks (paper: Bernoulli on the cumulative
    confidence, conflicts to the more probable claim; topk and greedy: the schedule's count, most
    confident first)."""
    state, device = batch.state, batch.q.device
    num_shots = state.used.shape[1]
    open_ = ~state.locked
    # a movie's steps count the passes that can lock some of its slots (the same alone or in any batch)
    batch.rounds += plan.locks_in_round[r - 1, batch.rows].to(device) if plan.schedule is not None else open_.any(dim=1)
    pred, pick, scored, basis, coords = round_predictions(backend, batch.movie_state, state.shots, open_,
                                                          batch.slot_valid)
    shot_valid = None if batch.every_shot_real else batch.movie_valid
    score = round_scorer(pred, scored, shot_valid, temperature, batch.prior(), rows=open_, basis=basis,
                         movie_coords=coords, pick=pick)
    if config.mode == "paper":
        best, prob = score(state.used)
        batch.q = torch.where(open_, (batch.q + prob).clamp(max=1.0), batch.q)
        wants = open_ & (lock_draws(batch.seeds, r, open_.shape[1], device) < batch.q)
        state.commit(resolve_conflicts(best, prob, wants, num_shots), best, prob)
        if r == plan.cap:  # out of rounds: fill what is left greedily from this round's predictions
            lock_most_confident(state, score, (~state.locked).sum(dim=1), num_shots)
    else:  # pinned slots are locked from the start: the schedule counts the slots they leave open
        need = plan.counts[r, batch.rows].to(device) - (state.locked & batch.slot_valid).sum(dim=1) + (
            batch.lengths - batch.free)
        lock_most_confident(state, score, need, num_shots)


def round_predictions(backend: Backend, movie_state, shots, open_, slot_valid) -> tuple:
    """(predictions, pick, the rows they are scored against, basis, movie_coords) for `round_scorer`: the
    backend's own predictions of the open slots in the output span, packed (`step_coords`), where it has
    them for this state, else `step`'s (B, J, D) (pick None), which the scorer maps by the state's
    output basis when it has one."""
    step_coords = getattr(backend, "step_coords", None)
    packed = None if step_coords is None else step_coords(movie_state, shots, open_, slot_valid)
    if packed is not None:
        return *packed, movie_state.movie_coords, None, None
    pred = backend.step(movie_state, slot_inputs(movie_state.scoring_keys, shots), open_, slot_valid)  # (B, J, D)
    return pred, None, movie_state.scoring_keys, movie_state.output_basis, movie_state.movie_coords


def fused_round(backend: Backend, batch: Batch, config: DecodeConfig, temperature: float, round_dev: torch.Tensor):
    """One round on the device alone: the step, the streamed scoring and the fused select + re-mask, with
    the decisions of `eager_round` (kernels/select_remask.py), the state updated in place. Every value
    that changes between rounds (the round, the schedule) it reads from device tensors, so a captured
    round replays right."""
    state = batch.state
    open_ = ~state.locked
    if config.mode != "paper":  # a movie's steps count the passes that can lock some of its slots
        batch.rounds.add_(batch.locks.index_select(0, round_dev.view(1) - 1).squeeze(0))
    else:
        batch.rounds.add_(open_.any(dim=1))
    pred = backend.step(batch.movie_state, batch.slots, open_, batch.slot_valid)  # (B, J, D)
    c = score_candidates(pred, batch.movie_state.scoring_keys, batch.movie_valid, state.used, temperature,
                         batch.prior())
    if config.mode == "paper":
        select_remask(c, state, batch.q, batch.slots, "paper", seed=batch.seeds, round_index=round_dev)
    else:  # pinned slots are locked from the start: the schedule counts the slots they leave open
        scheduled = batch.sched.index_select(0, round_dev.view(1)).squeeze(0)
        need = scheduled - (state.locked & batch.slot_valid).sum(dim=1) + (batch.lengths - batch.free)
        select_remask(c, state, batch.q, batch.slots, "topk", need=need)
    return c
