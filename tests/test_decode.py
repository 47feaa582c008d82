import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssmp_infer.backends import TorchBackend
from ssmp_infer.config import DecodeConfig, ModelConfig
from ssmp_infer.data import pad_batch
from ssmp_infer.decode import (
    DecodeState,
    cosine_schedule,
    generate,
    lock_draws,
    lock_most_confident,
    resolve_conflicts,
)
from ssmp_infer.engine import Engine
from ssmp_infer.kernels import round_scorer, score_slots_ref
from ssmp_infer.locking import lock_one_at_a_time
from ssmp_infer.model import SSMPEncoder

from .helpers import assert_close

D = 16
CFG = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, feature_dim=D, dropout=0.0, temperature=0.05)


class RecordingBackend(TorchBackend):
    """The real torch backend, remembering what each round asked of it."""

    def __init__(self, model):
        super().__init__(model)
        self.calls = []

    def step(self, state, slots, slot_masked, slot_valid):
        self.calls.append((slots.clone(), slot_masked.clone()))
        return super().step(state, slots, slot_masked, slot_valid)


def tiny_engine(seed=0, cfg=CFG):
    torch.manual_seed(seed)
    return Engine(cfg, TorchBackend(SSMPEncoder(cfg)))


def movies(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, D)).astype(np.float32) for n in sizes]


def decode_batch(backend, feats, lengths, config):
    movie, valid = pad_batch(feats)
    return generate(backend, movie, valid, torch.tensor(lengths), config, CFG.temperature)


@pytest.mark.parametrize("mode", ["paper", "topk"])
def test_trailers_fill_every_slot_with_distinct_real_shots(mode):
    engine = tiny_engine()
    feats = movies([30, 7, 19])
    lengths = [12, 7, 1]  # J = I for the second movie: every shot must be used exactly once
    for trailer, m, n in zip(engine.generate_batch(feats, lengths, DecodeConfig(mode=mode)), feats, lengths):
        assert trailer.length == n == len(trailer.shots) == len(trailer.confidence)
        assert len(set(trailer.shots)) == n
        assert all(0 <= s < m.shape[0] for s in trailer.shots)
        assert all(0 < c <= 1 for c in trailer.confidence)
    assert sorted(engine.generate_batch(feats, lengths, DecodeConfig(mode=mode))[1].shots) == list(range(7))


@pytest.mark.parametrize("mode", ["paper", "topk"])
def test_same_seed_same_trailer_and_batching_changes_nothing(mode):
    engine = tiny_engine()
    feats = movies([40, 23, 31], seed=1)
    lengths = [9, 5, 11]
    config = DecodeConfig(mode=mode, seed=7)
    batched = engine.generate_batch(feats, lengths, config)
    again = engine.generate_batch(feats, lengths, config)
    alone = [engine.generate(f, n, config) for f, n in zip(feats, lengths)]
    for a, b, c in zip(batched, again, alone):
        assert a.shots == b.shots == c.shots
        assert a.steps == c.steps


def test_paper_mode_seed_drives_the_draws():
    # a flat softmax (high temperature) keeps confidences low, so the Bernoulli draws decide the order
    cfg = ModelConfig(**{**CFG.to_dict(), "temperature": 5.0})
    engine = tiny_engine(cfg=cfg)
    feats = movies([50], seed=2)
    results = {tuple(engine.generate(feats[0], 10, DecodeConfig(seed=s)).shots) for s in range(6)}
    assert len(results) > 1


def test_locked_slots_stay_locked_on_their_shot():
    torch.manual_seed(0)
    backend = RecordingBackend(SSMPEncoder(ModelConfig(**{**CFG.to_dict(), "temperature": 1.0})))
    feats = movies([25], seed=3)
    result = decode_batch(backend, feats, [8], DecodeConfig(seed=1))
    movie = F.normalize(torch.from_numpy(feats[0]), dim=-1)  # the decoder feeds unit rows
    masked_per_round = [m[0] for _, m in backend.calls]
    assert len(backend.calls) == int(result.rounds[0]) > 1
    for before, after in zip(masked_per_round, masked_per_round[1:]):
        assert not (after & ~before).any(), "a locked slot was re-opened"
    for slots, masked in backend.calls:  # a locked slot always feeds its final shot's feature
        locked = ~masked[0]
        assert_close(slots[0, locked], movie[result.shots[0, locked]], atol=0, rtol=0)


