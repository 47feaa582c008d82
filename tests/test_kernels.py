"""The Triton round kernels against their torch references (kernels/score_slots.py, kernels/select_remask.py).

Without a GPU they run in Triton's interpreter on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1
before anything imports triton) at small sizes; on a GPU the same tests run at full feature size.
Every buffer the scoring kernel writes is poisoned first (NaN, -7), and the slot-input rows the
select kernel must not write are NaN: an element left unwritten, or written where it should not be,
fails.
"""

import argparse
import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ssmp_infer.kernels import (
    HAS_TRITON,
    INTERPRETED,
    round_scorer,
    score_slots_ref,
    use_triton,
)

from ssmp_infer import kernels
from ssmp_infer.config import MODES, DecodeConfig
from ssmp_infer.errors import InputError
from ssmp_infer.model import output_basis, unit_score_logits

from .helpers import assert_close, with_position_keys

# the modules (the package re-exports a function named score_slots, which `from ... import` would give)
score_module = importlib.import_module("ssmp_infer.kernels.score_slots")
select_module = importlib.import_module("ssmp_infer.kernels.select_remask")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"
needs_kernels = pytest.mark.skipif(
    not HAS_TRITON or (not ON_GPU and not INTERPRETED),
    reason="the Triton kernels need triton and a CUDA device, or TRITON_INTERPRET=1 (tests/conftest.py sets it without a GPU)",
)
D = 1024 if ON_GPU else 24  # the interpreter runs every tile op in numpy: keep the product small there
TAU = 0.05
TOP = score_module.TOP
# (atol, rtol) on probabilities and on logits / log-sum-exp; half inputs are multiplied exactly and summed
# in fp32 by both paths, so the tolerances differ only by what a GPU's MMA order may add.
TOL = {
    torch.float32: ((2e-6, 1e-5), (5e-5, 1e-6)),
    torch.bfloat16: ((5e-6, 5e-5), (1e-4, 1e-5)),
    torch.float16: ((5e-6, 5e-5), (1e-4, 1e-5)),
}


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    def empty(shape, dtype, device):
        out = torch.empty(shape, dtype=dtype, device=device)
        return out.fill_(float("nan") if dtype.is_floating_point else -7)

    monkeypatch.setattr(score_module, "_empty", empty)


def padded_batch(J, I, lengths, dtype=torch.float32, prior=False, used_fraction=0.3, seed=0):
    """B = len(lengths) movies padded to I shots; `used` leaves at least J real shots of each free."""
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    movie = F.normalize(torch.randn(B, I, D, generator=g), dim=-1)
    pred = torch.randn(B, J, D, generator=g)
    valid = torch.arange(I)[None, :] < torch.tensor(lengths)[:, None]
    used = (torch.rand(B, I, generator=g) < used_fraction) & valid
    for b, n in enumerate(lengths):  # keep the first min(J, n) real shots free
        used[b, : min(J, n)] = False
    shot_prior = 0.5 * torch.randn(B, I, generator=g).to(DEVICE) if prior else None
    return pred.to(DEVICE, dtype), movie.to(DEVICE, dtype), valid.to(DEVICE), used.to(DEVICE), shot_prior


def dyadic_unit_rows(shape, generator: torch.Generator) -> torch.Tensor:
    """Unit rows of 16 entries ±1/4 (the rest 0): every dot product among them, and their norms, are exact
    in float32 whatever the summation order. Exact ties must stay ties in the interpreter, whose tl.dot
    is numpy's matmul: OpenBLAS may sum a row differently by where it sits in the block (measured on an
    AMD EPYC host: identical rows 1e-6 apart), and that would decide a tie by rounding, not by the rule."""
    *lead, dim = shape
    assert dim >= 16
    keys = torch.rand(*lead, dim, generator=generator)
    on = keys.argsort(dim=-1).argsort(dim=-1) < 16  # 16 random positions per row
    signs = torch.where(torch.rand(*lead, dim, generator=generator) < 0.5, -0.25, 0.25)
    return torch.where(on, signs, 0.0)