def test_topk_locks_exactly_the_scheduled_counts():
    torch.manual_seed(0)
    backend = RecordingBackend(SSMPEncoder(CFG))
    feats = movies([40, 26], seed=4)
    lengths, T = [17, 9], 5
    result = decode_batch(backend, feats, lengths, DecodeConfig(mode="topk", steps=T))
    L = torch.tensor(lengths)
    # round r sees the slots locked after round r - 1 unmasked
    for r, (_, masked) in enumerate(backend.calls, start=1):
        expected_locked = cosine_schedule(r - 1, T, L) if r > 1 else torch.zeros(2, dtype=torch.int64)
        real = torch.arange(masked.shape[1])[None, :] < L[:, None]
        assert torch.equal((~masked & real).sum(dim=1), expected_locked)
    assert len(backend.calls) == T
    assert (result.shots[0] >= 0).sum() == 17 and (result.shots[1] >= 0).sum() == 9


def test_cosine_schedule():
    L = torch.tensor([1, 7, 70])
    counts = torch.stack([cosine_schedule(r, 8, L) for r in range(0, 9)])
    assert torch.equal(counts[0], torch.zeros(3, dtype=torch.int64))
    assert torch.equal(counts[-1], L)
    assert (counts[1:] >= counts[:-1]).all()
    assert int(cosine_schedule(4, 8, torch.tensor([70]))) == 70 - math.floor(70 * math.cos(math.pi / 4))


def test_paper_mode_round_cap_fills_greedily():
    cfg = ModelConfig(**{**CFG.to_dict(), "temperature": 50.0})  # p ≈ 1/I: almost nothing locks by chance
    engine = tiny_engine(cfg=cfg)
    feats = movies([60], seed=5)
    trailer = engine.generate(feats[0], 20, DecodeConfig(max_rounds=2))
    assert trailer.steps == 2
    assert len(set(trailer.shots)) == 20


def test_conflicts_go_to_the_more_confident_slot():
    best = torch.tensor([[3, 3, 5, 3, 5, 1]])
    prob = torch.tensor([[0.2, 0.6, 0.3, 0.6, 0.1, 0.9]])
    wants = torch.tensor([[True, True, True, True, True, False]])
    win = resolve_conflicts(best, prob, wants, num_shots=8)
    # shot 3: slots 1 and 3 tie at 0.6 -> the lower slot (1); shot 5: slot 2 (0.3 > 0.1); slot 5 did not want
    assert win.tolist() == [[False, True, True, False, False, False]]


def greedy_one_at_a_time(scores, need):
    """The plain definition: repeatedly lock the single most confident open slot on its best free shot."""
    J, I = scores.shape
    probs = scores.softmax(-1)
    shots, used, open_ = [-1] * J, set(), set(range(J))
    for _ in range(need):
        best = None
        for j in sorted(open_):
            i = max((i for i in range(I) if i not in used), key=lambda i: (scores[j, i], -i))
            if best is None or probs[j, i] > best[2]:
                best = (j, i, probs[j, i])
        shots[best[0]] = best[1]
        used.add(best[1])
        open_.remove(best[0])
    return shots


@pytest.mark.parametrize("seed", range(5))
def test_lock_most_confident_equals_one_at_a_time_greedy(seed):
    g = torch.Generator().manual_seed(seed)
    J, I = 9, 6 + seed  # few shots: many conflicts
    scores = torch.randn(1, J, I, generator=g) * 3
    # several slots share their favourite shot
    scores[0, :4, 0] += 10
    need = min(J, I)
    state = DecodeState(
        shots=torch.zeros(1, J, dtype=torch.int64),
        confidence=torch.zeros(1, J),
        locked=torch.zeros(1, J, dtype=torch.bool),
        used=torch.zeros(1, I, dtype=torch.bool),
    )

    def score(used):
        best_score, best = scores.masked_fill(used[:, None, :], float("-inf")).max(-1)
        return best, torch.exp(best_score - torch.logsumexp(scores, -1))

    lock_most_confident(state, score, torch.tensor([need]), I)
    got = torch.where(state.locked, state.shots, -1)[0].tolist()
    assert got == greedy_one_at_a_time(scores[0], need)


def lock_case(seed: int, kind: str):
    """A round's scores and a decoding state for the one-at-a-time locking: B movies (the later ones
    padded), some slots already locked on distinct shots, the open slots' fields poisoned."""
    g = torch.Generator().manual_seed(seed)
    B, J = 3, 5 + seed % 20
    I = J + 3 + seed % 40
    movie, prior = torch.randn(B, I, D, generator=g), 3 * torch.randn(B, I, generator=g)
    if kind == "duplicates":  # three distinct shots repeated, prior and all: exact ties in every row,
        copy_of = torch.randint(0, 3, (I,), generator=g)  # more of them than a slot's list holds
        movie, prior = movie[:, copy_of], prior[:, copy_of]
    valid = torch.ones(B, I, dtype=torch.bool)
    valid[1, I - 2:] = False
    pred = torch.randn(B, J, D, generator=g)
    if kind == "shared favourite":  # every slot wants the same shots: a conflict at nearly every lock
        pred = pred[:, :1] + 0.05 * pred
    if kind == "twin slots":  # slots with equal predictions: exact ties between slots (the lower slot locks)
        pred = pred[:, torch.randint(0, 2, (J,), generator=g)]
    prior = prior.masked_fill(~valid, float("-inf"))
    locked = torch.rand(B, J, generator=g) < 0.3
    shots = torch.full((B, J), -5, dtype=torch.int64)  # poison: an open slot's shot must be written
    used = torch.zeros(B, I, dtype=torch.bool)
    for b in range(B):
        taken = torch.randperm(I - 2, generator=g)[:J]
        shots[b][locked[b]] = taken[locked[b]]
        used[b, taken[locked[b]]] = True
    confidence = torch.where(locked, 0.5, -3.0)
    open_ = ~locked
    need = torch.tensor([int(torch.randint(0, int(n) + 1, (), generator=g)) for n in open_.sum(dim=1)])
    need[0] = open_[0].sum()  # one movie locks every open slot
    unit = F.normalize(movie, dim=-1)
    scores = round_scorer(pred, unit, valid, 0.1, prior, rows=open_ if seed % 2 else None)
    return scores, DecodeState(shots, confidence, locked, used), need, I


@pytest.mark.parametrize("kind", ["random", "shared favourite", "duplicates", "twin slots"])
@pytest.mark.parametrize("seed", range(6))
def test_lock_one_at_a_time_makes_the_batched_loops_locks_bit_for_bit(seed, kind):
    scores, state, need, I = lock_case(seed, kind)
    loop = DecodeState(*(t.clone() for t in (state.shots, state.confidence, state.locked, state.used)))
    lock_most_confident(loop, lambda used: scores(used), need.clone(), I)  # a plain callable: the batched loop
    lock_one_at_a_time(state, scores, need.clone())
    for name in ("shots", "confidence", "locked", "used"):
        assert torch.equal(getattr(state, name), getattr(loop, name)), name
    newly = state.locked.sum(dim=1) - (state.confidence == 0.5).sum(dim=1)
    assert newly.tolist() == need.tolist()  # each movie locked exactly what it needed
    assert (state.shots[~state.locked] == -5).all()  # open slots untouched
    for b in range(state.shots.shape[0]):  # no shot twice in a movie
        mine = state.shots[b][state.locked[b]]
        assert len(set(mine.tolist())) == len(mine)


def test_lock_most_confident_takes_the_one_at_a_time_path_for_round_scores(monkeypatch):
    import ssmp_infer.locking as locking

    calls = []
    monkeypatch.setattr(locking, "lock_one_at_a_time", lambda *a: calls.append(a))
    scores, state, need, I = lock_case(0, "random")
    locking.lock_most_confident(state, scores, need, I)
    assert len(calls) == 1