def explicit_scores(pred, movie, valid, used, shot_prior):
    """In float64, from the definition: (lse, sorted free logits, their shots; ties to the lower shot)."""
    s = F.normalize(pred.double(), dim=-1) @ movie.double().transpose(1, 2) / TAU
    if shot_prior is not None:
        s = s + shot_prior.double()[:, None, :]
    s = s.masked_fill(~valid[:, None, :], float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    free = s.masked_fill(used[:, None, :], float("-inf"))
    values, shots = torch.sort(free, dim=-1, descending=True, stable=True)
    return lse, values, shots


def lengths_for(I):
    return [I, max(1, I - 2), max(1, (I + 1) // 2)]  # B = 3, every movie its own length


SMALL = [(J, I) for J in (1, 7) for I in (1, J)]
BIG = [(7, 4097, torch.float32, True), (1, 4097, torch.bfloat16, False), (7, 4097, torch.float16, False)]


@needs_kernels
@pytest.mark.parametrize(
    "J,I,dtype,prior",
    [(J, I, dt, p) for J, I in dict.fromkeys(SMALL) for dt in TOL for p in (False, True)] + BIG,
    ids=lambda v: str(v).replace("torch.", "") if not isinstance(v, bool) else ("prior" if v else "no-prior"),
)
def test_score_slots_matches_the_definition(J, I, dtype, prior):
    pred, movie, valid, used, shot_prior = padded_batch(J, I, lengths_for(I), dtype, prior)
    c = score_module.score_candidates(pred, movie, valid, used, TAU, shot_prior)
    best, prob, lse = score_module.score_slots_triton(pred, movie, valid, used, TAU, shot_prior)
    ref_best, ref_prob = score_slots_ref(pred, movie, valid, used, TAU, shot_prior)
    exp_lse, values, shots = explicit_scores(pred, movie, valid, used, shot_prior)
    (p_atol, p_rtol), (l_atol, l_rtol) = TOL[dtype]

    assert best.dtype == torch.int64 and torch.equal(best, ref_best), (best, ref_best)
    assert torch.equal(best, shots[..., 0])
    assert_close(prob, ref_prob, p_atol, p_rtol)
    assert_close(prob, torch.exp(values[..., 0] - exp_lse), p_atol, p_rtol)
    assert_close(lse, exp_lse, l_atol, l_rtol)
    # the candidate lists: the TOP best free shots in order, -1 / -inf past the last free shot
    k = min(TOP, I)
    exists = torch.isfinite(values[..., :k])
    assert torch.equal(c.cand_idx[..., :k].long(), torch.where(exists, shots[..., :k], -1))
    assert (c.cand_idx[..., k:] == -1).all()
    assert_close(c.cand_logit[..., :k].masked_fill(~exists, 0.0), values[..., :k].masked_fill(~exists, 0.0), l_atol, l_rtol)
    assert torch.isneginf(c.cand_logit[..., :k][~exists]).all() and torch.isneginf(c.cand_logit[..., k:]).all()


@pytest.mark.parametrize("prior", [False, True])
def test_round_scorer_scores_only_the_rows_asked_for(prior):
    """With `rows`, the CPU scorer packs each movie's open slots to the batch's widest count: those rows
    equal the unpacked scores bit for bit through two re-scores, the others come back as (0, 0)."""
    B, J, I, Dm = 3, 9, 40, 16
    g = torch.Generator().manual_seed(5)
    pred = torch.randn(B, J, Dm, generator=g)
    movie = F.normalize(torch.randn(B, I, Dm, generator=g), dim=-1)
    valid = torch.ones(B, I, dtype=torch.bool)
    valid[2, 30:] = False
    shot_prior = torch.randn(B, I, generator=g).masked_fill(~valid, float("-inf")) if prior else None
    rows = torch.rand(B, J, generator=g) < 0.5
    rows[0] = False
    rows[0, [1, 7]] = True  # movie 0: two open slots, not the first
    rows[1] = True
    rows[1, 4] = False  # movie 1: the widest, all open but one, so the pack is J - 1 wide
    rows[2, :3] = False
    full = round_scorer(pred, movie, valid, TAU, shot_prior)
    packed = round_scorer(pred, movie, valid, TAU, shot_prior, rows=rows)
    used = torch.zeros(B, I, dtype=torch.bool)
    for _ in range(3):
        (best, prob), (pbest, pprob) = full(used), packed(used)
        assert torch.equal(pbest[rows], best[rows]) and torch.equal(pprob[rows], prob[rows])
        assert torch.equal(pbest[~rows], torch.zeros_like(pbest[~rows])) and not pprob[~rows].any()
        used |= F.one_hot(best[:, 1], I).bool() | F.one_hot(best[:, 7], I).bool()


def test_round_scorer_in_an_output_basis_matches_scoring_in_d():
    """Predictions of a linear output layer (W h + c) scored in the coordinates of `output_basis`: the
    same best shots and probabilities as over all D, through re-scores; a basis that misses the bias
    direction does not span the predictions and moves the logits far beyond rounding."""
    B, J, I, Dm, d = 2, 7, 50, 64, 12
    g = torch.Generator().manual_seed(8)
    layer = torch.nn.Linear(d, Dm)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(Dm, d, generator=g))
        layer.bias.copy_(torch.randn(Dm, generator=g))
    pred = layer(torch.randn(B, J, d, generator=g)).detach()
    movie = F.normalize(torch.randn(B, I, Dm, generator=g), dim=-1)
    valid = torch.ones(B, I, dtype=torch.bool)
    valid[1, 40:] = False
    prior = torch.randn(B, I, generator=g).masked_fill(~valid, float("-inf"))
    model = argparse.Namespace(out_proj=layer)
    basis = output_basis(model)
    assert basis.shape == (Dm, d + 1)
    assert_close(basis.T @ basis, torch.eye(d + 1), atol=1e-6, rtol=0)
    wide = round_scorer(pred, movie, valid, TAU, prior)
    narrow = round_scorer(pred, movie, valid, TAU, prior, basis=basis, movie_coords=movie @ basis)
    used = torch.zeros(B, I, dtype=torch.bool)
    for _ in range(3):
        (best, prob), (nbest, nprob) = wide(used), narrow(used)
        assert torch.equal(nbest, best)
        assert_close(nprob, prob, atol=1e-6, rtol=1e-5)
        used |= F.one_hot(best[:, 0], I).bool()
    real = valid[:, None, :].expand(B, J, I)
    logits = unit_score_logits(pred, movie, valid, TAU, prior)[real]
    assert_close(unit_score_logits(pred, movie @ basis, valid, TAU, prior, basis)[real], logits, atol=1e-4, rtol=1e-5)
    no_bias = torch.linalg.qr(layer.weight.detach().double())[0].float()
    off = unit_score_logits(pred, movie @ no_bias, valid, TAU, prior, no_bias)[real] - logits
    assert off.abs().max() > 0.1


@needs_kernels
def test_score_ties_go_to_the_lowest_shot_across_tiles():
    """Identical shots give exactly equal logits; they lie in different tiles of the stream (64 shots a
    tile on a GPU, 512 on the interpreter, so I = 1100), and the lowest free one must win, the rest
    follow in index order."""
    I, J = 1100, 3
    g = torch.Generator().manual_seed(1)
    movie = dyadic_unit_rows((1, I, D), g)  # exact logits: the twins tie exactly, on any BLAS
    twins = [5, 130, 131, 600, 1050]
    movie[0, twins] = movie[0, 7].clone()
    pred = movie[:, [7, 7, 7]] * torch.tensor([1.0, 3.0, 0.5])[None, :, None]  # scale changes no cosine
    valid = torch.ones(1, I, dtype=torch.bool)
    used = torch.zeros(1, I, dtype=torch.bool)
    used[0, 5] = True
    args = [t.to(DEVICE) for t in (pred, movie, valid, used)]
    c = score_module.score_candidates(*args, TAU)
    expected = [7, 130, 131, 600]  # shot 5 is used
    assert c.cand_idx[0, :, :4].tolist() == [expected] * J
    assert (c.cand_logit[0, :, :4] == c.cand_logit[0, :, :1]).all(), "identical shots, identical logits"
    assert torch.equal(c.best, score_slots_ref(*args, TAU)[0])


def state_for(J, I, lengths, pinned_fraction=0.3, seed=0):
    """A mid-decoding state: some slots locked (pins or earlier rounds) on distinct used shots, padded
    slots locked, a few banned shots used, q partly filled."""
    g = torch.Generator().manual_seed(seed + 100)
    B = len(lengths)
    shots = torch.zeros(B, J, dtype=torch.int64)
    locked = torch.zeros(B, J, dtype=torch.bool)
    used = torch.zeros(B, I, dtype=torch.bool)
    for b, n in enumerate(lengths):
        slots_b = min(J, n)
        locked[b, slots_b:] = True  # padded slots
        perm = torch.randperm(n, generator=g)
        pin = torch.rand(slots_b, generator=g) < pinned_fraction
        pin[0] = False  # at least one open slot per movie
        shots[b, :slots_b] = torch.where(pin, perm[:slots_b], 0)
        locked[b, :slots_b] = pin
        used[b, perm[:slots_b][pin]] = True
        spare = perm[slots_b:]
        used[b, spare[torch.rand(len(spare), generator=g) < 0.2]] = True  # banned: never offered
    confidence = torch.where(locked, 1.0, 0.0)
    q = torch.rand(B, J, generator=g) * 0.6 * ~locked
    seeds = torch.tensor([3, 2**40 + 11, 2**63 - 5][:B] + [7] * max(0, B - 3), dtype=torch.int64)
    return [t.to(DEVICE) for t in (shots, confidence, locked, used, q, seeds)]


def run_both(pred, movie, valid, shot_prior, state, mode, need=None, round_index=3):
    """(reference's new state, the kernel's new state, the kernel's slot-input buffer, newly locked)."""
    shots, confidence, locked, used, q, seeds = state
    if mode == "paper":  # the reference one movie at a time, each with its own seed, as the decoder seeds them
        rows = []
        for b in range(shots.shape[0]):
            one = slice(b, b + 1)
            score = round_scorer(pred[one], movie[one], valid[one], TAU, None if shot_prior is None else shot_prior[one])
            rows.append(select_module.select_remask_ref(
                score, shots[one].clone(), confidence[one].clone(), locked[one].clone(), used[one].clone(),
                q[one].clone(), movie[one], mode="paper", seed=int(seeds[b]), round_index=round_index))
        ref = [torch.cat(parts) for parts in zip(*rows)]
    else:
        score = round_scorer(pred, movie, valid, TAU, shot_prior)
        ref = select_module.select_remask_ref(score, shots.clone(), confidence.clone(), locked.clone(), used.clone(),
                                              q.clone(), movie, mode=mode, need=need)
    c = score_module.score_candidates(pred, movie, valid, used, TAU, shot_prior)
    mine = [t.clone() for t in (shots, confidence, locked, used, q)]
    slots = torch.full((shots.shape[0], shots.shape[1], movie.shape[2]), float("nan"), dtype=movie.dtype, device=DEVICE)
    select_module.select_remask_triton(c, *mine, slots, mode=mode, need=need, seed=seeds, round_index=round_index)
    return ref, mine, slots, mine[2] & ~locked


def check_same(ref, mine, slots, newly):
    names = ("shots", "confidence", "locked", "used", "q")
    for name, r, m in zip(names, ref, mine):
        if r.dtype == torch.float32:
            assert_close(m, r, 2e-6, 1e-5)
        else:
            assert torch.equal(m, r), f"{name}: kernel {m.tolist()} != reference {r.tolist()}"
    assert newly.any(), "the case must lock something"
    assert torch.equal(slots[newly], ref[5][newly]), "a newly locked slot's next input is its shot's feature row"
    assert torch.isnan(slots[~newly].float()).all(), "rows of other slots are not written"


@needs_kernels
@pytest.mark.parametrize("mode", ["paper", "topk"])
@pytest.mark.parametrize(
    "J,prior,dtype",
    [(J, p, torch.float32) for J in (1, 7) for p in (False, True)] + [(7, True, torch.bfloat16), (7, False, torch.float16)],
    ids=lambda v: str(v).replace("torch.", "") if not isinstance(v, bool) else ("prior" if v else "no-prior"),
)
def test_select_remask_matches_the_reference(mode, J, prior, dtype):
    lengths = [40, 23, 9]
    pred, movie, valid, _, shot_prior = padded_batch(J, 40, lengths, dtype=dtype, prior=prior, seed=J)
    state = state_for(J, 40, lengths, seed=J)
    open_count = (~state[2]).sum(dim=1)
    need = torch.minimum(open_count, torch.tensor([2, 1, 7], device=DEVICE)) if mode == "topk" else None
    ref, mine, slots, newly = run_both(pred, movie, valid, shot_prior, state, mode, need)
    check_same(ref, mine, slots, newly)
    if mode == "topk":
        assert torch.equal(newly.sum(dim=1), need)


@needs_kernels
@pytest.mark.parametrize("mode", ["paper", "topk"])
@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_every_slot_prefers_one_shot(mode, noise):
    """All slots rank the shots alike (noise 0: exactly, so every claim ties and the lower slot wins).
    topk locks every open slot: after TOP locks the slots' lists are spent and the kernel must score
    them again over the free shots; paper's conflicts all fall on one shot."""
    J, I = 2 * TOP, 60  # more open slots than a list holds
    pred, movie, valid, _, shot_prior = padded_batch(J, I, [I, 50], prior=True, seed=5)
    g = torch.Generator().manual_seed(6)
    if noise == 0.0:  # exact logits, so the slots' claims tie exactly on any BLAS (see dyadic_unit_rows)
        movie = dyadic_unit_rows(movie.shape, g).to(DEVICE, movie.dtype)
    pred = (movie[:, :1].cpu().float() + noise * torch.randn(2, J, D, generator=g)).to(DEVICE, pred.dtype)
    state = state_for(J, I, [I, 50], pinned_fraction=0.0, seed=5)
    state[4] = torch.full_like(state[4], 0.9)  # q: nearly every slot draws a lock
    need = (~state[2]).sum(dim=1) if mode == "topk" else None
    ref, mine, slots, newly = run_both(pred, movie, valid, shot_prior, state, mode, need)
    check_same(ref, mine, slots, newly)


@needs_kernels
@pytest.mark.parametrize("mode", ["paper", "topk"])
def test_one_free_shot_left(mode):
    J, I = 7, 30
    pred, movie, valid, _, shot_prior = padded_batch(J, I, [30, 12, 7], prior=True, seed=2)
    shots, confidence, locked, used, q, seeds = state_for(J, I, [30, 12, 7], pinned_fraction=0.0, seed=2)
    locked[:, 1:] = True  # only slot 0 is open
    free = torch.tensor([17, 4, 6], device=DEVICE)
    used[:] = True
    used[torch.arange(3), free] = False
    q[:] = 0.9999
    need = torch.ones(3, dtype=torch.int64, device=DEVICE) if mode == "topk" else None
    ref, mine, slots, newly = run_both(pred, movie, valid, shot_prior, [shots, confidence, locked, used, q, seeds], mode, need)
    check_same(ref, mine, slots, newly)
    assert torch.equal(mine[0][newly], free[newly.any(dim=1)])


@needs_kernels
@pytest.mark.parametrize("round_on_device", [False, True])
def test_paper_draws_are_the_decoders_hash_bit_for_bit(round_on_device):
    """Each slot's q is set one ulp above or exactly at its draw u = lock_draws(seed, round, j): the
    slot locks iff u < q, so a draw off by one ulp anywhere fails. The round is an int, or a device
    tensor (what a captured round reads)."""
    from ssmp_infer.decode import lock_draws

    B, J, I, r = 3, 37, 64, 5
    seeds = torch.tensor([0, 2**32 + 9, 2**63 - 1], dtype=torch.int64, device=DEVICE)
    u = torch.stack([lock_draws(int(s), r, J, DEVICE) for s in seeds])
    above = torch.rand(B, J, generator=torch.Generator().manual_seed(0)).to(DEVICE) < 0.5
    q = torch.where(above, torch.nextafter(u, torch.ones_like(u)), u)
    c = score_module.SlotCandidates(  # prob 0 for every slot, each on its own shot: q is all that decides
        best=None, prob=None, lse=torch.zeros(B, J, device=DEVICE),
        cand_idx=torch.arange(J, dtype=torch.int32, device=DEVICE)[None, :, None].expand(B, J, TOP).contiguous(),
        cand_logit=torch.full((B, J, TOP), float("-inf"), device=DEVICE),
        pred=torch.ones(B, J, D, device=DEVICE), movie_unit=torch.ones(B, I, D, device=DEVICE),
        movie_valid=torch.ones(B, I, dtype=torch.bool, device=DEVICE), temperature=TAU, shot_prior=None,
    )
    shots = torch.zeros(B, J, dtype=torch.int64, device=DEVICE)
    locked = torch.zeros(B, J, dtype=torch.bool, device=DEVICE)
    used = torch.zeros(B, I, dtype=torch.bool, device=DEVICE)
    slots = torch.zeros(B, J, D, device=DEVICE)
    round_index = torch.tensor(r, dtype=torch.int64, device=DEVICE) if round_on_device else r
    if round_on_device:  # the torch side reads a device round the same way
        assert torch.equal(torch.stack([lock_draws(int(s), round_index, J, DEVICE) for s in seeds]), u)
    select_module.select_remask_triton(c, shots, torch.zeros(B, J, device=DEVICE), locked, used, q, slots,
                                       mode="paper", seed=seeds, round_index=round_index)
    assert torch.equal(locked, above)


@needs_kernels
def test_select_remask_holds_its_most_slots():
    """The cap `use_triton` allows (MAX_SLOTS, 1024) is what is compiled and tested here."""
    from ssmp_infer.kernels import MAX_SLOTS

    J, I = MAX_SLOTS, 1100
    lengths = [1100, 1050]
    pred, movie, valid, _, shot_prior = padded_batch(J, I, lengths, prior=True, seed=9)
    for mode in ("paper", "topk"):
        state = state_for(J, I, lengths, seed=9)
        need = torch.tensor([30, 45], device=DEVICE) if mode == "topk" else None
        ref, mine, slots, newly = run_both(pred, movie, valid, shot_prior, state, mode, need)
        check_same(ref, mine, slots, newly)


def small_movies():
    from ssmp_infer.bench import synthetic_movies

    full = synthetic_movies(3, 120, 1024, seed=3)
    return [full[0], full[1][:70], full[2][:36]], [9, 6, 20]


@needs_kernels
@pytest.mark.parametrize("mode,position_keys", [(m, False) for m in MODES] + [("paper", True), ("topk", True)])
def test_whole_trailers_are_the_same_on_both_paths(mode, position_keys):
    """The bundled model (shot prior on) through Engine: the same shots, slot for slot. paper's cap is
    low so the final greedy fill (every open slot, lists spent and re-scored) runs too. With position
    keys the fused round scores against the keys and writes them into the locked slots, as torch's."""
    from ssmp_infer.engine import Engine

    engine = Engine.load(device=str(DEVICE))
    engine = with_position_keys(engine, position_keys)
    movies, lengths = small_movies()
    if mode not in ("paper", "topk"):  # one round per slot: keep the interpreter's run short
        movies, lengths = movies[1:], [5, 6]
    runs = {}
    for path in ("torch", "triton"):
        config = DecodeConfig(mode=mode, kernels=path, seed=11, max_rounds=5, steps=6)
        runs[path] = engine.generate_batch(movies, lengths, config)
    for torch_trailer, triton_trailer in zip(runs["torch"], runs["triton"]):
        assert triton_trailer.shots == torch_trailer.shots
        assert triton_trailer.steps == torch_trailer.steps
        assert_close(torch.tensor(triton_trailer.confidence), torch.tensor(torch_trailer.confidence), 2e-6, 1e-5)


@pytest.mark.skipif(not ON_GPU or not HAS_TRITON, reason="host syncs are a CUDA matter: needs a GPU")
def test_fused_round_never_syncs_with_the_host():
    pred, movie, valid, used, shot_prior = padded_batch(71, 1909, [1909, 1500], prior=True)
    state = state_for(71, 1909, [1909, 1500])
    shots, confidence, locked, used, q, seeds = state
    slots = torch.zeros(2, 71, D, device=DEVICE)
    need = (~locked).sum(dim=1) // 3
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for mode in ("paper", "topk"):
            c = score_module.score_candidates(pred, movie, valid, used, TAU, shot_prior)
            select_module.select_remask_triton(c, shots, confidence, locked, used, q, slots, mode=mode, need=need,
                                               seed=seeds, round_index=2)
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.skipif(not ON_GPU or not HAS_TRITON, reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("mode", ["paper", "topk"])
def test_fused_round_replays_in_a_cuda_graph(mode):
    """Fixed shapes, no host sync: a round of score + select captured once replays to the eager result."""
    J, I = 71, 1909
    pred, movie, valid, _, shot_prior = padded_batch(J, I, [1909, 1200, 800], prior=True, seed=4)
    start = state_for(J, I, [1909, 1200, 800], seed=4)
    need = (~start[2]).sum(dim=1) // 4

    def round_(state, slots):
        c = score_module.score_candidates(pred, movie, valid, state[3], TAU, shot_prior)
        select_module.select_remask_triton(c, *state[:5], slots, mode=mode, need=need, seed=state[5], round_index=2)

    eager = [t.clone() for t in start]
    eager_slots = torch.zeros(3, J, D, device=DEVICE)
    round_(eager, eager_slots)  # also compiles the kernels, outside the capture
    captured = [t.clone() for t in start]
    captured_slots = torch.zeros(3, J, D, device=DEVICE)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        round_(captured, captured_slots)
    for t, t0 in zip(captured, start):  # capture does not run the work: start from the same state, replay
        t.copy_(t0)
    captured_slots.zero_()
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(captured + [captured_slots], eager + [eager_slots]):
        assert torch.equal(a, b)


# --- the option -----------------------------------------------------------------------------------


def test_kernels_option_resolves_per_device(monkeypatch):
    with pytest.raises(InputError, match="unknown kernels 'cuda'"):
        DecodeConfig(kernels="cuda")
    assert use_triton("torch", torch.device("cuda")) is False
    assert use_triton("auto", torch.device("cpu")) is False
    monkeypatch.setattr(kernels, "HAS_TRITON", False)
    assert use_triton("auto", torch.device("cuda")) is False
    with pytest.raises(InputError, match=r"needs the triton package: pip install 'ssmp-infer\[gpu\]'"):
        use_triton("triton", torch.device("cuda"))
    monkeypatch.setattr(kernels, "HAS_TRITON", True)
    monkeypatch.setattr(kernels, "INTERPRETED", False)
    assert use_triton("auto", torch.device("cuda")) is True
    assert use_triton("auto", torch.device("cuda"), num_slots=5000) is False
    with pytest.raises(InputError, match="run on a CUDA device"):
        use_triton("triton", torch.device("cpu"))
    with pytest.raises(InputError, match="at most 1024 trailer slots"):
        use_triton("triton", torch.device("cuda"), num_slots=5000)


def test_cli_passes_kernels_to_the_decoder():
    from ssmp_infer.cli_decode import add_decode_args, decode_config

    p = argparse.ArgumentParser()
    add_decode_args(p)
    assert decode_config(p.parse_args([])).kernels == "auto"
    assert decode_config(p.parse_args(["--kernels", "torch", "--mode", "topk"])).kernels == "torch"
    with pytest.raises(SystemExit):
        p.parse_args(["--kernels", "fast"])


def test_forcing_triton_on_a_cpu_without_the_interpreter_is_one_sentence(monkeypatch):
    from ssmp_infer.engine import Engine

    monkeypatch.setattr(kernels, "INTERPRETED", False)
    monkeypatch.setattr(kernels, "HAS_TRITON", True)
    engine = Engine.load(device="cpu")
    movie = np.random.default_rng(0).standard_normal((20, engine.feature_dim)).astype(np.float32)
    with pytest.raises(InputError, match="^kernels 'triton' run on a CUDA device"):
        engine.generate(movie, 3, DecodeConfig(kernels="triton"))


COMPILE_FOR_SM90 = r"""
import importlib, json, os, subprocess, sys, tempfile
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
score = importlib.import_module("ssmp_infer.kernels.score_slots")
select = importlib.import_module("ssmp_infer.kernels.select_remask")
assert not score.INTERPRETED
cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")

def build(kernel, pointers, scalars, constexprs, num_warps):
    sig = {**pointers, **scalars, **{k: "constexpr" for k in constexprs}}
    k = triton.compile(ASTSource(kernel, sig, constexprs), target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(k.asm["cubin"])
    usage = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    return int(usage.split("STACK:")[1].split()[0])

spills = {}
for dtype, half in (("fp32", False), ("bf16", True)):  # J 71, D 1024: a CMTD trailer
    blocks = score._score_blocks(71, 1024, torch.device("cuda"), half)
    warps = blocks.pop("num_warps")
    pointers = {"pred_ptr": "*" + dtype, "movie_ptr": "*" + dtype, "valid_ptr": "*u8", "used_ptr": "*u8",
                "prior_ptr": "*fp32", "best_ptr": "*i64", "prob_ptr": "*fp32", "lse_ptr": "*fp32",
                "cand_idx_ptr": "*i32", "cand_logit_ptr": "*fp32"}
    scalars = {"J": "i32", "I": "i32", "D": "i32", "temperature": "fp32"}
    spills["score_" + dtype] = build(score._score_slots_kernel, pointers, scalars,
                                     {"HAS_PRIOR": True, "HALF": half, "TOP": score.TOP, **blocks}, warps)
for paper in (True, False):
    pointers = {"cand_idx_ptr": "*i32", "cand_logit_ptr": "*fp32", "lse_ptr": "*fp32", "shots_ptr": "*i64",
                "conf_ptr": "*fp32", "locked_ptr": "*u8", "used_ptr": "*u8", "q_ptr": "*fp32", "need_ptr": "*i64",
                "slots_ptr": "*fp32", "pred_ptr": "*fp32", "movie_ptr": "*fp32", "valid_ptr": "*u8",
                "prior_ptr": "*fp32", "seed_ptr": "*i64", "round_ptr": "*i64"}
    scalars = {"J": "i32", "I": "i32", "D": "i32", "temperature": "fp32"}
    spills["select_" + ("paper" if paper else "topk")] = build(
        select._select_remask_kernel, pointers, scalars,
        {"PAPER": paper, "HAS_PRIOR": True, "TOP": score.TOP, "BLOCK_J": 128, "BLOCK_I": 64, "BLOCK_D": 64}, 8)
print(json.dumps(spills))
"""


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_kernels_compile_for_an_h100_without_spilling():
    """The interpreter never compiles: build the kernels for sm_90 (Triton's bundled ptxas, no GPU
    needed) at a CMTD trailer's sizes, as the launchers configure them, and check no register spills."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", COMPILE_FOR_SM90], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    spills = json.loads(done.stdout.strip().splitlines()[-1])
    assert spills == {"score_fp32": 0, "score_bf16": 0, "select_paper": 0, "select_topk": 0}, spills