def test_score_slots_reference_against_explicit_softmax():
    g = torch.Generator().manual_seed(0)
    B, J, I = 2, 5, 7
    pred, movie = torch.randn(B, J, D, generator=g), torch.randn(B, I, D, generator=g)
    valid = torch.ones(B, I, dtype=torch.bool)
    valid[1, 5:] = False
    used = torch.zeros(B, I, dtype=torch.bool)
    used[0, [1, 4]] = True
    unit = torch.nn.functional.normalize(movie, dim=-1)
    best, prob = score_slots_ref(pred, unit, valid, used, temperature=0.3)
    for b in range(B):
        for j in range(J):
            real = valid[b].nonzero().flatten()
            s = torch.nn.functional.cosine_similarity(pred[b, j][None], movie[b, real], dim=-1) / 0.3
            p = s.softmax(0)  # over every real shot, used ones included
            candidates = [k for k in range(len(real)) if not used[b, real[k]]]
            k = max(candidates, key=lambda k: s[k])
            assert int(best[b, j]) == int(real[k])
            assert abs(float(prob[b, j]) - float(p[k])) < 1e-5


def test_lock_draws_are_uniform_and_reproducible():
    u = lock_draws(seed=3, round_index=1, num_slots=20000, device=torch.device("cpu"))
    assert torch.equal(u, lock_draws(3, 1, 20000, torch.device("cpu")))
    assert ((u >= 0) & (u < 1)).all()
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float((u < 0.1).float().mean()) - 0.1) < 0.01
    other_round = lock_draws(3, 2, 20000, torch.device("cpu"))
    other_seed = lock_draws(4, 1, 20000, torch.device("cpu"))
    assert abs(float(torch.corrcoef(torch.stack([u, other_round]))[0, 1])) < 0.03
    assert (u != other_seed).float().mean() > 0.99


class ScaledPriorBackend(TorchBackend):
    """The torch backend with its shot prior multiplied by `weight` in every state it hands out."""

    def __init__(self, model, weight):
        super().__init__(model)
        self.weight = weight

    def prepare(self, movie, movie_valid, refresh_every=None):
        state = super().prepare(movie, movie_valid, refresh_every)
        state.shot_prior = state.shot_prior * self.weight
        return state


@pytest.mark.parametrize("kernels", ["torch", "triton"])
@pytest.mark.parametrize("mode", ["paper", "topk"])
def test_the_prior_weight_scales_the_shot_prior_in_every_round(mode, kernels):
    """Decoding with prior_weight w gives the trailers of a model whose shot prior is w times larger; a
    large weight makes the trailer the prior's top shots (what the weight is for), and 1 changes nothing."""
    cfg = ModelConfig(**{**CFG.to_dict(), "shot_prior": True})
    torch.manual_seed(3)
    model = SSMPEncoder(cfg).eval()
    with torch.no_grad():  # a prior that differs across shots, as a trained one does
        model.shot_head.weight.normal_(0, 2.0)
    feats = movies([40, 25], seed=4)
    movie, valid = pad_batch(feats)
    if kernels == "triton":
        pytest.importorskip("triton", reason="the fused rounds need triton (in its interpreter here)")
    lengths, config = torch.tensor([6, 4]), DecodeConfig(mode=mode, seed=1, kernels=kernels)
    plain = TorchBackend(model)

    def shots(backend, weight):
        return generate(backend, movie, valid, lengths, config, cfg.temperature, prior_weight=weight).shots.tolist()

    assert shots(plain, 2.5) == shots(ScaledPriorBackend(model, 2.5), 1.0)
    assert shots(plain, 1.0) == shots(ScaledPriorBackend(model, 1.0), 1.0)
    assert shots(plain, 2.5) != shots(plain, 1.0)  # the weight reaches the rounds
    prior = plain.prepare(movie, valid).shot_prior
    for row, n in enumerate(lengths.tolist()):
        top = set(prior[row].topk(n).indices.tolist())
        assert set(shots(plain, 100.0)[row][:n]) == top
